"""SFT data as plain functions: chat format, answer checks, dedup, cap, held-out split, and the
file's round trip through `datasets.load_dataset("parquet", ...)`."""

from __future__ import annotations

from pathlib import Path

import datasets
import polars as pl
import pytest

from sigma_assets.method.grading import AnswerChecker
from sigma_assets.training import sft_data
from sigma_assets.training.sft_data import PathRecord, build_sft, heldout_ids, student_prompt


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker() as c:
        yield c


def record(pid: str, steps: list[str], gold: str = "7", temperature: str = "0.7", **kw) -> PathRecord:
    return PathRecord(pid, f"What is 3 + 4? ({pid})", gold, tuple(steps), "shard-000", temperature, **kw)


def test_samples_are_user_problem_then_assistant_solution(checker):
    build = build_sft([record("p1", ["3 + 4 = 7", "The answer is 7."])], "sigma", checker.check_many, set())
    [row] = build.frame.to_dicts()
    assert row["messages"] == [
        {"role": "user", "content": student_prompt("What is 3 + 4? (p1)")},
        {"role": "assistant", "content": "3 + 4 = 7\n\nThe answer is 7."},
    ]
    assert row["messages"][0]["content"].endswith(sft_data.STUDENT_INSTRUCTION)
    assert sft_data.format_problems(build.frame) == []


def test_only_explicit_checked_answers_become_samples(checker):
    records = [
        record("right", ["3 + 4 = 7", "The answer is $\\boxed{7}$."]),
        record("wrong", ["3 + 4 = 7", "The answer is 8."]),
        record("false-arithmetic", ["3 + 4 = 8", "The answer is 7."]),
        record("no-answer", ["3 + 4 = 7"]),  # a last number is never taken as the answer
        record("new-question", ["The answer is 7.", "Question: what is 5 + 3?"]),
        record("other-answer", ["The answer is 7.", "Or the answer is 8."]),
    ]
    build = build_sft(records, "mcts", checker.check_many, set())
    assert build.frame["problem_id"].to_list() == ["right"]
    assert build.rejected == {
        "wrong_answer": 1,
        "false_arithmetic": 1,
        "no_answer": 1,
        "new_question": 1,
        "other_answer": 1,
    }


def test_exact_duplicates_across_temperatures_are_removed(checker):
    same = ["3 + 4 = 7", "The answer is 7."]
    records = [
        record("p1", same, temperature="0.4"),
        record("p1", same, temperature="0.7"),
        record("p1", ["Adding: 3 + 4 = 7", "The answer is 7."], temperature="0.7"),
    ]
    build = build_sft(records, "sigma", checker.check_many, set())
    assert build.frame.height == 2
    assert build.duplicates == 1
    assert sorted(build.frame["temperature"]) == ["0.4", "0.7"]


def test_cap_draws_a_fixed_number_of_samples_reproducibly(checker):
    records = [record(f"p{i:02d}", [f"Step {i}", "The answer is 7."]) for i in range(20)]
    first = build_sft(records, "sigma", checker.check_many, set(), cap=5, seed=3)
    again = build_sft(records, "sigma", checker.check_many, set(), cap=5, seed=3)
    other = build_sft(records, "sigma", checker.check_many, set(), cap=5, seed=4)
    assert first.frame.height == 5 and first.capped == 15
    assert first.frame.equals(again.frame)
    assert set(first.frame["problem_id"]) != set(other.frame["problem_id"])
    with pytest.raises(ValueError, match="cap"):
        build_sft(records, "sigma", checker.check_many, set(), cap=0)


def test_heldout_split_is_stable_shared_and_never_trained_on(checker):
    ids = [f"arithmetic-{i:04d}" for i in range(40)]
    held = heldout_ids(ids, 0.1)
    assert len(held) == 4
    assert held == heldout_ids(list(reversed(ids)), 0.1)  # order does not matter
    assert held <= heldout_ids([*ids, "extra-1", "extra-2"], 0.2)  # a bigger share keeps the old ones
    assert len(heldout_ids(ids[:3], 0.1)) == 1  # at least one problem
    assert heldout_ids(ids, 0.0) == set()
    records = [record(pid, ["3 + 4 = 7", "The answer is 7."]) for pid in ids]
    for variant in sft_data.VARIANTS:
        build = build_sft(records, variant, checker.check_many, held)
        assert not held & set(build.frame["problem_id"])
        assert build.heldout_paths == 4 and build.frame.height == 36


def test_sigma_takes_refined_steps_and_mcts_the_original_ones():
    refined = pl.DataFrame(
        {
            "problem_id": ["p1", "p2"],
            "original_steps": [["orig 1", "The answer is 7."], ["orig 2", "The answer is 7."]],
            "refined_steps": [["refined 1", "The answer is 7."], ["orig 2", "The answer is 7."]],
            "drift": [False, True],
        }
    )
    problems = {"p1": ("What is 3 + 4?", "7"), "p2": ("What is 5 + 2?", "7")}
    sigma = sft_data.path_records(refined, problems, "sigma", "shard-000", "0.4")
    mcts = sft_data.path_records(refined, problems, "mcts", "shard-000", "0.4")
    assert [r.steps[0] for r in sigma] == ["refined 1", "orig 2"]
    assert [r.kept_original for r in sigma] == [False, True]
    assert [r.steps[0] for r in mcts] == ["orig 1", "orig 2"]
    assert not any(r.kept_original for r in mcts)
    with pytest.raises(KeyError, match="p1 is not in raw_problems"):
        sft_data.path_records(refined, {}, "sigma", "shard-000", "0.4")
    with pytest.raises(ValueError, match="unknown SFT variant"):
        sft_data.path_records(refined, problems, "rejected", "shard-000", "0.4")


def test_a_revision_that_changed_nothing_is_the_original_and_the_ablation_says_so(checker):
    answer = "The answer is 7."
    refined = pl.DataFrame(
        {
            "problem_id": ["p1", "p2", "p3"],
            "original_steps": [["3 + 4 = 7", answer], ["4 + 3 = 7", answer], ["7 - 0 = 7", answer]],
            # p1 drifted (original kept); p2 was copied word for word, only its spacing changed
            # (regurgitation); p3 was really revised.
            "refined_steps": [["3 + 4 = 7", answer], ["4  +  3 = 7 ", answer], ["Add: 7 - 0 = 7", answer]],
            "drift": [True, False, False],
        }
    )
    problems = {pid: (f"What is 3 + 4? ({pid})", "7") for pid in ("p1", "p2", "p3")}
    records = {v: sft_data.path_records(refined, problems, v, "shard-000", "0.4") for v in sft_data.VARIANTS}
    sigma = build_sft(records["sigma"], "sigma", checker.check_many, set())
    mcts = build_sft(records["mcts"], "mcts", checker.check_many, set())
    assert sigma.frame["kept_original"].to_list() == [True, True, False]
    assert (sigma.revised, sigma.kept_original) == (1, 2)
    assert sigma.kept_original_share == pytest.approx(2 / 3)
    assert (mcts.revised, mcts.kept_original) == (0, 0)
    # The copied revision is the original path itself, so it is the mcts sample exactly.
    assert sigma.frame["messages"][1].to_list() == mcts.frame["messages"][1].to_list()
    comparison = sft_data.compare_variants(sigma.frame, mcts.frame)
    assert (comparison.shared, comparison.identical) == (2, False)
    assert comparison.note == "sigma 3 samples, mcts 3: 1 revised, 2 the same"

    unrevised = build_sft(records["sigma"][:2], "sigma", checker.check_many, set())
    assert unrevised.kept_original_share == 1.0 and unrevised.revised == 0
    same = sft_data.compare_variants(
        unrevised.frame, build_sft(records["mcts"][:2], "mcts", checker.check_many, set()).frame
    )
    assert same.identical
    assert same.note == "no revision was accepted: sigma = mcts (the same 2 samples)"


def test_a_heldout_slice_too_small_to_score_is_trained_on():
    ids = [f"p{i:03d}" for i in range(120)]
    assert len(heldout_ids(ids, 0.1, minimum=12)) == 12
    assert heldout_ids(ids, 0.1, minimum=13) == set()
    assert heldout_ids(ids[:12], 0.1, minimum=20) == set()  # the embedded run: 1 problem, not 20
    assert sft_data.heldout_count(12, 0.1) == 1 and sft_data.heldout_count(0, 0.1) == 0


def test_format_problems_names_empty_turns_and_wrong_roles():
    frame = pl.DataFrame(
        [
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
            {"messages": [{"role": "assistant", "content": "a"}]},
        ],
        schema={"messages": pl.List(sft_data.MESSAGE)},
    )
    assert sft_data.format_problems(frame) == [
        f"missing columns: {', '.join(c for c in sft_data.SFT_SCHEMA if c != 'messages')}"
    ]
    full = frame.with_columns(
        pl.lit("p").alias("problem_id"),
        pl.lit("s").alias("shard"),
        pl.lit("0.7").alias("temperature"),
        pl.lit("sigma").alias("variant"),
        pl.lit(False).alias("kept_original"),
    )
    assert sft_data.format_problems(full) == [
        "row 0: empty assistant turn",
        "row 1: roles ['assistant'], expected user then assistant",
    ]


def test_sft_parquet_loads_with_datasets(checker, tmp_path: Path):
    records = [record(f"p{i}", [f"Step {i}", "The answer is 7."]) for i in range(3)]
    build = build_sft(records, "sigma", checker.check_many, set())
    path = tmp_path / "sigma.parquet"
    build.frame.write_parquet(path)
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert len(loaded) == 3
    assert loaded[0]["messages"][1] == {"role": "assistant", "content": "Step 0\n\nThe answer is 7."}
