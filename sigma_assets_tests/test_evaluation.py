"""Evaluation: tricky answers scored by extraction + math-verify (gold first), benchmark files with
ungradeable gold answers skipped, and eval_scores through Dagster on the tiny models trained in
test_training's fixture."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sigma_assets.defs.evaluation.assets import eval_scores, finetuned_not_below_base
from sigma_assets.defs.evaluation.resources import EvaluationResource
from sigma_assets.evaluation import scoring
from sigma_assets.evaluation.scoring import EvalProblem, EvalSet
from sigma_assets.method.grading import AnswerChecker
from sigma_assets_tests.test_training import TRAINING_ASSETS, resources, trained  # noqa: F401 (fixture)

# (gold, completion, correct?): what a model writes and whether it earns the point.
TRICKY = [
    ("\\frac{1}{2}", "So the probability is $\\boxed{\\dfrac{1}{2}}$.", True),
    ("\\frac{1}{2}", "The answer is 0.5.", True),
    ("\\frac{1}{2}", "The answer is $\\frac{2}{3}$.", False),
    ("(1, 3]", "Hence $x \\in \\boxed{(1,3]}$.", True),
    ("(1, 3]", "Hence $x \\in \\boxed{[1,3]}$.", False),
    ("\\frac{\\sqrt{3}}{2}", "So $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$.", True),  # nested braces
    ("5", "Final: \\boxed{\\boxed{5}}", True),  # a doubly boxed answer
    ("12", "Each box holds 12 eggs, so \\boxed{12 \\text{ eggs}}.", True),  # units
    ("25", "The discount is 25\\%.", True),  # percentages
    ("25", "About 26 % of them, so the answer is 26.", False),
    ("3", "First 1 + 1 = 2, then 2 + 1 = 3", True),  # last number, for evaluation only
    ("7", "I do not know.", False),
    ("18", "She pays 4 * $3 = $12 and $6 more: \\boxed{\\$18}.", True),  # money
    ("12\\pi", "The speed is 12*pi.\n\n# Answer\n\n12*pi", True),  # PRM800K's marker, a plain-text pi
    ("East", "So she walks \\boxed{east}.", True),  # case
    ("18", "Step 3: 16 + 2 = 18\nStep 4: #### 18", True),  # GSM8K's marker
]


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker() as c:
        yield c


def test_tricky_answers_are_scored_as_a_reader_would(checker):
    problems = tuple(EvalProblem(f"t{i}", "q", gold) for i, (gold, _, _) in enumerate(TRICKY))
    scored = scoring.score_completions(
        "base", EvalSet("tricky", problems), [c for _, c, _ in TRICKY], checker.check_many
    )
    got = [(s.gold, s.completion, s.correct) for s in scored]
    assert got == TRICKY


def test_eval_sets_parse_and_load_skipping_ungradeable_gold(checker, tmp_path: Path):
    math_file = tmp_path / "math.jsonl"
    rows = [
        {"problem": "Compute 1/2 + 1/4.", "solution": "We get $\\boxed{\\frac{3}{4}}$.", "level": "Level 1"},
        {"problem": "Is 7 prime?", "solution": "Yes, so $\\boxed{\\text{yes}}$."},  # a yes/no answer
        {"problem": "Which box?", "solution": "So $\\boxed{\\text{the blue one}}$."},  # prose: skipped
    ]
    math_file.write_text("\n".join(json.dumps(r) for r in rows))
    gsm_file = tmp_path / "gsm8k.jsonl"
    gsm_file.write_text(json.dumps({"question": "Tom has 3 + 4 apples.", "answer": "3 + 4 = 7\n#### 7"}))
    pairs = scoring.parse_eval_sets(f"MATH={math_file}, GSM8K={gsm_file}")
    assert pairs == [("MATH", str(math_file)), ("GSM8K", str(gsm_file))]
    math_set = scoring.load_eval_set(*pairs[0], checker)
    assert [(p.answer, p.kind) for p in math_set.problems] == [("\\frac{3}{4}", "math"), ("True", "bool")]
    assert [(s.row, s.reason.split(":")[0]) for s in math_set.skipped] == [
        (3, "prose, not a mathematical answer")
    ]
    assert [p.answer for p in scoring.load_eval_set(*pairs[1], checker).problems] == ["7"]
    for bad, words in [("MATH", "not name=path"), ("a=x,a=y", "used twice"), ("heldout=x", "reserved")]:
        with pytest.raises(scoring.EvalSetError, match=words):
            scoring.parse_eval_sets(bad)
    with pytest.raises(scoring.EvalSetError, match=r"evaluation set X \(.*missing.jsonl\)"):
        scoring.load_eval_set("X", str(tmp_path / "missing.jsonl"), checker)


def test_bundled_set_avoids_the_searched_problems():
    first = scoring.bundled_eval_set(16)
    seen = [p.problem for p in first.problems[:5]]
    again = scoring.bundled_eval_set(16, exclude_texts=seen)
    assert len(again.problems) == 16
    assert not set(seen) & {p.problem for p in again.problems}
    assert all(p.problem_id.startswith("eval-arithmetic-") for p in again.problems)


def test_accuracy_table_and_ablation_deltas():
    scored = [
        scoring.ScoredAnswer(model, "b", f"p{i}", "1", "1", ok, "")
        for model, oks in {"base": [1, 0, 0, 0], "sigma": [1, 1, 1, 0], "mcts": [1, 1, 0, 0]}.items()
        for i, ok in enumerate(map(bool, oks))
    ]
    table = scoring.accuracy_table(scored)
    assert table.schema == pl.Schema(scoring.TABLE_SCHEMA)
    assert table.filter(pl.col("model") == "sigma").row(0, named=True) == {
        "model": "sigma",
        "benchmark": "b",
        "problems": 4,
        "correct": 3,
        "accuracy": 0.75,
        **dict.fromkeys(("samples", "pass@1", "pass@1_se", "maj@k", "pass@k")),  # greedy only
    }
    assert scoring.ablation_deltas(table) == {
        "b": {"sigma - mcts": 25.0, "sigma - base": 50.0, "mcts - base": 25.0}
    }
    lines = scoring.format_table(table, ["no revision was accepted: sigma = mcts"]).splitlines()
    assert lines[0].split() == ["benchmark", "problems", "base", "sigma", "mcts"]
    assert lines[1].split()[:2] == ["b", "4"]  # each benchmark's problem count
    assert lines[-1] == "no revision was accepted: sigma = mcts"


def test_eval_scores_scores_base_and_both_variants(trained, tiny_model_dir: Path):  # noqa: F811
    root = trained["root"]
    result = dg.materialize(
        [*TRAINING_ASSETS, eval_scores, finetuned_not_below_base],
        selection=dg.AssetSelection.assets(eval_scores) | dg.AssetSelection.checks_for_assets(eval_scores),
        resources={**resources(root, tiny_model_dir), "evaluation": EvaluationResource(max_batch=8)},
        run_config={"ops": {"eval_scores": {"config": {"max_tokens": 12, "bundled_problems": 6}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    table = result.output_for_node("eval_scores")
    heldout = pl.read_parquet(root / "sft" / "heldout" / "sigma.parquet")
    assert set(table["model"]) == {"base", "sigma", "mcts"}
    assert set(table["benchmark"]) == {"heldout", "arithmetic-unseen"}
    sizes = dict(zip(table["benchmark"], table["problems"], strict=False))
    assert sizes == {"heldout": heldout.height, "arithmetic-unseen": 6}
    assert table["accuracy"].is_between(0, 1).all()
    assert (table["accuracy"] == table["correct"] / table["problems"]).all()
    metadata = result.asset_materializations_for_node("eval_scores")[0].metadata
    assert "base" in metadata["accuracy_table"].value
    assert set(metadata["ablation_delta_points"].value["heldout"]) == {
        "sigma - mcts",
        "sigma - base",
        "mcts - base",
    }
    assert metadata["accuracy_chart"].value.startswith("![accuracy](data:image/png;base64,")
    # What the ablation compared: the fixture's sigma set has revised samples, so the sets differ.
    sigma = pl.read_parquet(root / "assets" / "sft_dataset" / "sigma.parquet")
    ablation = metadata["ablation"].value
    assert ablation["sigma_equals_mcts"] is False
    assert ablation["sigma_samples"] == sigma.height
    assert ablation["shared_samples"] == sigma["kept_original"].sum()
    assert metadata["notes"].value == [ablation["note"]]
    assert ablation["note"] in metadata["accuracy_table"].value
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "finetuned_not_below_base"
    # Each model's answers are cached under its own store, keyed by the training run for fine-tunes.
    assert sorted(p.name for p in (root / "responses" / "eval").iterdir()) == ["base", "mcts", "sigma"]


def test_sampled_metrics_stored_completions_and_regrading(trained, tiny_model_dir: Path):  # noqa: F811
    root = trained["root"]
    instance = dg.DagsterInstance.ephemeral()
    config = {"max_tokens": 8, "bundled_problems": 4, "samples": 2}

    def run():
        result = dg.materialize(
            [*TRAINING_ASSETS, eval_scores],
            selection=dg.AssetSelection.assets(eval_scores),
            resources={**resources(root, tiny_model_dir), "evaluation": EvaluationResource(max_batch=8)},
            run_config={"ops": {"eval_scores": {"config": config}}},
            instance=instance,
        )
        return result.output_for_node("eval_scores"), result.asset_materializations_for_node("eval_scores")[
            0
        ].metadata

    table, metadata = run()
    assert set(table["samples"]) == {2}
    assert table["pass@1"].is_between(0, 1).all() and (table["pass@1_se"] >= 0).all()
    assert (table["pass@k"] >= table["pass@1"]).all()
    assert "pass@1 (k=2)" in metadata["accuracy_table"].value
    assert all(t["requests_generated"] > 0 for t in metadata["throughput"].value.values())
    stored = pl.read_parquet(root / "eval" / "sigma" / "arithmetic-unseen.parquet")
    assert stored.height == 4 * 3  # a greedy answer and two samples per problem
    assert sorted(set(stored["sample"])) == [0, 1, 2]

    # A grade written before is never read back: a tampered verdict is graded again, not reused.
    tampered = stored.with_columns(~pl.col("correct"))
    tampered.write_parquet(root / "eval" / "sigma" / "arithmetic-unseen.parquet")
    again, rerun = run()
    assert all(t["requests_generated"] == 0 for t in rerun["throughput"].value.values())  # nothing generated
    assert again.equals(table)
    assert pl.read_parquet(root / "eval" / "sigma" / "arithmetic-unseen.parquet").equals(stored)
