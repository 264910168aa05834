"""Benchmark files in their published layouts (`evaluation.benchmarks`) and predictions graded by the
gold's kind (`evaluation.answer_check`), on the shared samples of the published files."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from sigma_assets.evaluation import scoring
from sigma_assets.evaluation.answer_check import grade, numeric_value, option_letter
from sigma_assets.evaluation.benchmarks import EvalProblem, EvalSetError, load_benchmark, read_records
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.testing.real_text import DATA_DIR

BENCHMARKS = DATA_DIR / "benchmarks"
LAYOUTS = BENCHMARKS / "layouts"
# (file, the layout it is read as, at least this many of its rows kept)
FILES = [
    (BENCHMARKS / "gsm8k.jsonl", "gsm8k", 30),
    (BENCHMARKS / "minerva_math.jsonl", "math", 29),
    (BENCHMARKS / "college_math.jsonl", "college_math", 24),
    (BENCHMARKS / "deepmind-mathematics.json", "question_answer", 30),
    (BENCHMARKS / "olympiadbench.jsonl", "olympiadbench", 30),
    (BENCHMARKS / "theoremqa.json", "theoremqa", 30),
    (LAYOUTS / "theoremqa_kinds.json", "theoremqa", 4),
    (LAYOUTS / "aime.jsonl", "math", 3),
    (LAYOUTS / "aime_hf.json", "math", 2),
    (LAYOUTS / "amc.jsonl", "question_answer", 2),
    (LAYOUTS / "math500.jsonl", "math", 2),
    (LAYOUTS / "math_release", "math", 3),
]


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker() as c:
        yield c


def perfect_completions(problems) -> list[str]:
    """What a perfect model writes: the benchmark's own published answer, stated explicitly."""
    return [
        f"So the answer is \\boxed{{{p.published}}}." if i % 2 else f"The answer is {p.published}."
        for i, p in enumerate(problems)
    ]


@pytest.mark.parametrize(("path", "layout", "kept"), FILES, ids=[f[0].name for f in FILES])
def test_every_published_layout_loads_and_a_perfect_model_scores_100_percent(checker, path, layout, kept):
    eval_set = scoring.load_eval_set(path.stem, str(path), checker)
    assert eval_set.layout == layout
    assert len(eval_set.problems) >= kept
    assert len(eval_set.problems) + len(eval_set.skipped) == len(read_records(str(path)))
    scored = scoring.score_completions(
        "perfect", eval_set, perfect_completions(eval_set.problems), checker.check_many
    )
    assert [s.problem_id for s in scored if not s.correct] == []


@pytest.mark.parametrize("path", [BENCHMARKS / "olympiadbench.jsonl", BENCHMARKS / "theoremqa.json"])
def test_jsonl_a_json_array_and_parquet_load_alike(checker, tmp_path: Path, path: Path):
    records = [r for _, r in read_records(str(path))]
    as_jsonl = tmp_path / "set.jsonl"
    as_jsonl.write_text("\n".join(json.dumps(r) for r in records))
    as_array = tmp_path / "set.json"
    as_array.write_text(json.dumps(records, indent=1))
    as_parquet = tmp_path / "set.parquet"
    pl.DataFrame(
        [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in records],
        infer_schema_length=None,
    ).write_parquet(as_parquet)
    loaded = [
        [(p.problem_id, p.problem, p.answer, p.kind) for p in load_benchmark("set", str(f), checker).problems]
        for f in (as_jsonl, as_array, as_parquet)
    ]
    assert loaded[0] == loaded[1] == loaded[2]
    assert len(loaded[0]) == 30


def test_olympiadbench_list_answers_grade_the_answer_a_model_boxes(checker):
    eval_set = load_benchmark("olympiad", str(BENCHMARKS / "olympiadbench.jsonl"), checker)
    by_published = {p.published: p for p in eval_set.problems}
    pair = by_published["(2,4)"]
    interval = by_published["(-\\sqrt{11},-2)\\cup (\\sqrt{11},9)"]  # stored as "['...']" in the file
    several = by_published["90^{\\circ},60^{\\circ}"]  # is_multiple_answer
    problems = [pair, pair, interval, several, several]
    predictions = [
        "(2, 4)",
        "(4, 2)",
        "(-\\sqrt{11}, -2) \\cup (\\sqrt{11}, 9)",
        "60^\\circ, 90^\\circ",
        "90^\\circ",
    ]
    assert grade(problems, predictions, checker.check_many) == [True, False, True, True, False]


def test_skipped_rows_are_listed_with_their_reasons(checker):
    eval_set = load_benchmark("college", str(BENCHMARKS / "college_math.jsonl"), checker)
    reasons = {s.row: s.reason.split(":")[0] for s in eval_set.skipped}
    # Prose answers ("The principal axes are ...") are skipped, numbers with units are kept.
    assert reasons[20] == reasons[21] == "prose, not a mathematical answer"
    kept = {p.published: p.answer for p in eval_set.problems}
    assert kept["10 / 49 meters, 20 / 49 seconds"] == "10 / 49, 20 / 49"


def test_a_layout_that_is_not_recognised_names_the_file_and_its_fields(checker, tmp_path: Path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"prompt": "What is 2 + 2?", "target": "4"}))
    with pytest.raises(EvalSetError, match=r"odd.jsonl.*layout not recognised.*\(prompt, target\)"):
        scoring.load_eval_set("odd", str(odd), checker)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "x"}, ')
    with pytest.raises(EvalSetError, match=r"broken.json: not a valid JSON array"):
        scoring.load_eval_set("broken", str(broken), checker)


# (kind, gold, prediction, correct?) as the benchmarks' own evaluators grade them
GRADES = [
    ("number", "1.3733", "1.3733", True),
    ("number", "1.3733", "1.37", True),  # TheoremQA: within 4 %
    ("number", "1.3733", "1.2", False),
    ("number", "0.0758", "7.58\\%", True),  # a percentage is its hundredth
    ("number", "109", "109 years old", True),  # a unit after the number
    ("number", "2365200000", "2,365,200,000 \\text{ beats}", True),
    ("number", "3.83e35", "3.83 \\times 10^{35}", True),
    ("number", "16", "016", True),
    ("bool", "False", "\\text{False}", True),
    ("bool", "True", "Yes", True),
    ("bool", "True", "False", False),
    ("option", "c", "(c)", True),
    ("option", "c", "\\text{(C)}", True),
    ("option", "c", "(a)", False),
    ("math", "[1, 3]", "[1, 3]", True),
    ("math", "(1, 3]", "(1, 3)", False),  # intervals keep their ends
    ("math", "\\frac{1}{2}", "0.5", True),
    ("math", "5\\sqrt{2}", "\\sqrt{50}", True),
]


def test_predictions_grade_by_the_kind_of_their_gold(checker):
    problems = [
        EvalProblem(f"p{i}", "q", gold, kind, tolerance=0.04 if gold == "1.3733" else 1e-4)
        for i, (kind, gold, _, _) in enumerate(GRADES)
    ]
    got = grade(problems, [prediction for _, _, prediction, _ in GRADES], checker.check_many)
    assert list(zip(GRADES, got, strict=True)) == [(g, g[3]) for g in GRADES]


def test_numbers_and_letters_are_read_from_what_models_write():
    assert numeric_value("\\$1,234.50") == 1234.5
    assert numeric_value("x = -\\frac{3}{4}") == -0.75
    assert numeric_value("45^\\circ") == 45
    assert numeric_value("2x + 1") is None
    assert option_letter("The answer is (B).") == "b"
    assert option_letter("\\text{(D)}") == "d"
