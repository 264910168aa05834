"""What a revision must be to replace the original path: well-formed steps, closed by an explicit final
answer (the strict rule of `answers.final_answer`); otherwise it is rejected, and why."""

from __future__ import annotations

from collections.abc import Sequence

from sigma_assets.method.answers import FinalAnswer, final_answer


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


def rejection_reason(steps: Sequence[str], correct: bool) -> str | None:
    if correct:
        return None
    verdict = revision_answer(steps)
    return "wrong_answer" if verdict.ok else verdict.reason
