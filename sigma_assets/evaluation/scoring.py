"""Evaluation: benchmark sets, batched greedy decoding, answer extraction and checking, the accuracy table.

Zero-shot greedy decoding in the student's prompt format (the one it was trained on). The answer is
the last `\\boxed{}`, else "The answer is …", else the last number (`answers.extract_answer`), and it
is compared with the gold answer by the gold's kind (`answer_check`: math-verify, gold first, for
mathematics). Benchmark files are read in their published layouts (`benchmarks`); an ungradeable gold
answer is skipped (and listed with its reason), never scored as a wrong prediction.

No Dagster imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.evaluation.answer_check import grade
from sigma_assets.evaluation.benchmarks import EvalProblem, EvalSet, EvalSetError, load_benchmark
from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams, user
from sigma_assets.method.answers import extract_answer
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.training.sft_data import student_prompt

MODELS = ("base", "sigma", "mcts")
HELDOUT_BENCHMARK = "heldout"
BUNDLED_BENCHMARK = "arithmetic-unseen"
# A different seed from the training problems; texts the search saw are filtered out as well.
BUNDLED_SEED = 20240611
TABLE_SCHEMA = {
    "model": pl.String,
    "benchmark": pl.String,
    "problems": pl.Int64,
    "correct": pl.Int64,
    "accuracy": pl.Float64,
}
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Generate = Callable[[Sequence[GenerationRequest]], list[list[Sample]]]
CheckMany = Callable[[Sequence[tuple[str, str | None]]], list[bool]]


def parse_eval_sets(spec: str, variable: str = "SIGMA_EVAL_SETS") -> list[tuple[str, str]]:
    """`name=path,name=path` as (name, path) pairs, in order."""
    pairs: list[tuple[str, str]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, path = (s.strip() for s in part.partition("="))
        if not sep or not name or not path:
            raise EvalSetError(f"{variable}={spec!r}: {part!r} is not name=path")
        if not _SET_NAME.match(name):
            raise EvalSetError(
                f"{variable}={spec!r}: set name {name!r} must be letters, digits, '_', '-', '.'"
            )
        if name in {n for n, _ in pairs} or name in (HELDOUT_BENCHMARK, BUNDLED_BENCHMARK):
            raise EvalSetError(f"{variable}={spec!r}: set name {name!r} is used twice or is reserved")
        pairs.append((name, path))
    return pairs


def load_eval_set(
    name: str, source: str, checker: AnswerChecker, storage_options: Mapping[str, Any] | None = None
) -> EvalSet:
    """A benchmark file in its published layout (`benchmarks`), gold answers vetted."""
    try:
        return load_benchmark(name, source, checker, storage_options)
    except EvalSetError as exc:
        raise EvalSetError(f"evaluation set {name} ({source}): {exc}") from exc


def bundled_eval_set(count: int, exclude_texts: Iterable[str] = ()) -> EvalSet:
    """`count` arithmetic problems the search never saw: another seed, other ids, known texts removed."""
    seen = {" ".join(t.split()) for t in exclude_texts}
    problems: list[EvalProblem] = []
    pool = arithmetic_problems(count * 8, seed=BUNDLED_SEED)
    for index, (_, text, answer) in enumerate(pool):
        key = " ".join(text.split())
        if key in seen:
            continue
        seen.add(key)
        problems.append(EvalProblem(f"eval-arithmetic-{index:04d}", text, answer))
        if len(problems) == count:
            break
    return EvalSet(BUNDLED_BENCHMARK, tuple(problems), source="bundled")


def eval_requests(problems: Sequence[EvalProblem], max_tokens: int) -> list[GenerationRequest]:
    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    return [GenerationRequest(messages=user(student_prompt(p.problem)), params=params) for p in problems]


@dataclass(frozen=True)
class ScoredAnswer:
    model: str
    benchmark: str
    problem_id: str
    gold: str
    prediction: str | None
    correct: bool
    completion: str


def score_completions(
    model: str, eval_set: EvalSet, completions: Sequence[str], check_many: CheckMany
) -> list[ScoredAnswer]:
    """Extract each completion's answer and check it against the gold answer (gold first)."""
    if len(completions) != len(eval_set.problems):
        raise ValueError(
            f"{eval_set.name}: {len(completions)} completions for {len(eval_set.problems)} problems"
        )
    predictions = [extract_answer(text) for text in completions]
    verdicts = grade(eval_set.problems, predictions, check_many)
    return [
        ScoredAnswer(model, eval_set.name, p.problem_id, p.answer, pred, ok, text)
        for p, pred, ok, text in zip(eval_set.problems, predictions, verdicts, completions, strict=True)
    ]


def evaluate(
    model: str, generate: Generate, eval_sets: Sequence[EvalSet], check_many: CheckMany, max_tokens: int
) -> list[ScoredAnswer]:
    """Greedy answers of one model to every set, generated in one batch and scored."""
    problems = [p for s in eval_sets for p in s.problems]
    samples = generate(eval_requests(problems, max_tokens)) if problems else []
    texts = [request_samples[0].text for request_samples in samples]
    scored: list[ScoredAnswer] = []
    start = 0
    for eval_set in eval_sets:
        end = start + len(eval_set.problems)
        scored += score_completions(model, eval_set, texts[start:end], check_many)
        start = end
    return scored


def accuracy_table(scored: Iterable[ScoredAnswer]) -> pl.DataFrame:
    """One row per (model, benchmark): problems, correct, accuracy."""
    frame = pl.DataFrame(
        [{"model": s.model, "benchmark": s.benchmark, "correct": s.correct} for s in scored],
        schema={"model": pl.String, "benchmark": pl.String, "correct": pl.Boolean},
    )
    table = frame.group_by("model", "benchmark", maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("problems"), pl.col("correct").sum().cast(pl.Int64).alias("correct")
    )
    table = table.with_columns((pl.col("correct") / pl.col("problems")).alias("accuracy"))
    return table.select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA)


def ablation_deltas(table: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per benchmark, accuracy differences in points: sigma − mcts, sigma − base, mcts − base."""
    accuracy = {(r["model"], r["benchmark"]): r["accuracy"] for r in table.iter_rows(named=True)}
    deltas: dict[str, dict[str, float]] = {}
    for benchmark in dict.fromkeys(table["benchmark"].to_list()):
        row = {}
        for a, b in (("sigma", "mcts"), ("sigma", "base"), ("mcts", "base")):
            if (a, benchmark) in accuracy and (b, benchmark) in accuracy:
                row[f"{a} - {b}"] = round(100 * (accuracy[(a, benchmark)] - accuracy[(b, benchmark)]), 2)
        deltas[benchmark] = row
    return deltas


def format_table(table: pl.DataFrame) -> str:
    """The accuracy table as aligned text: one line per benchmark, one column per model."""
    models = [m for m in MODELS if m in set(table["model"])] + sorted(set(table["model"]) - set(MODELS))
    rows = {(r["model"], r["benchmark"]): r for r in table.iter_rows(named=True)}
    benchmarks = list(dict.fromkeys(table["benchmark"].to_list()))
    width = max([len("benchmark"), *(len(b) for b in benchmarks)])
    lines = [f"{'benchmark':<{width}}  " + "  ".join(f"{m:>14}" for m in models)]
    for benchmark in benchmarks:
        cells = []
        for model in models:
            r = rows.get((model, benchmark))
            cells.append(
                f"{r['correct']:>3}/{r['problems']:<3} {100 * r['accuracy']:5.1f}%" if r else " " * 14
            )
        lines.append(f"{benchmark:<{width}}  " + "  ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)
