"""Sampled metrics per (model, benchmark): pass@1 averaged over k samples with its standard error, maj@k
and pass@k, as NeMo-Skills and Qwen2.5-Math's harness report them.

- pass@1: the mean over problems of each problem's share of correct samples; its standard error is that
  of a mean over problems (the standard deviation of the per-problem shares over sqrt(n)), the error bar
  of "Adding Error Bars to Evals" (Miller, 2024);
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) for c correct of n;
- maj@k: the answer most of the k samples give (equal answers after normalisation; a tie goes to the one
  given first; samples without an answer do not vote) is right.

No Dagster imports.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sigma_assets.method.grading import normalize_answer


@dataclass(frozen=True)
class SampledAnswer:
    """One sampled completion's extracted answer and verdict."""

    problem_id: str
    prediction: str | None
    correct: bool


@dataclass(frozen=True)
class SampledMetrics:
    samples: int
    problems: int
    pass_at_1: float
    pass_at_1_se: float
    maj_at_k: float
    pass_at_k: float


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k samples drawn from n (c of them correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(answers: Sequence[SampledAnswer]) -> bool:
    """Whether the answer most samples give is right (module docstring)."""
    votes = Counter(normalize_answer(a.prediction) for a in answers if a.prediction)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(key for key in votes if votes[key] == top)  # Counter keeps first-seen order
    return next(a.correct for a in answers if a.prediction and normalize_answer(a.prediction) == winner)


def sampled_metrics(answers: Iterable[SampledAnswer]) -> SampledMetrics:
    """The metrics of one (model, benchmark): every problem must have the same number of samples."""
    by_problem: dict[str, list[SampledAnswer]] = {}
    for answer in answers:
        by_problem.setdefault(answer.problem_id, []).append(answer)
    if not by_problem:
        raise ValueError("no sampled answers")
    counts = {len(group) for group in by_problem.values()}
    if len(counts) != 1:
        raise ValueError(f"problems have different numbers of samples: {sorted(counts)}")
    k = counts.pop()
    shares = [sum(a.correct for a in group) / k for group in by_problem.values()]
    n = len(shares)
    mean = sum(shares) / n
    variance = sum((s - mean) ** 2 for s in shares) / (n - 1) if n > 1 else 0.0
    return SampledMetrics(
        samples=k,
        problems=n,
        pass_at_1=mean,
        pass_at_1_se=math.sqrt(variance / n),
        maj_at_k=sum(majority_correct(group) for group in by_problem.values()) / n,
        pass_at_k=sum(pass_at_k(k, sum(a.correct for a in group), k) for group in by_problem.values()) / n,
    )
