"""Evaluation: benchmark sets, batched greedy decoding, answer extraction and checking, the accuracy table.

Zero-shot greedy decoding in the student's prompt format (the one it was trained on). The answer is
the last `\\boxed{}`, else "The answer is …", else the last number (`answers.extract_answer`), and it
is compared with the gold answer by the gold's kind (`answer_check`: math-verify, gold first, for
mathematics). Benchmark files are read in their published layouts (`benchmarks`); an ungradeable gold
answer is skipped (and listed with its reason), never scored as a wrong prediction.

No Dagster imports.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.evaluation.answer_check import grade
from sigma_assets.evaluation.benchmarks import EvalProblem, EvalSet, EvalSetError, load_benchmark
from sigma_assets.evaluation.metrics import SampledAnswer, sampled_metrics
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
    "accuracy": pl.Float64,  # greedy
    # With `samples: k` (else null): pass@1 averaged over k samples and its standard error, maj@k, pass@k.
    "samples": pl.Int64,
    "pass@1": pl.Float64,
    "pass@1_se": pl.Float64,
    "maj@k": pl.Float64,
    "pass@k": pl.Float64,
}
GREEDY = 0  # the `sample` of a greedy answer; sampled answers are 1..k
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


@dataclass(frozen=True)
class Decoding:
    """Greedy decoding, and with `samples` > 0 also that many samples per problem (NeMo-Skills' and the
    Qwen2.5-Math harness's defaults: temperature 0.7, top-p 0.95), seeded per problem."""

    max_tokens: int
    samples: int = 0
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0


def eval_requests(problems: Sequence[EvalProblem], decoding: Decoding) -> list[GenerationRequest]:
    """Per problem its greedy request, then (with samples) its sampled one."""
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=decoding.max_tokens)
    requests = []
    for p in problems:
        messages = user(student_prompt(p.problem))
        requests.append(GenerationRequest(messages=messages, params=greedy))
        if decoding.samples:
            sampled = SamplingParams(
                n=decoding.samples,
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                max_tokens=decoding.max_tokens,
                seed=_problem_seed(decoding.seed, p.problem_id),
            )
            requests.append(GenerationRequest(messages=messages, params=sampled))
    return requests


def _problem_seed(seed: int, problem_id: str) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class ScoredAnswer:
    model: str
    benchmark: str
    problem_id: str
    gold: str
    prediction: str | None
    correct: bool
    completion: str
    sample: int = GREEDY


def score_completions(
    model: str,
    eval_set: EvalSet,
    completions: Sequence[str],
    check_many: CheckMany,
    samples: Sequence[int] | None = None,
    problems: Sequence[EvalProblem] | None = None,
) -> list[ScoredAnswer]:
    """Extract each completion's answer and grade it against its problem's gold answer.

    By default one greedy completion per problem of `eval_set`, in order; `problems` and `samples` name
    the problem and sample of each completion otherwise."""
    problems = list(eval_set.problems if problems is None else problems)
    samples = [GREEDY] * len(problems) if samples is None else list(samples)
    if not len(completions) == len(problems) == len(samples):
        raise ValueError(f"{eval_set.name}: {len(completions)} completions for {len(problems)} problems")
    predictions = [extract_answer(text) for text in completions]
    verdicts = grade(problems, predictions, check_many)
    return [
        ScoredAnswer(model, eval_set.name, p.problem_id, p.answer, pred, ok, text, sample)
        for p, pred, ok, text, sample in zip(
            problems, predictions, verdicts, completions, samples, strict=True
        )
    ]


def evaluate(
    model: str,
    generate: Generate,
    eval_sets: Sequence[EvalSet],
    check_many: CheckMany,
    decoding: Decoding,
    stored: Mapping[tuple[str, str, int], str] | None = None,
) -> tuple[list[ScoredAnswer], int]:
    """Every answer of one model to every set, greedy and sampled, scored: the completions in `stored`
    ((benchmark, problem_id, sample) -> text) are re-graded, the rest generated in one batch.

    Returns the answers and how many requests were generated."""
    stored = stored or {}
    wanted: list[tuple[EvalSet, EvalProblem, GenerationRequest, list[int]]] = []
    for eval_set in eval_sets:
        requests = iter(eval_requests(eval_set.problems, decoding))
        for problem in eval_set.problems:
            groups = [[GREEDY]] + ([list(range(1, decoding.samples + 1))] if decoding.samples else [])
            for samples in groups:
                request = next(requests)
                if any((eval_set.name, problem.problem_id, s) not in stored for s in samples):
                    wanted.append((eval_set, problem, request, samples))
    responses = generate([request for _, _, request, _ in wanted]) if wanted else []
    texts = dict(stored)
    for (eval_set, problem, _, samples), response in zip(wanted, responses, strict=True):
        for sample, generated in zip(samples, response, strict=True):
            texts[(eval_set.name, problem.problem_id, sample)] = generated.text
    scored: list[ScoredAnswer] = []
    for eval_set in eval_sets:
        keys = [(problem, sample) for problem in eval_set.problems for sample in range(decoding.samples + 1)]
        scored += score_completions(
            model,
            eval_set,
            [texts[(eval_set.name, p.problem_id, sample)] for p, sample in keys],
            check_many,
            samples=[sample for _, sample in keys],
            problems=[p for p, _ in keys],
        )
    return scored, len(wanted)


def accuracy_table(scored: Iterable[ScoredAnswer]) -> pl.DataFrame:
    """One row per (model, benchmark): greedy problems, correct and accuracy, and the sampled metrics."""
    scored = list(scored)
    greedy = [s for s in scored if s.sample == GREEDY]
    frame = pl.DataFrame(
        [{"model": s.model, "benchmark": s.benchmark, "correct": s.correct} for s in greedy],
        schema={"model": pl.String, "benchmark": pl.String, "correct": pl.Boolean},
    )
    table = frame.group_by("model", "benchmark", maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("problems"), pl.col("correct").sum().cast(pl.Int64).alias("correct")
    )
    table = table.with_columns((pl.col("correct") / pl.col("problems")).alias("accuracy"))
    sampled: dict[tuple[str, str], list[SampledAnswer]] = {}
    for s in scored:
        if s.sample != GREEDY:
            sampled.setdefault((s.model, s.benchmark), []).append(
                SampledAnswer(s.problem_id, s.prediction, s.correct)
            )
    rows = []
    for (model, benchmark), answers in sampled.items():
        m = sampled_metrics(answers)
        rows.append(
            {
                "model": model,
                "benchmark": benchmark,
                "samples": m.samples,
                "pass@1": m.pass_at_1,
                "pass@1_se": m.pass_at_1_se,
                "maj@k": m.maj_at_k,
                "pass@k": m.pass_at_k,
            }
        )
    metrics_schema = {
        k: TABLE_SCHEMA[k]
        for k in ("model", "benchmark", "samples", "pass@1", "pass@1_se", "maj@k", "pass@k")
    }
    table = table.join(pl.DataFrame(rows, schema=metrics_schema), on=["model", "benchmark"], how="left")
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


def format_table(table: pl.DataFrame, notes: Sequence[str] = ()) -> str:
    """The accuracy table as aligned text: one line per benchmark with its problem count, one column per
    model; greedy accuracy, then (with samples) pass@1 ± its standard error, maj@k and pass@k; then
    `notes`, one line each (what the ablation compared)."""
    models = [m for m in MODELS if m in set(table["model"])] + sorted(set(table["model"]) - set(MODELS))
    rows = {(r["model"], r["benchmark"]): r for r in table.iter_rows(named=True)}
    benchmarks = list(dict.fromkeys(table["benchmark"].to_list()))
    sampled = table["samples"].drop_nulls().unique().to_list()
    metrics: list[tuple[str, Callable[[dict], str]]] = [
        ("greedy", lambda r: f"{r['correct']:>3}/{r['problems']:<3} {100 * r['accuracy']:5.1f}%")
    ]
    if sampled:
        k = ",".join(str(v) for v in sorted(sampled))
        metrics += [
            (f"pass@1 (k={k})", lambda r: f"{100 * r['pass@1']:5.1f} ± {100 * r['pass@1_se']:4.1f}"),
            (f"maj@{k}", lambda r: f"{100 * r['maj@k']:5.1f}%"),
            (f"pass@{k}", lambda r: f"{100 * r['pass@k']:5.1f}%"),
        ]
    width = max([len("benchmark"), *(len(f"{b} {m}") for b in benchmarks for m, _ in metrics)])
    sizes = {r["benchmark"]: r["problems"] for r in table.iter_rows(named=True)}
    lines = [f"{'benchmark':<{width}}  problems  " + "  ".join(f"{m:>14}" for m in models)]
    for benchmark in benchmarks:
        for index, (name, cell) in enumerate(metrics):
            label = benchmark if len(metrics) == 1 else f"{benchmark} {name}"
            size = str(sizes[benchmark]) if index == 0 else ""
            cells = []
            for model in models:
                r = rows.get((model, benchmark))
                cells.append(cell(r) if r and (name == "greedy" or r["samples"]) else " " * 14)
            lines.append(f"{label:<{width}}  {size:>8}  " + "  ".join(f"{c:>14}" for c in cells))
    return "\n".join([*lines, *notes])
