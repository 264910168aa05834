"""Critique and revision prompts show what the critic needs; parsers accept good answers, reject bad ones."""

from __future__ import annotations

import pytest

from sigma_assets.method.prompts import (
    parse_path_critique,
    parse_path_revision,
    parse_step_text,
    render_path_critique,
    render_path_revision,
    render_step_critique,
    render_step_revision,
)
from sigma_assets.method.siblings import Outcome, Sibling, SiblingSet

PROBLEM = "What is (2 + 3) * 4?"
GOLD = "20"


def sibling_sets() -> list[SiblingSet]:
    wrong = Sibling("0.2.1", "Compute 3 * 4 = 12 first.", -1.0, 2, Outcome("0.2.1.1", "14", False, True))
    rollout = Sibling("0.1.3", "Add 2 and 3 to get 6.", -0.5, 2, Outcome("0.1.3", "24", False, False))
    unanswered = Sibling("0.1.2", "Let me think.", -1.0, 1, Outcome("0.1.2", None, None, True))
    return [
        SiblingSet("p1", 1, (), "0.1.1", "First add: 2 + 3 = 5.", 1.0, 4, (rollout, unanswered)),
        SiblingSet(
            "p1",
            2,
            ("First add: 2 + 3 = 5.",),
            "0.1.1.1",
            "Then 5 * 4 = 20, so \\boxed{20}.",
            1.0,
            3,
            (wrong,),
        ),
    ]


def test_path_critique_prompt_shows_path_siblings_outcomes_and_gold_for_checking() -> None:
    prompt = render_path_critique(PROBLEM, GOLD, sibling_sets())
    assert PROBLEM in prompt
    assert "Step 1: First add: 2 + 3 = 5." in prompt
    assert "Step 2: Then 5 * 4 = 20, so \\boxed{20}." in prompt
    assert "Depth 1" in prompt and "Depth 2" in prompt
    assert "Q = -0.50" in prompt and "rollout estimate: answer 24 (incorrect)" in prompt
    assert "no answer" in prompt
    assert "reached answer 14 (incorrect)" in prompt
    assert "Ground-truth answer (for checking only, never to be copied into feedback): 20" in prompt
    assert '{"feedback": [{"depth": 1' in prompt


def test_step_critique_prompt_shows_history_selected_step_and_siblings() -> None:
    record = sibling_sets()[1]
    prompt = render_step_critique(PROBLEM, GOLD, record)
    assert "Step 1: First add: 2 + 3 = 5." in prompt
    assert "Selected step 2" in prompt and "Then 5 * 4 = 20" in prompt
    assert "Compute 3 * 4 = 12 first." in prompt and "reached answer 14 (incorrect)" in prompt
    assert "for checking only" in prompt
    assert "JSON" not in prompt
    first = render_step_critique(PROBLEM, GOLD, sibling_sets()[0])
    assert "(none: this is the first step)" in first


def test_revision_prompts() -> None:
    steps = [r.selected_step for r in sibling_sets()]
    prompt = render_path_revision(PROBLEM, steps, {1: "Name the sum 5.", 2: "Say why 20."})
    assert "Step 1: First add" in prompt and "Step 2: Say why 20." in prompt
    assert "exactly 2 steps" in prompt and "\\boxed{...}" in prompt
    assert "Ground-truth" not in prompt  # the gold answer is not handed to the reviser
    step = render_step_revision(PROBLEM, ["Revised one."], steps[1], "Say why 20.", 2, 2)
    assert "Step 1: Revised one." in step and "Step 2 of 2" in step and "\\boxed{...}" in step
    assert "\\boxed" not in render_step_revision(PROBLEM, [], steps[0], "x", 1, 2)


def test_parse_path_critique_accepts_object_list_fences_and_latex() -> None:
    text = (
        'Here you go:\n```json\n{"feedback": [{"depth": 1, "feedback": "Keep \\frac{1}{2}."}, '
        '{"depth": 2, "feedback": "Use \\sqrt{5}."}]}\n```'
    )
    assert parse_path_critique(text, [1, 2]) == {1: "Keep \\frac{1}{2}.", 2: "Use \\sqrt{5}."}
    bare = '[{"depth": "2", "feedback": "b"}, {"depth": 1, "feedback": "a"}]'
    assert parse_path_critique(bare, [1, 2]) == {1: "a", 2: "b"}
    assert parse_path_critique('{"feedback": {"1": "a"}}', [1]) == {1: "a"}
    assert parse_path_critique(bare) == {1: "a", 2: "b"}  # depths unknown: any 1..k


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("The step is fine.", "no JSON object or array found"),
        ('{"feedback": [{"depth": 1, "feedback": "a"}]}', "missing feedback for depth(s) 2"),
        (
            '{"feedback": [{"depth": 1, "feedback": "a"}, {"depth": 3, "feedback": "c"}]}',
            "unexpected depth 3",
        ),
        (
            '{"feedback": [{"depth": 1, "feedback": "a"}, {"depth": 1, "feedback": "b"}]}',
            "depth 1 given twice",
        ),
        ('{"feedback": [{"depth": 1, "feedback": ""}, {"depth": 2, "feedback": "b"}]}', "depth 1 is empty"),
        ('{"feedback": [{"feedback": "a"}]}', "no integer 'depth'"),
        ('{"feedback": "all good"}', "expected a list of feedback entries"),
    ],
)
def test_parse_path_critique_rejects_precisely(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_path_critique(text, [1, 2])


def test_parse_path_revision() -> None:
    text = (
        "Sure.\n**Step 1:** Add: 2 + 3 = 5.\nStill step one.\n"
        "Step 2: Multiply: 5 * 4 = 20.\nFinal answer: \\boxed{20}"
    )
    steps = parse_path_revision(text, 2)
    assert steps == ["Add: 2 + 3 = 5.\nStill step one.", "Multiply: 5 * 4 = 20.\nFinal answer: \\boxed{20}"]
    assert parse_path_revision(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Add them, then multiply: \\boxed{20}", "no 'Step k:' labels"),
        ("Step 1: a\nStep 3: \\boxed{20}", r"must run 1, 2, ... in order; found \[1, 3\]"),
        ("Step 1: a\nStep 2: b\nStep 3: \\boxed{20}", "expected 2 steps, found 3"),
        ("Step 1: a\nStep 2: so it is 20", r"last step \(step 2\) has no final answer"),
        ("Step 1:\nStep 2: \\boxed{20}", "step 1 is empty"),
    ],
)
def test_parse_path_revision_rejects_precisely(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_path_revision(text, 2)


def test_parse_step_text() -> None:
    assert parse_step_text("  Step 2: Multiply to get 20.\n") == "Multiply to get 20."
    assert parse_step_text("Revised step: x = 5") == "x = 5"
    assert parse_step_text("So \\boxed{20}.", require_answer=True) == "So \\boxed{20}."
    with pytest.raises(ValueError, match="empty answer"):
        parse_step_text("   \n")
    with pytest.raises(ValueError, match="no final answer"):
        parse_step_text("So 20.", require_answer=True)
