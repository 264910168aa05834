"""When a new search step ends its path, and why; how a rollout is scored.

Only an explicit final answer can be correct. A new step is terminal when
  - it states a final answer (`answers.final_answer`: a `\\boxed{}` or "The answer is ..."; the rest of its
    sentence and a remark may follow): valued +1 if it equals the ground truth, else -1;
  - it states one and then goes wrong (`new_question`, `other_answer`, `garbage`), or the path loops
    (`repetition`: a passage said again with nothing new, never markup or a restated formula): -1;
  - it states an equation between plain numbers that does not hold, e.g. "5 - 6 = 1"
    (`false_arithmetic`): -1, whatever answer it reaches;
  - it ends without one: the model ended the text (`end_of_text`), the step was cut at the token limit
    (`token_limit`) or it sits at `max_depth` (`depth_limit`): -1, with no answer. Nothing is graded
    by guessing the last number of an unfinished text.
A leaf whose prompt no longer fits the model's context becomes a -1 terminal (`context_overflow`). A
non-terminal leaf is valued by one rollout, scored by the same rule. Identical sibling steps (after
whitespace normalisation) are merged into one child that counts its `samples`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sigma_assets.llm.generation import Sample
from sigma_assets.method.answers import final_answer
from sigma_assets.method.search_tree import Node


def cut_step(text: str, delimiter: str) -> str:
    # The backend should already stop at the delimiter; cut again in case one did not.
    return text.split(delimiter, 1)[0].strip()


def same_step(a: str, b: str) -> bool:
    return a.split() == b.split()


# Verdicts of `final_answer` that end a step: an answer (right or wrong), and what goes wrong with one.
_ANSWERED = ("answer", "false_arithmetic", "new_question", "other_answer", "garbage")


def classify_step(
    child: Node, sample: Sample, history: Sequence[str], max_depth: int, delimiter: str = "\n\n"
) -> None:
    """Decide whether a new step is terminal, and why (module docstring); set its answer if it has one.

    The rule reads the whole path: it loops across its steps, and an answer marker may be a step of its
    own with the answer in the next (PRM800K's "# Answer", then "216"). No earlier step stated an answer
    (it would have been terminal), so an answer the path states is this step's."""
    path = delimiter.join([*history, child.step])
    verdict = final_answer(path)
    reason: str | None = None
    if sample.finish_reason == "length":
        reason = "token_limit"  # cut mid-step: whatever it says is unfinished
    elif verdict.reason == "repetition":
        reason = "repetition"  # the path loops, across its steps or within this one
    elif verdict.reason in _ANSWERED:
        reason = verdict.reason
    elif not child.step or sample.finish_reason == "end":
        reason = "end_of_text"
    elif child.depth >= max_depth:
        reason = "depth_limit"
    child.terminal = reason is not None
    child.terminal_reason = reason
    child.answer = verdict.answer if reason == "answer" else None


@dataclass(frozen=True)
class RolloutOutcome:
    answer: str | None
    reason: str


def rollout_outcome(sample: Sample | None, steps: Sequence[str], delimiter: str) -> RolloutOutcome:
    """A rollout is scored like a path: only an explicit answer that closes the whole text counts."""
    if sample is None or sample.finish_reason == "context_overflow":
        return RolloutOutcome(None, "context_overflow")
    if sample.finish_reason == "length":
        return RolloutOutcome(None, "token_limit")
    verdict = final_answer(delimiter.join([*steps, sample.text]))
    return RolloutOutcome(verdict.answer, verdict.reason)
