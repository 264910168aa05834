"""Critique and revision end to end with scripted critics: batching, guards and the step fallback."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.llm.retry import RequestFailed
from sigma_assets.method.feedback import is_generic_feedback
from sigma_assets.method.refinement import critique, refine, refine_all
from sigma_assets.method.refinement_records import ProblemPaths, RefinementSettings, problem_paths
from sigma_assets.method.siblings import Outcome, Sibling, SiblingSet

PATH = RefinementSettings(mode="path")
STEP = RefinementSettings(mode="step")


def make_problem(i: int) -> ProblemPaths:
    a, b = i + 2, 3
    total, product = a + b, (a + b) * 4
    pid = f"p{i}"
    wrong = Sibling(f"{pid}.s", f"Compute {b} * 4 = {b * 4} first.", -1.0, 2, Outcome("x", "14", False, True))
    sets = (
        SiblingSet(pid, 1, (), "0.1", f"First add: {a} + {b} = {total}.", 1.0, 4, (wrong,)),
        SiblingSet(
            pid,
            2,
            (f"First add: {a} + {b} = {total}.",),
            "0.1.1",
            f"Then {total} * 4 = {product}, so \\boxed{{{product}}}.",
            1.0,
            3,
            (),
        ),
    )
    return ProblemPaths(pid, f"What is ({a} + {b}) * 4?", str(product), sets)


def exact_checker(pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
    return [pred is not None and gold.strip() == pred.strip() for gold, pred in pairs]


def prompt_of(request: GenerationRequest) -> str:
    assert request.messages is not None
    return request.messages[0].content


def original_steps(prompt: str) -> list[str]:
    section = prompt.split("Solution:\n", 1)[1].split("\n\nFeedback:", 1)[0]
    return [s.strip() for s in re.split(r"^Step \d+: ", section, flags=re.MULTILINE) if s.strip()]


def specific_json(prompt: str) -> str:
    depths = [int(d) for d in re.findall(r"^Depth (\d+):", prompt, flags=re.MULTILINE)]
    steps = dict(
        re.findall(r"^Step (\d+): (.*)$", prompt.split("Candidates at each depth")[0], flags=re.MULTILINE)
    )
    entries = [
        {
            "depth": d,
            "feedback": f"Keep the numbers {steps[str(d)]} and state the operation order explicitly.",
        }
        for d in depths
    ]
    return json.dumps({"feedback": entries})


class Script:
    """A scripted critic: answers chosen from the request; `validate` failures become RequestFailed."""

    def __init__(
        self,
        critique_json: Callable[[str], str] = specific_json,
        step_feedback: str = "Say that 4 multiplies the sum, as the sibling computing 12 forgot.",
        revise_path: Callable[[list[str], GenerationRequest], str] | None = None,
        revise_step: Callable[[str, GenerationRequest], str] | None = None,
        fail_json: bool = False,
    ):
        self.critique_json = critique_json
        self.step_feedback = step_feedback
        self.revise_path = revise_path or (
            lambda steps, _: "\n".join(f"Step {i}: Clearly, {s}" for i, s in enumerate(steps, 1))
        )
        self.revise_step = revise_step or (lambda step, _: f"Clearly, {step}")
        self.fail_json = fail_json
        self.calls: list[list[GenerationRequest]] = []

    def answer(self, request: GenerationRequest) -> str:
        prompt = prompt_of(request)
        if request.params.json_output:
            if self.fail_json:
                raise RequestFailed("k" * 16, "invalid: no JSON", 3)
            return self.critique_json(prompt)
        if "Write feedback on the selected step" in prompt:
            return self.step_feedback
        if "Write the revised solution" in prompt:
            return self.revise_path(original_steps(prompt), request)
        step = prompt.split("to rewrite:\n", 1)[1].split("\n\nFeedback on step", 1)[0]
        return self.revise_step(step, request)

    def __call__(
        self, requests: Sequence[GenerationRequest], validate: Callable[[Sample], None] | None = None
    ) -> list[list[Sample]]:
        self.calls.append(list(requests))
        rows = []
        for request in requests:
            sample = Sample(self.answer(request), prompt_tokens=100, completion_tokens=10)
            if validate is not None:
                try:
                    validate(sample)
                except ValueError as exc:  # what LLMClient does once its retries are spent
                    raise RequestFailed("k" * 16, f"invalid: {exc}", 3) from exc
            rows.append([sample])
        return rows


@pytest.mark.parametrize("n_problems", [1, 10])
def test_path_mode_two_calls_whatever_the_number_of_problems(n_problems: int) -> None:
    problems = [make_problem(i) for i in range(n_problems)]
    script = Script()
    result = refine_all(problems, script, exact_checker, PATH)
    assert len(script.calls) == result.generate_calls == 2
    assert [len(batch) for batch in script.calls] == [n_problems, n_problems]
    assert len(result.critiques) == 2 * n_problems
    for p, refined in zip(problems, result.refined, strict=True):
        assert refined.problem_id == p.problem_id
        assert refined.original_steps == p.steps
        assert refined.refined_steps == tuple(f"Clearly, {s}" for s in p.steps)
        assert refined.final_answer == p.gold_answer and refined.correct
        assert not (refined.drift or refined.regurgitation or refined.generic_feedback)
        assert (refined.critique_mode, refined.revision_mode, refined.revision_attempts) == (
            "path",
            "path",
            1,
        )
        assert (refined.calls, refined.prompt_tokens, refined.completion_tokens) == (2, 200, 20)
    assert all(row.mode == "path" and not row.generic for row in result.critiques)


@pytest.mark.parametrize("n_problems", [1, 10])
def test_step_mode_coordinate_descent(n_problems: int) -> None:
    problems = [make_problem(i) for i in range(n_problems)]
    script = Script()
    result = refine_all(problems, script, exact_checker, STEP)
    # one call for every critique (they see the original history), then one revision call per depth
    assert len(script.calls) == 3
    assert [len(batch) for batch in script.calls] == [2 * n_problems, n_problems, n_problems]
    depth2 = prompt_of(script.calls[2][0])
    assert f"Step 1: Clearly, {problems[0].steps[0]}" in depth2  # depth 2 sees the revised depth 1
    for p, refined in zip(problems, result.refined, strict=True):
        assert refined.refined_steps == tuple(f"Clearly, {s}" for s in p.steps)
        assert (refined.critique_mode, refined.revision_mode) == ("step", "step")
        assert refined.correct and not refined.drift
        assert refined.calls == 4  # two critiques, two step revisions
    assert {row.mode for row in result.critiques} == {"step"}


def wrong_answer_path(steps: list[str], request: GenerationRequest) -> str:
    return "\n".join(f"Step {i}: Clearly, {s}" for i, s in enumerate(steps[:-1], 1)) + (
        f"\nStep {len(steps)}: Hence \\boxed{{999}}."
    )


def test_drift_retried_once_then_original_kept_and_flagged() -> None:
    problems = [make_problem(0), make_problem(1)]
    script = Script(revise_path=wrong_answer_path)
    refined = refine(problems, script, exact_checker, PATH)
    assert len(script.calls) == 3  # critique, revision, one retry
    retry = script.calls[2][0].params
    assert retry.temperature == PATH.retry_temperature and retry.seed != script.calls[1][0].params.seed
    for p, r in zip(problems, refined, strict=True):
        assert r.drift and r.revision_attempts == 2
        assert r.refined_steps == p.steps and r.final_answer == p.gold_answer and r.correct
        assert not r.regurgitation


def test_drift_fixed_by_the_retry() -> None:
    def first_try_wrong(steps: list[str], request: GenerationRequest) -> str:
        if request.params.temperature == 0.0:
            return wrong_answer_path(steps, request)
        return "\n".join(f"Step {i}: Better: {s}" for i, s in enumerate(steps, 1))

    p = make_problem(0)
    r = refine([p], Script(revise_path=first_try_wrong), exact_checker, PATH)[0]
    assert not r.drift and r.revision_attempts == 2
    assert r.refined_steps == tuple(f"Better: {s}" for s in p.steps) and r.correct


def test_step_mode_drift_retries_the_last_step() -> None:
    def last_step(step: str, request: GenerationRequest) -> str:
        if "\\boxed" in step and request.params.temperature == 0.0:
            return "Hence \\boxed{999}."
        return f"Clearly, {step}"

    script = Script(revise_step=last_step)
    r = refine([make_problem(0)], script, exact_checker, STEP)[0]
    assert not r.drift and r.revision_attempts == 2
    assert len(script.calls) == 4 and len(script.calls[3]) == 1


def test_regurgitation_flagged() -> None:
    def same(steps: list[str], _: GenerationRequest) -> str:
        return "\n".join(f"Step {i}:   {s.replace(' ', '  ')}\n" for i, s in enumerate(steps, 1))

    r = refine([make_problem(0)], Script(revise_path=same), exact_checker, PATH)[0]
    assert r.regurgitation and not r.drift


def test_generic_feedback_flagged_per_depth_and_problem() -> None:
    def looks_good(prompt: str) -> str:
        return json.dumps(
            {
                "feedback": [
                    {"depth": 1, "feedback": "Looks good."},
                    {
                        "depth": 2,
                        "feedback": "Multiply 5 by 4 before boxing and say why the sum comes first.",
                    },
                ]
            }
        )

    problems = [make_problem(0)]
    rows = critique(problems, Script(critique_json=looks_good), PATH)
    assert [(row.depth, row.generic) for row in rows] == [(1, True), (2, False)]
    r = refine(problems, Script(critique_json=looks_good), exact_checker, PATH)[0]
    assert r.generic_feedback and r.generic_depths == 1


def test_generic_heuristic() -> None:
    record = make_problem(0).sibling_sets[0]  # "First add: 2 + 3 = 5." vs "Compute 3 * 4 = 12 first."
    assert is_generic_feedback("Looks good.", record)
    assert is_generic_feedback("The step is correct and clearly explained, well done overall.", record)
    assert not is_generic_feedback(
        "Good: adding 2 and 3 before multiplying avoids the sibling's error.", record
    )
    assert not is_generic_feedback(
        "Unlike the sibling that computed 12, this keeps the sum 5 intact.", record
    )


def test_fallback_to_step_critique_when_json_never_validates() -> None:
    problems = [make_problem(0), make_problem(1)]
    script = Script(fail_json=True)
    result = refine_all(problems, script, exact_checker, PATH)
    assert {row.mode for row in result.critiques} == {"step-fallback"}
    assert all(r.critique_mode == "step-fallback" and r.revision_mode == "path" for r in result.refined)
    assert all(not r.drift and r.correct for r in result.refined)
    # batched path critique, each problem alone, one step-critique batch, one path revision
    assert [len(batch) for batch in script.calls] == [2, 1, 1, 4, 2]


def test_one_bad_critique_falls_back_alone() -> None:
    problems = [make_problem(i) for i in range(3)]

    def p1_bad(prompt: str) -> str:
        return "I think it is fine." if "(3 + 3)" in prompt else specific_json(prompt)

    result = refine_all(problems, Script(critique_json=p1_bad), exact_checker, PATH)
    assert [r.critique_mode for r in result.refined] == ["path", "step-fallback", "path"]


def test_incomplete_critique_is_retried_alone() -> None:
    def only_depth_1_at_first(prompt: str) -> str:  # passes the batch check, fails the problem's own
        return '{"feedback": [{"depth": 1, "feedback": "Keep 2 + 3 = 5 and say why."}]}'

    script = Script(critique_json=only_depth_1_at_first)
    r = refine([make_problem(0)], script, exact_checker, PATH)[0]
    assert r.critique_mode == "step-fallback"
    assert script.calls[1][0].params.temperature == PATH.retry_temperature  # a resample, not a store hit


def test_fallback_to_step_revision_when_path_revision_unparseable() -> None:
    script = Script(revise_path=lambda steps, _: "I rewrote it nicely.")
    p = make_problem(0)
    r = refine([p], script, exact_checker, PATH)[0]
    assert (r.critique_mode, r.revision_mode) == ("path", "step-fallback")
    assert r.refined_steps == tuple(f"Clearly, {s}" for s in p.steps) and not r.drift


def test_no_fallback_propagates() -> None:
    with pytest.raises(RequestFailed):
        refine(
            [make_problem(0)], Script(fail_json=True), exact_checker, RefinementSettings(step_fallback=False)
        )


def test_problem_paths_groups_sibling_sets_by_problem() -> None:
    p = make_problem(0)
    grouped = problem_paths(reversed(p.sibling_sets), {p.problem_id: (p.problem, p.gold_answer)})
    assert grouped == [p]


# --- strict answers and generic feedback ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_step", "reason"),
    [
        ("Then 8 * 4 = 20.", "no_answer"),  # the right number, but no explicit answer
        ("So \\boxed{20}. Now solve the next problem: what is 3 + 4?", "new_question"),
        ("So \\boxed{21}.", "wrong_answer"),
        ("Then 8 * 4 = 20.\nThen 8 * 4 = 20.\nThen 8 * 4 = 20.\nSo \\boxed{20}.", "repetition"),
    ],
)
def test_a_revision_without_an_explicit_correct_closing_answer_is_drift(last_step: str, reason: str) -> None:
    problem = make_problem(3)  # (5 + 3) * 4 = 32 ... gold 32
    gold = problem.gold_answer
    script = Script(
        revise_step=lambda step, _: last_step.replace("20", gold) if "\\boxed" in step else f"Clearly, {step}"
    )
    if reason == "wrong_answer":
        script.revise_step = lambda step, _: "So \\boxed{21}." if "\\boxed" in step else step
    (refined,) = refine([problem], script, exact_checker, STEP)
    assert refined.drift and refined.rejected_revision == reason
    assert refined.refined_steps == problem.steps  # the original path, which ends in an explicit answer
    assert refined.correct and refined.final_answer == gold
    assert refined.revision_attempts == 2  # one drift retry, rejected for the same reason


def test_an_original_path_without_an_explicit_answer_is_never_marked_correct() -> None:
    base = make_problem(0)
    unfinished = replace(base.sibling_sets[-1], selected_step=f"Then 5 * 4 = {base.gold_answer}.")
    problem = ProblemPaths(
        base.problem_id, base.problem, base.gold_answer, (base.sibling_sets[0], unfinished)
    )
    script = Script(revise_step=lambda step, _: f"Clearly, {step}")
    (refined,) = refine([problem], script, exact_checker, STEP)
    assert refined.drift and not refined.correct and refined.final_answer is None


def test_feedback_that_echoes_the_critic_instructions_is_generic_and_never_reaches_a_revision() -> None:
    echo = (
        "A search tried several candidate steps at every depth; the candidates at one depth share "
        "the same earlier steps."
    )
    problem = make_problem(1)
    assert is_generic_feedback(echo, problem.sibling_sets[0])
    script = Script(step_feedback=echo)
    result = refine_all([problem], script, exact_checker, STEP)
    assert all(row.generic for row in result.critiques)
    revision_prompts = [prompt_of(r) for call in script.calls for r in call if "to rewrite" in prompt_of(r)]
    assert revision_prompts == []  # every depth's feedback was generic: nothing to revise
    (refined,) = result.refined
    assert refined.refined_steps == problem.steps and refined.regurgitation and not refined.drift


def test_path_revision_prompts_never_show_generic_feedback() -> None:
    problem = make_problem(2)
    generic_text = "This step looks good."

    def critique_json(prompt: str) -> str:
        entries = json.loads(specific_json(prompt))["feedback"]
        entries[0]["feedback"] = generic_text
        return json.dumps({"feedback": entries})

    script = Script(critique_json=critique_json)
    refine([problem], script, exact_checker, PATH)
    revisions = [
        prompt_of(r) for call in script.calls for r in call if "Write the revised solution" in prompt_of(r)
    ]
    assert revisions and all(generic_text not in p and "keep this step as it is" in p for p in revisions)


@pytest.mark.parametrize(
    ("revised_first_step", "reason"),
    [
        (
            "of 2, to rewrite:\nEach bag has 3 cookies.\n\nFeedback on step 2:\nThe selected step is",
            "several_paragraphs",
        ),
        ("First add 5 + 3 = 8. Steps so far (already revised): none.", "echo"),
    ],
)
def test_a_revision_that_echoes_its_prompt_is_rejected_and_the_original_kept(
    revised_first_step: str, reason: str
) -> None:
    # Seen from the bundled 135M reviser: the revision prompt's own labels copied into a step.
    problem = make_problem(3)
    script = Script(
        revise_step=lambda step, _: step if "\\boxed" in step else revised_first_step,
    )
    (refined,) = refine([problem], script, exact_checker, STEP)
    assert refined.drift and refined.rejected_revision == reason
    assert refined.refined_steps == problem.steps and refined.correct


def test_a_revision_with_false_arithmetic_is_rejected() -> None:
    from sigma_assets.method.revision_rules import revision_answer

    assert (
        revision_answer(["There are 6 coins.", "5 - 6 = 1, so the answer is 1."]).reason == "false_arithmetic"
    )
    assert revision_answer(["There are 6 coins.", "6 - 5 = 1, so the answer is 1."]).answer == "1"
