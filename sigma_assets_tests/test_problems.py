"""Problem sources and their error messages: bundled sets, jsonl, parquet, MATH and GSM8K layouts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from sigma_assets.data.problems import ColumnNames, ProblemSourceError, load_problems
from sigma_assets.data.shards import shard_keys, shard_of
from sigma_assets.method.grading import AnswerChecker


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_bundled_arithmetic_is_deterministic_with_exact_answers():
    first, second = load_problems("arithmetic"), load_problems("arithmetic")
    assert [p.problem_id for p in first.problems] == [p.problem_id for p in second.problems]
    assert len(first.problems) == 32 and not first.skipped
    assert all(p.answer.isdigit() for p in first.problems)
    assert len(load_problems("arithmetic:5").problems) == 5


def test_bundled_champ_has_270_competition_problems():
    loaded = load_problems("champ")
    # Rows whose answer is no mathematical value ("No", "No integer solutions") are listed, not kept.
    assert len(loaded.problems) + len(loaded.skipped) == 270
    assert loaded.problems[0].problem_id.startswith("champ-") and loaded.problems[0].subject
    assert any(s.answer == "No" and s.reason == "yes/no answer" for s in loaded.skipped)


def test_jsonl_with_plain_fields(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "problem": "1+1?", "answer": "2"}])
    (problem,) = load_problems(source).problems
    assert (problem.problem_id, problem.problem, problem.answer) == ("a", "1+1?", "2")


def test_math_layout_takes_the_boxed_answer_from_the_solution(tmp_path):
    row = {
        "problem": "Half of 1?",
        "solution": "It is $\\boxed{\\frac{1}{2}}$.",
        "level": "Level 1",
        "type": "Algebra",
    }
    (problem,) = load_problems(write_jsonl(tmp_path / "math.jsonl", [row])).problems
    assert problem.answer == "\\frac{1}{2}" and problem.level == "Level 1" and problem.subject == "Algebra"


def test_gsm8k_layout_takes_the_number_after_hashes(tmp_path):
    row = {"question": "Tom has 1,000 coins and gets 200 more.", "answer": "1000+200=1200\n#### 1,200"}
    (problem,) = load_problems(write_jsonl(tmp_path / "gsm8k.jsonl", [row])).problems
    assert problem.answer == "1200" and problem.problem.startswith("Tom")


def test_parquet_with_configured_column_names(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame({"q": ["2+2?", "3+3?"], "gold": ["4", "6"]}).write_parquet(path)
    loaded = load_problems(str(path), ColumnNames(problem="q", answer="gold"))
    assert [p.answer for p in loaded.problems] == ["4", "6"]
    # Ids of rows without an id column are a hash of the text: stable across loads.
    assert [p.problem_id for p in loaded.problems] == [
        p.problem_id for p in load_problems(str(path), ColumnNames(problem="q", answer="gold")).problems
    ]


def test_missing_column_names_file_row_and_field(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "1+1?", "result": "2"}])
    with pytest.raises(
        ProblemSourceError, match=r"bad\.jsonl row 1: missing answer field .*fields: problem, result"
    ):
        load_problems(source)
    with pytest.raises(ProblemSourceError, match=r"row 1: missing problem field 'q'"):
        load_problems(source, ColumnNames(problem="q"))


def test_row_faults_are_skipped_and_reported_never_silently(tmp_path):
    rows = [
        {"problem": "1+1?", "answer": "2"},
        {"problem": "   ", "answer": "3"},
        {"problem": "2+2?", "answer": ""},
        {"problem": "1+1?", "answer": "2"},
        {"problem": "3+3?", "answer": "6"},
    ]
    loaded = load_problems(write_jsonl(tmp_path / "p.jsonl", rows))
    assert len(loaded.problems) == 2
    reasons = [str(s) for s in loaded.skipped]
    source, first_id = tmp_path / "p.jsonl", loaded.problems[0].problem_id
    assert reasons == [
        f"{source} row 2, field 'problem': empty problem",
        f"{source} row 3, field 'answer': empty answer",
        f"{source} row 4, field 'problem': duplicate of row 1 ({first_id})",
    ]


def test_unparseable_answers_are_reported_with_their_row(tmp_path):
    rows = [{"problem": "a", "solution": "no box here"}, {"problem": "b", "solution": "\\boxed{3}"}]
    loaded = load_problems(write_jsonl(tmp_path / "m.jsonl", rows))
    assert [s.reason for s in loaded.skipped] == ["MATH solution without a \\boxed{} answer"]
    gsm = [{"question": "a", "answer": "x #### 4"}, {"question": "b", "answer": "#### "}]
    loaded = load_problems(write_jsonl(tmp_path / "g.jsonl", gsm))
    assert loaded.skipped[0].row == 2 and "####" in loaded.skipped[0].reason


def test_every_layout_normalises_and_vets_its_answers(tmp_path):
    """jsonl, parquet, MATH and GSM8K rows all go through the same gold-answer rules."""
    plain = write_jsonl(
        tmp_path / "plain.jsonl",
        [
            {"problem": "How many?", "answer": "2 inequalities"},
            {"problem": "Is it?", "answer": "Yes"},
            {"problem": "Which?", "answer": "x(x-1)(x-2)...(x-2022)"},
        ],
    )
    loaded = load_problems(plain)
    assert [p.answer for p in loaded.problems] == ["2", "x(x-1)(x-2)...(x-2022)"]
    assert [(s.row, s.field, s.answer, s.reason) for s in loaded.skipped] == [
        (2, "answer", "Yes", "yes/no answer")
    ]
    with AnswerChecker() as checker:
        vetted = load_problems(plain, checker=checker)
    # The checker refuses what the string rules let through; the row is listed with the answer it saw.
    assert [p.answer for p in vetted.problems] == ["2"]
    assert [(s.row, s.answer, s.reason) for s in vetted.skipped[1:]] == [
        (3, "x(x-1)(x-2)...(x-2022)", "does not parse to a mathematical expression")
    ]

    math_rows = [
        {"problem": "Half?", "solution": "So $\\boxed{\\dfrac{1}{2}}$."},
        {"problem": "Odd?", "solution": "It is $\\boxed{\\text{yes}}$."},
    ]
    math = load_problems(write_jsonl(tmp_path / "math.jsonl", math_rows))
    assert [p.answer for p in math.problems] == ["\\dfrac{1}{2}"]
    assert [(s.answer, s.reason) for s in math.skipped] == [("\\text{yes}", "yes/no answer")]

    gsm = [{"question": "Coins?", "answer": "1000+200=1200\n#### 1,200"}]
    assert [p.answer for p in load_problems(write_jsonl(tmp_path / "g.jsonl", gsm)).problems] == ["1200"]

    path = tmp_path / "p.parquet"
    pl.DataFrame(
        {"problem": ["a?", "b?"], "answer": ["C(10, 5), or equivalently 252", "No such values"]}
    ).write_parquet(path)
    parquet = load_problems(str(path))
    assert [p.answer for p in parquet.problems] == ["\\binom{10}{5} or equivalently 252"]
    assert [s.reason for s in parquet.skipped] == ["no such value: 'No such values'"]


def test_whole_file_faults_raise_with_the_file_name(tmp_path):
    with pytest.raises(ProblemSourceError, match="not valid JSON"):
        (tmp_path / "broken.jsonl").write_text('{"problem": "a", "answer": "1"}\n{"problem": \n')
        load_problems(str(tmp_path / "broken.jsonl"))
    with pytest.raises(ProblemSourceError, match=r"broken\.jsonl line 2"):
        load_problems(str(tmp_path / "broken.jsonl"))
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(ProblemSourceError, match=r"fake\.parquet: not a parquet file"):
        load_problems(str(tmp_path / "fake.parquet"))
    with pytest.raises(ProblemSourceError, match=r"missing\.jsonl: file not found"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ProblemSourceError, match=r"problems\.csv.*not a bundled set"):
        load_problems(str(tmp_path / "problems.csv"))
    with pytest.raises(ProblemSourceError, match="no usable problems"):
        load_problems(write_jsonl(tmp_path / "empty.jsonl", [{"problem": "", "answer": "1"}]))


def test_hub_dataset_offline_says_what_to_do_instead():
    with pytest.raises(ProblemSourceError, match="export it to jsonl or parquet"):
        load_problems("hf:nonexistent-org/nonexistent-dataset@test")


def test_shard_of_is_stable_and_spread():
    ids = [f"problem-{i}" for i in range(400)]
    shards = [shard_of(i, 4) for i in ids]
    assert shards == [shard_of(i, 4) for i in ids]
    assert set(shards) == set(shard_keys(4))
    # Known values pin the hash: a change here would move every stored problem to another shard.
    assert [shard_of(f"arithmetic-{i:04d}", 4) for i in range(3)] == EXPECTED_SHARDS


EXPECTED_SHARDS = ["shard-002", "shard-002", "shard-003"]


def test_a_math_release_folder_and_a_json_array_load_as_problem_sources():
    from sigma_assets.testing.real_text import DATA_DIR

    folder = load_problems(str(DATA_DIR / "benchmarks" / "layouts" / "math_release"))
    assert sorted(p.answer for p in folder.problems) == ["15", "2x+1", "5"]
    array = load_problems(str(DATA_DIR / "benchmarks" / "deepmind-mathematics.json"))
    assert len(array.problems) == 30 and array.problems[0].answer == "4"
