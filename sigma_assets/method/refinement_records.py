"""What refinement reads and writes: its settings, a problem's selected path, critique rows, refined
paths, and the table schemas of `critiques` and `refined_paths`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import polars as pl

from sigma_assets.data.tables import Column, Table
from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.method.siblings import SiblingSet

T = TypeVar("T")
Mode = Literal["path", "step"]
CritiqueMode = Literal["path", "step", "step-fallback"]
RevisionMode = Literal["path", "step", "step-fallback"]
Validator = Callable[[Sample], None]
# Pairs are (gold, prediction), gold first (math-verify is asymmetric).
CheckAnswers = Callable[[Sequence[tuple[str, str | None]]], list[bool]]
RequestKey = Callable[[GenerationRequest], str]


class Generate(Protocol):
    """`LLMClient.generate`: per request its samples; `validate` raises ValueError on an unusable sample."""

    def __call__(
        self, requests: Sequence[GenerationRequest], validate: Validator | None = None
    ) -> list[list[Sample]]: ...


@dataclass(frozen=True)
class RefinementSettings:
    mode: Mode = "path"
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    critique_path_max_tokens: int = 1536
    critique_step_max_tokens: int = 384
    revision_path_max_tokens: int = 2048
    revision_step_max_tokens: int = 512
    # A drifted revision is retried this many times, sampled at `retry_temperature` with a new seed
    # (at temperature 0 another seed alone would return the same text).
    drift_retries: int = 1
    retry_temperature: float = 0.7
    # Weak critics (e.g. SmolLM2-135M) rarely write valid JSON or labelled steps: fall back to step mode.
    step_fallback: bool = True
    # When a batched call fails for good, resend its requests one by one so one bad answer does not send
    # every problem of the batch to the fallback. Off: the whole batch falls back at once (cheaper with
    # a critic that almost never validates).
    isolate_failures: bool = True
    # Generic-feedback heuristic, see `is_generic_feedback`.
    generic_min_words: int = 6
    generic_min_overlap: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("path", "step"):
            raise ValueError(f"mode must be 'path' or 'step', got {self.mode!r}")
        if self.drift_retries < 0:
            raise ValueError(f"drift_retries must be >= 0, got {self.drift_retries}")


@dataclass(frozen=True)
class ProblemPaths:
    """One problem with its selected path, as sibling sets ordered by depth 1..D."""

    problem_id: str
    problem: str
    gold_answer: str
    sibling_sets: tuple[SiblingSet, ...]

    def __post_init__(self) -> None:
        depths = [r.depth for r in self.sibling_sets]
        if depths != list(range(1, len(depths) + 1)):
            raise ValueError(f"{self.problem_id}: sibling sets must cover depths 1..D in order, got {depths}")
        if not self.sibling_sets:
            raise ValueError(f"{self.problem_id}: a selected path has at least one step")
        if any(r.problem_id != self.problem_id for r in self.sibling_sets):
            raise ValueError(f"{self.problem_id}: sibling sets of another problem mixed in")

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(r.selected_step for r in self.sibling_sets)


def problem_paths(
    sibling_sets: Iterable[SiblingSet], problems: Mapping[str, tuple[str, str]]
) -> list[ProblemPaths]:
    """Group sibling sets by problem; `problems` maps problem_id to (problem text, gold answer)."""
    grouped: dict[str, list[SiblingSet]] = {}
    for record in sibling_sets:
        grouped.setdefault(record.problem_id, []).append(record)
    out = []
    for problem_id in sorted(grouped):
        if problem_id not in problems:
            raise KeyError(f"no problem text for {problem_id}")
        text, gold = problems[problem_id]
        records = tuple(sorted(grouped[problem_id], key=lambda r: r.depth))
        out.append(ProblemPaths(problem_id, text, gold, records))
    return out


@dataclass
class CallStats:
    """Model calls made for one problem (requests sent, failed ones included) and the tokens they cost."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    response_keys: list[str] = field(default_factory=list)

    def add(self, other: CallStats) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.response_keys.extend(other.response_keys)


@dataclass(frozen=True)
class CritiqueRow:
    """Feedback for one depth. The cost of a call is on the first row it produced (sums are exact)."""

    problem_id: str
    depth: int
    feedback: str
    generic: bool
    mode: CritiqueMode
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    response_keys: tuple[str, ...] = ()

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["response_keys"] = list(self.response_keys)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CritiqueRow:
        return cls(**{**row, "response_keys": tuple(row.get("response_keys") or ())})


@dataclass(frozen=True)
class RefinedPath:
    problem_id: str
    original_steps: tuple[str, ...]
    refined_steps: tuple[str, ...]  # the original steps again when the revision drifted
    final_answer: str | None
    correct: bool
    drift: bool
    # Why the last revision was rejected: wrong_answer, a `final_answer` reason (no_answer, repetition,
    # false_arithmetic, new_question, ...), several_paragraphs or echo (`malformed_step`); None if kept.
    rejected_revision: str | None
    regurgitation: bool
    generic_feedback: bool  # any depth's feedback was generic
    generic_depths: int
    critique_mode: CritiqueMode
    revision_mode: RevisionMode
    revision_attempts: int  # 1 + drift retries spent
    calls: int  # critique and revision together
    prompt_tokens: int
    completion_tokens: int
    response_keys: tuple[str, ...] = ()

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        for name in ("original_steps", "refined_steps", "response_keys"):
            row[name] = list(row[name])
        return row


CRITIQUE_COLUMNS: Table = {
    "problem_id": Column(pl.String, "The problem."),
    "depth": Column(pl.Int64, "The depth of the selected path this feedback is for."),
    "feedback": Column(pl.String, "The critic's feedback on the selected step against its siblings."),
    "generic": Column(
        pl.Boolean,
        "No depth-specific content, or an echo of the instructions: never shown to a revision.",
    ),
    "mode": Column(pl.String, "path, step, or step-fallback (a path critique that never validated)."),
    "calls": Column(pl.Int64, "Critic requests booked on this row (a call's cost is on its first row)."),
    "prompt_tokens": Column(pl.Int64, "Prompt tokens of those requests."),
    "completion_tokens": Column(pl.Int64, "Completion tokens of those requests."),
    "response_keys": Column(pl.List(pl.String), "Response-store keys of those requests."),
    "critic_model": Column(pl.String, "The critic model."),
}


REFINED_COLUMNS: Table = {
    "problem_id": Column(pl.String, "The problem."),
    "original_steps": Column(pl.List(pl.String), "The selected path as the search found it."),
    "refined_steps": Column(pl.List(pl.String), "The revised path; the original path again after drift."),
    "final_answer": Column(pl.String, "The explicit answer that closes the refined path."),
    "correct": Column(pl.Boolean, "final_answer equals the gold answer."),
    "drift": Column(pl.Boolean, "Every revision attempt was rejected, so the original path was kept."),
    "rejected_revision": Column(
        pl.String,
        "Why the last revision was rejected: wrong_answer, no_answer, false_arithmetic, echo, ...",
    ),
    "regurgitation": Column(pl.Boolean, "The accepted revision equals the original, whitespace aside."),
    "generic_feedback": Column(pl.Boolean, "Any depth's feedback was generic."),
    "generic_depths": Column(pl.Int64, "How many depths had generic feedback."),
    "critique_mode": Column(pl.String, "path, step or step-fallback."),
    "revision_mode": Column(pl.String, "path, step or step-fallback."),
    "revision_attempts": Column(pl.Int64, "1 + drift retries spent."),
    "calls": Column(pl.Int64, "Critic requests for this problem, critique and revision together."),
    "prompt_tokens": Column(pl.Int64, "Their prompt tokens."),
    "completion_tokens": Column(pl.Int64, "Their completion tokens."),
    "response_keys": Column(pl.List(pl.String), "Their response-store keys."),
    "critic_model": Column(pl.String, "The critic model."),
}
