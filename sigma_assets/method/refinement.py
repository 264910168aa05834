"""SIGMA's critique and revision: sibling-guided feedback per depth, then a rewritten selected path.

Two stages, so each can be its own asset (`critiques`, `refined_paths`), and `refine` runs both:

- `critique(problems, generate, settings)`: mode `path` sends every problem's path critique in ONE
  `generate` call (JSON, validated by the client, so malformed answers are retried). A problem whose
  critique still fails (`RequestFailed` after the client's retries, or unparseable text) falls back to
  step critiques (plain text, one per depth), all such problems again in one call. Mode `step` sends
  every (problem, depth) critique in one call: a step critique sees the ORIGINAL history, which its
  siblings share, so it does not wait for any revision.
- `revise(problems, critiques, generate, check_answers, settings)`: mode `path` sends every path
  revision in one call (`Step k:` lines, validated); unparseable ones fall back to step revision. Mode
  `step` is coordinate descent: per depth d one call for every problem that has depth d, and the
  revision of depth d sees the revised steps before d.

Guards, each reported per problem:
- drift: the revised path's final answer must still equal the ground truth (`check_answers`); a
  drifted revision is retried `drift_retries` times with another temperature and seed (path mode: the
  whole path; step mode: the last step), then the ORIGINAL path is kept and `drift=True`.
- regurgitation: the accepted revision equals the original after whitespace normalisation.
- generic feedback: see `is_generic_feedback`.

The number of `generate` calls depends on the number of depths and on failures, never on the number of
problems. No Dagster imports: `generate` is `LLMClient.generate` or any function of the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import polars as pl

from sigma_assets.data.tables import Column, Table
from sigma_assets.llm.client import RequestFailed
from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams, user
from sigma_assets.method.grading import FinalAnswer, final_answer
from sigma_assets.method.prompts import (
    CRITIC_INSTRUCTIONS,
    parse_path_critique,
    parse_path_revision,
    parse_step_text,
    render_path_critique,
    render_path_revision,
    render_step_critique,
    render_step_revision,
)
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
    # Why the last revision was rejected: wrong_answer | no_answer | runs_on | repetition |
    # several_paragraphs | echo (see `malformed_step`); None if kept.
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
        "Why the last revision was rejected: wrong_answer, no_answer, runs_on, repetition, echo, ...",
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


# ---------------------------------------------------------------------------------------------------------
# Generic feedback
# ---------------------------------------------------------------------------------------------------------

GENERIC_PHRASES = (
    "looks good",
    "looks correct",
    "the step is correct",
    "this step is correct",
    "no changes needed",
    "no improvement needed",
    "well done",
    "good job",
)

# Words that any feedback may use about any step: sharing them with a step shows nothing specific.
_STOPWORD_TEXT = """
    about above after again also answer answers approach because been before being below better between
    both calculation calculations clear clearer clearly compute computed computing correct correctly could
    detail details does doing done each easier effective either explain explained explanation final
    first from good have here improve improved improvement into just keep keeping lack lacks like make
    makes more most much need needs next other overall problem reasoning result same selected should
    sibling siblings similar simple since solution some step steps still such sure than that their them
    then there therefore these they this those thus through very well were what when where which while
    will with without work would your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_FORMATTING_COMMANDS = frozenset(
    {"boxed", "text", "left", "right", "quad", "qquad", "displaystyle", "mathrm"}
)
_TOKEN_RE = re.compile(r"\\([A-Za-z]+)|(\d+(?:\.\d+)?)|([A-Za-z]+)")
_WORD_RE = re.compile(r"[A-Za-z0-9]+")


def content_tokens(text: str) -> set[str]:
    """Numbers, LaTeX commands and content words (4+ letters, not stop words), lower-cased.

    Single letters and short words are left out: "a", "is", "x" say nothing about which step is meant.
    """
    tokens: set[str] = set()
    for command, number, word in _TOKEN_RE.findall(text):
        if command:
            if command.lower() not in _FORMATTING_COMMANDS:
                tokens.add("\\" + command.lower())
        elif number:
            tokens.add(number.rstrip("0").rstrip(".") if "." in number else number)
        else:
            w = word.lower()
            if len(w) >= 4 and w not in _STOPWORDS:
                tokens.add(w[:-1] if w.endswith("s") and len(w) > 4 else w)  # "angles" ~ "angle"
    return tokens


# Feedback that repeats this many words in a row from the critique instructions is an echo.
ECHO_WORDS = 5


def _word_ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


_INSTRUCTION_NGRAMS = frozenset(
    _word_ngrams(_WORD_RE.findall(" ".join(CRITIC_INSTRUCTIONS).lower()), ECHO_WORDS)
)


def echoes_instructions(words: Sequence[str]) -> bool:
    """Whether lower-cased feedback words repeat `ECHO_WORDS` words in a row of the critic's instructions."""
    return not _word_ngrams(words, ECHO_WORDS).isdisjoint(_INSTRUCTION_NGRAMS)


def is_generic_feedback(feedback: str, record: SiblingSet, min_words: int = 6, min_overlap: int = 1) -> bool:
    """Feedback that names no depth-specific content.

    Generic when any of:
    - it has fewer than `min_words` words;
    - it is one of `GENERIC_PHRASES` (lower-cased, punctuation stripped) with at most 3 other words;
    - it shares fewer than `min_overlap` content tokens (`content_tokens`: numbers, LaTeX commands,
      content words) with the selected step and its siblings;
    - it echoes the critic's own instructions (`ECHO_WORDS` words in a row from them), as a weak critic
      does when it continues its prompt instead of answering it.
    """
    words = _WORD_RE.findall(feedback.lower())
    if len(words) < min_words:
        return True
    if echoes_instructions(words):
        return True
    plain = " ".join(words)
    for phrase in GENERIC_PHRASES:
        if phrase in plain and len(words) - len(phrase.split()) <= 3:
            return True
    context = content_tokens(record.selected_step)
    for sibling in record.siblings:
        context |= content_tokens(sibling.step)
    return len(content_tokens(feedback) & context) < min_overlap


# ---------------------------------------------------------------------------------------------------------
# Calling the model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One request on behalf of one problem: its prompt, its exact parser, and where its cost is booked."""

    prompt: str
    max_tokens: int
    parse: Callable[[str], Any]  # raises ValueError on an unusable answer
    stats: CallStats
    json_output: bool = False


@dataclass
class _Caller:
    generate: Generate
    settings: RefinementSettings
    request_key: RequestKey | None = None
    generate_calls: int = 0  # constant in the number of problems when nothing fails

    def request(self, job: _Job, retry: int = 0) -> GenerationRequest:
        """`retry` > 0: another temperature and seed, so neither the model nor the store repeats itself."""
        settings = self.settings
        seed = settings.seed
        if retry:
            seed = (seed or 0) + retry
        params = SamplingParams(
            n=1,
            temperature=settings.temperature if retry == 0 else settings.retry_temperature,
            top_p=settings.top_p,
            max_tokens=job.max_tokens,
            seed=seed,
            json_output=job.json_output,
        )
        return GenerationRequest(messages=user(job.prompt), params=params)

    def run(
        self, jobs: Sequence[_Job], loose: Callable[[str], Any], isolate: bool, retry: int = 0
    ) -> list[Any]:
        """Per job its parsed answer, or (with `isolate`) the exception that left it without one.

        All jobs go in ONE `generate` call, validated by `loose` (one validator serves the whole batch,
        so it cannot know each problem's depths); each answer is then checked by its job's exact parser.
        With `isolate`, a job whose batch failed for good is resent alone (a response store answers the
        good ones of that batch), and one whose answer failed the exact parser is resent alone as a
        retry; without it, failures propagate.
        """
        if not jobs:
            return []
        rows: list[list[Sample]] | None = None
        try:
            rows = self._call(jobs, loose, retry)
        except RequestFailed as exc:
            if not isolate:
                raise
            failure: Exception = exc
        results: list[Any] = []
        for i, job in enumerate(jobs):
            if rows is not None:
                try:
                    results.append(job.parse(rows[i][0].text))
                    continue
                except ValueError as exc:
                    if not isolate:
                        raise
                    # The same request would come back from the store unchanged: resend as a retry.
                    alone: Any = self._alone(job, retry + 1) if self.settings.isolate_failures else exc
            elif len(jobs) > 1 and self.settings.isolate_failures:
                alone = self._alone(job, retry)
            else:
                alone = _answer_failure(failure)
            results.append(alone)
        return results

    def _alone(self, job: _Job, retry: int) -> Any:
        try:
            (row,) = self._call([job], job.parse, retry)
            return job.parse(row[0].text)
        except (RequestFailed, ValueError) as exc:
            return _answer_failure(exc)

    def _call(self, jobs: Sequence[_Job], validate: Callable[[str], Any], retry: int) -> list[list[Sample]]:
        requests = [self.request(job, retry) for job in jobs]
        self.generate_calls += 1
        for job, request in zip(jobs, requests, strict=True):
            job.stats.calls += 1
            if self.request_key is not None:
                job.stats.response_keys.append(self.request_key(request))

        def check(sample: Sample) -> None:
            validate(sample.text)

        rows = self.generate(requests, validate=check)
        for job, row in zip(jobs, rows, strict=True):
            for sample in row:
                job.stats.prompt_tokens += sample.prompt_tokens
                job.stats.completion_tokens += sample.completion_tokens
        return rows


def _answer_failure(exc: Exception) -> Exception:
    """`exc` when the answer was unusable (a fallback may do better); a failure of the server itself is
    raised, since any other request would fail alike and spend more of the retry budget."""
    if isinstance(exc, RequestFailed) and not exc.answer_rejected:
        raise exc
    return exc


# ---------------------------------------------------------------------------------------------------------
# Critique
# ---------------------------------------------------------------------------------------------------------


def critique(
    problems: Sequence[ProblemPaths],
    generate: Generate,
    settings: RefinementSettings = RefinementSettings(),
    request_key: RequestKey | None = None,
) -> list[CritiqueRow]:
    """Feedback for every depth of every problem, in problem then depth order."""
    return _critique(problems, _Caller(generate, settings, request_key))


def _critique(problems: Sequence[ProblemPaths], caller: _Caller) -> list[CritiqueRow]:
    settings = caller.settings
    _check_unique(problems)
    stats = {p.problem_id: CallStats() for p in problems}
    feedback: dict[str, dict[int, str]] = {}
    modes: dict[str, CritiqueMode] = {}
    stepwise: list[ProblemPaths] = list(problems)
    if settings.mode == "path":
        jobs = [
            _Job(
                render_path_critique(p.problem, p.gold_answer, p.sibling_sets),
                settings.critique_path_max_tokens,
                _path_critique_parser([r.depth for r in p.sibling_sets]),
                stats[p.problem_id],
                json_output=True,
            )
            for p in problems
        ]
        results = caller.run(jobs, parse_path_critique, isolate=settings.step_fallback)
        stepwise = []
        for p, result in zip(problems, results, strict=True):
            if isinstance(result, Exception):
                stepwise.append(p)
            else:
                feedback[p.problem_id] = result
                modes[p.problem_id] = "path"
    # Step critiques see the original history (the one their siblings share): no revision to wait for,
    # so every (problem, depth) goes in one call.
    step_mode: CritiqueMode = "step" if settings.mode == "step" else "step-fallback"
    pairs = [(p, r) for p in stepwise for r in p.sibling_sets]
    jobs = [
        _Job(
            render_step_critique(p.problem, p.gold_answer, r),
            settings.critique_step_max_tokens,
            parse_step_text,
            stats[p.problem_id],
        )
        for p, r in pairs
    ]
    for (p, r), text in zip(pairs, caller.run(jobs, parse_step_text, isolate=False), strict=True):
        feedback.setdefault(p.problem_id, {})[r.depth] = text
        modes[p.problem_id] = step_mode
    rows = []
    for p in problems:
        cost = stats[p.problem_id]
        for i, r in enumerate(p.sibling_sets):
            text = feedback[p.problem_id][r.depth]
            booked = cost if i == 0 else CallStats()
            rows.append(
                CritiqueRow(
                    problem_id=p.problem_id,
                    depth=r.depth,
                    feedback=text,
                    generic=is_generic_feedback(
                        text, r, settings.generic_min_words, settings.generic_min_overlap
                    ),
                    mode=modes[p.problem_id],
                    calls=booked.calls,
                    prompt_tokens=booked.prompt_tokens,
                    completion_tokens=booked.completion_tokens,
                    response_keys=tuple(booked.response_keys),
                )
            )
    return rows


def _path_critique_parser(depths: list[int]) -> Callable[[str], dict[int, str]]:
    return lambda text: parse_path_critique(text, depths)


def _path_revision_parser(n_steps: int) -> Callable[[str], list[str]]:
    return lambda text: parse_path_revision(text, n_steps)


def _check_unique(problems: Sequence[ProblemPaths]) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.problem_id in seen:
            raise ValueError(f"problem {p.problem_id} given twice")
        seen.add(p.problem_id)


# ---------------------------------------------------------------------------------------------------------
# Revision
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _State:
    problem: ProblemPaths
    feedback: dict[int, str | None]  # None: the feedback was generic, keep the step
    stats: CallStats
    mode: RevisionMode = "path"
    revised: list[str] = field(default_factory=list)
    attempts: int = 1

    @property
    def n_steps(self) -> int:
        return len(self.problem.sibling_sets)


def revise(
    problems: Sequence[ProblemPaths],
    critiques: Sequence[CritiqueRow],
    generate: Generate,
    check_answers: CheckAnswers,
    settings: RefinementSettings = RefinementSettings(),
    request_key: RequestKey | None = None,
) -> list[RefinedPath]:
    """Rewrite every problem's selected path with its feedback, guarded against drift."""
    return _revise(problems, critiques, _Caller(generate, settings, request_key), check_answers)


def _revise(
    problems: Sequence[ProblemPaths],
    critiques: Sequence[CritiqueRow],
    caller: _Caller,
    check_answers: CheckAnswers,
) -> list[RefinedPath]:
    settings = caller.settings
    _check_unique(problems)
    rows_by_problem: dict[str, list[CritiqueRow]] = {}
    for row in critiques:
        rows_by_problem.setdefault(row.problem_id, []).append(row)
    states = []
    for p in problems:
        rows = rows_by_problem.get(p.problem_id, [])
        # Generic feedback never reaches a revision prompt: that depth is kept as it is.
        feedback = {row.depth: None if row.generic else row.feedback for row in rows}
        missing = [r.depth for r in p.sibling_sets if r.depth not in feedback]
        if missing:
            raise ValueError(f"{p.problem_id}: no feedback for depth(s) {missing}")
        states.append(_State(p, feedback, CallStats()))

    stepwise = states
    if settings.mode == "path":
        jobs = [_path_revision_job(st, settings) for st in states]
        results = caller.run(jobs, parse_path_revision, isolate=settings.step_fallback)
        stepwise = []
        for st, result in zip(states, results, strict=True):
            if isinstance(result, Exception):
                st.mode = "step-fallback"
                stepwise.append(st)
            else:
                st.revised = list(result)
    else:
        for st in states:
            st.mode = "step"
    _revise_stepwise(stepwise, caller)

    # Drift: a revision must end in an explicit answer, closing the text, equal to the gold one. One
    # checker call per round covers every problem (the originals ride along in the first).
    golds = [st.problem.gold_answer for st in states]
    verdicts = check_answers(
        [(g, revision_answer(st.revised).answer) for g, st in zip(golds, states, strict=True)]
        + [(g, path_answer(st.problem.steps).answer) for g, st in zip(golds, states, strict=True)]
    )
    ok = dict(zip((id(st) for st in states), verdicts[: len(states)], strict=True))
    original_ok = verdicts[len(states) :]
    rejected = {id(st): _rejection(st.revised, ok[id(st)]) for st in states}
    for attempt in range(1, settings.drift_retries + 1):
        pending = [st for st in states if not ok[id(st)]]
        if not pending:
            break
        _retry_revisions(pending, caller, attempt)
        again = check_answers(
            [(st.problem.gold_answer, revision_answer(st.revised).answer) for st in pending]
        )
        ok.update(zip((id(st) for st in pending), again, strict=True))
        rejected.update((id(st), _rejection(st.revised, ok[id(st)])) for st in pending)

    critique_cost = {pid: _critique_cost(rows) for pid, rows in rows_by_problem.items()}
    out = []
    for st, orig_ok in zip(states, original_ok, strict=True):
        p = st.problem
        drift = not ok[id(st)]
        refined = p.steps if drift else tuple(st.revised)
        total = CallStats()
        total.add(critique_cost[p.problem_id])
        total.add(st.stats)
        rows = rows_by_problem[p.problem_id]
        out.append(
            RefinedPath(
                problem_id=p.problem_id,
                original_steps=p.steps,
                refined_steps=refined,
                final_answer=path_answer(refined).answer,
                correct=orig_ok if drift else True,
                drift=drift,
                rejected_revision=rejected[id(st)],
                regurgitation=not drift and _same_modulo_whitespace(refined, p.steps),
                generic_feedback=any(row.generic for row in rows),
                generic_depths=sum(row.generic for row in rows),
                critique_mode=rows[0].mode,
                revision_mode=st.mode,
                revision_attempts=st.attempts,
                calls=total.calls,
                prompt_tokens=total.prompt_tokens,
                completion_tokens=total.completion_tokens,
                response_keys=tuple(total.response_keys),
            )
        )
    return out


def _revise_stepwise(states: Sequence[_State], caller: _Caller) -> None:
    """Coordinate descent: per depth ONE call for every problem that has it; depth d sees revised < d."""
    settings = caller.settings
    for st in states:
        st.revised = []
    for depth in range(1, max((st.n_steps for st in states), default=0) + 1):
        for st in states:
            if st.n_steps >= depth and st.feedback[depth] is None:
                st.revised.append(st.problem.steps[depth - 1])
        active = [st for st in states if st.n_steps >= depth and st.feedback[depth] is not None]
        jobs = [_step_revision_job(st, depth, settings) for st in active]
        # A missing `\boxed{}` in a last step is left to the drift guard: one validator serves the batch.
        for st, text in zip(active, caller.run(jobs, parse_step_text, isolate=False), strict=True):
            st.revised.append(text)


def _path_revision_job(st: _State, settings: RefinementSettings) -> _Job:
    return _Job(
        render_path_revision(st.problem.problem, st.problem.steps, st.feedback),
        settings.revision_path_max_tokens,
        _path_revision_parser(st.n_steps),
        st.stats,
    )


def _step_revision_job(st: _State, depth: int, settings: RefinementSettings) -> _Job:
    p = st.problem
    feedback = st.feedback[depth]
    assert feedback is not None, "a step with generic feedback is kept, not revised"
    prompt = render_step_revision(
        p.problem, st.revised[: depth - 1], p.steps[depth - 1], feedback, depth, st.n_steps
    )
    return _Job(prompt, settings.revision_step_max_tokens, parse_step_text, st.stats)


DRIFT_RETRY_BASE = 1000


def _retry_revisions(pending: Sequence[_State], caller: _Caller, attempt: int) -> None:
    """Resample drifted revisions: the whole path (path mode), or the last step (it holds the answer)."""
    settings = caller.settings
    # Parse-failure resends use retry numbers 1, 2, ...: drift retries take their own range, or a retry
    # could hit the very request (and stored answer) that just drifted.
    retry = DRIFT_RETRY_BASE + attempt
    whole = [st for st in pending if st.mode == "path"]
    jobs = [_path_revision_job(st, settings) for st in whole]
    for st, result in zip(
        whole, caller.run(jobs, parse_path_revision, isolate=True, retry=retry), strict=True
    ):
        if not isinstance(result, Exception):  # an unusable retry leaves the drifted revision in place
            st.revised = list(result)
    last = [st for st in pending if st.mode != "path" and st.feedback[st.n_steps] is not None]
    jobs = [_step_revision_job(st, st.n_steps, settings) for st in last]
    for st, result in zip(last, caller.run(jobs, parse_step_text, isolate=True, retry=retry), strict=True):
        if not isinstance(result, Exception):
            st.revised[-1] = result
    for st in pending:
        st.attempts += 1


def path_answer(steps: Sequence[str]) -> FinalAnswer:
    """The explicit final answer that closes a whole path (its steps joined as the policy wrote them)."""
    return final_answer("\n\n".join(steps))


# Section labels of the revision prompts: a revised step that repeats one is echoing its instructions.
_REVISION_LABELS = ("to rewrite:", "feedback on step", "steps so far", "answer with the rewritten step")


def malformed_step(step: str) -> str | None:
    """Why a revised step cannot stand as one step of a path, or None.

    "several_paragraphs": it holds a blank line (a step is one paragraph, as the policy writes them);
    "echo": it repeats the revision prompt's own labels, as a weak reviser does when it continues the
    prompt instead of answering it.
    """
    text = step.strip()
    if "\n\n" in text:
        return "several_paragraphs"
    lowered = text.lower()
    if any(label in lowered for label in _REVISION_LABELS):
        return "echo"
    return None


def revision_answer(steps: Sequence[str]) -> FinalAnswer:
    """`path_answer` of a revision whose every step is well formed; otherwise no answer, and why."""
    for step in steps:
        reason = malformed_step(step)
        if reason is not None:
            return FinalAnswer(None, reason)
    return path_answer(steps)


def _rejection(steps: Sequence[str], correct: bool) -> str | None:
    if correct:
        return None
    verdict = revision_answer(steps)
    return "wrong_answer" if verdict.ok else verdict.reason


def _critique_cost(rows: Sequence[CritiqueRow]) -> CallStats:
    cost = CallStats()
    for row in rows:
        cost.add(CallStats(row.calls, row.prompt_tokens, row.completion_tokens, list(row.response_keys)))
    return cost


def _same_modulo_whitespace(a: Sequence[str], b: Sequence[str]) -> bool:
    return " ".join(a).split() == " ".join(b).split()


# ---------------------------------------------------------------------------------------------------------
# Both stages
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refinement:
    critiques: list[CritiqueRow]
    refined: list[RefinedPath]
    generate_calls: int


def refine_all(
    problems: Sequence[ProblemPaths],
    generate: Generate,
    check_answers: CheckAnswers,
    settings: RefinementSettings = RefinementSettings(),
    request_key: RequestKey | None = None,
) -> Refinement:
    """Critique then revise every problem; also returns the critique rows and the `generate` call count."""
    caller = _Caller(generate, settings, request_key)
    rows = _critique(problems, caller)
    refined = _revise(problems, rows, caller, check_answers)
    return Refinement(rows, refined, caller.generate_calls)


def refine(
    problems: Sequence[ProblemPaths],
    generate: Generate,
    check_answers: CheckAnswers,
    settings: RefinementSettings = RefinementSettings(),
    request_key: RequestKey | None = None,
) -> list[RefinedPath]:
    return refine_all(problems, generate, check_answers, settings, request_key).refined
