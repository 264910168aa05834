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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams, user
from sigma_assets.llm.retry import RequestFailed
from sigma_assets.method.feedback import is_generic_feedback
from sigma_assets.method.prompts import (
    parse_path_critique,
    parse_path_revision,
    parse_step_text,
    render_path_critique,
    render_path_revision,
    render_step_critique,
    render_step_revision,
)
from sigma_assets.method.refinement_records import (
    CallStats,
    CheckAnswers,
    CritiqueMode,
    CritiqueRow,
    Generate,
    ProblemPaths,
    RefinedPath,
    RefinementSettings,
    RequestKey,
    RevisionMode,
)
from sigma_assets.method.revision_rules import path_answer, rejection_reason, revision_answer

DEFAULT_SETTINGS = RefinementSettings()

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
    settings: RefinementSettings = DEFAULT_SETTINGS,
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
    settings: RefinementSettings = DEFAULT_SETTINGS,
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
    rejected = {id(st): rejection_reason(st.revised, ok[id(st)]) for st in states}
    for attempt in range(1, settings.drift_retries + 1):
        pending = [st for st in states if not ok[id(st)]]
        if not pending:
            break
        _retry_revisions(pending, caller, attempt)
        again = check_answers(
            [(st.problem.gold_answer, revision_answer(st.revised).answer) for st in pending]
        )
        ok.update(zip((id(st) for st in pending), again, strict=True))
        rejected.update((id(st), rejection_reason(st.revised, ok[id(st)])) for st in pending)

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
    settings: RefinementSettings = DEFAULT_SETTINGS,
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
    settings: RefinementSettings = DEFAULT_SETTINGS,
    request_key: RequestKey | None = None,
) -> list[RefinedPath]:
    return refine_all(problems, generate, check_answers, settings, request_key).refined
