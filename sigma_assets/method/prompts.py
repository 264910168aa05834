"""Critique and revision prompts, and the parsers that turn the critic's answers into data.

Every template is a module-level string, rendered by a small function: read or change the wording here
and nowhere else. Two modes, as in DESIGN.md section 1:

- `path`: one critique call per problem covering every depth (JSON, one entry per depth) and one
  revision call rewriting the whole path (`Step k:` lines).
- `step`: one critique call and one revision call per depth (plain text).

Parsers raise `ValueError` with a precise message: they double as the LLM client's `validate`
callback, so an unusable answer is retried instead of stored. No Dagster imports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from sigma_assets.method.answers import extract_boxed
from sigma_assets.method.siblings import Outcome, SiblingSet

# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------

GOLD_LINE = "Ground-truth answer (for checking only, never to be copied into feedback): {gold}"

SIBLING_EXPLAINER = (
    "A search tried several candidate steps at every depth; the candidates at one depth share the same\n"
    "earlier steps. Q is a candidate's value from -1 to +1: the average outcome of the continuations\n"
    "explored from it (+1 reached the correct answer, -1 a wrong answer or none)."
)

FEEDBACK_GUIDE = (
    "what the selected step lacks or does better than its siblings, which sibling detail is worth\n"
    "keeping, and one concrete improvement. Name the specific content of the step (its numbers,\n"
    "expressions or reasoning); never state the ground-truth answer."
)


def describe_outcome(outcome: Outcome) -> str:
    """`reached answer 7 (incorrect)`, `rollout estimate: answer 7 (correct)`, `no answer`."""
    if outcome.answer is None:
        return "no answer"
    verdict = {True: "correct", False: "incorrect", None: "not graded"}[outcome.correct]
    if outcome.terminal:
        return f"reached answer {outcome.answer} ({verdict})"
    return f"rollout estimate: answer {outcome.answer} ({verdict})"


def numbered_steps(steps: Sequence[str], start: int = 1) -> str:
    """`Step 1: ...` lines, numbered by depth; a multi-line step keeps its own line breaks."""
    return "\n".join(f"Step {start + i}: {step.strip()}" for i, step in enumerate(steps))


def _siblings_block(record: SiblingSet, indent: str = "") -> str:
    if not record.siblings:
        return f"{indent}(no other candidate was explored at this depth)"
    lines = []
    for i, sibling in enumerate(record.siblings, start=1):
        lines.append(
            f"{indent}Sibling {i} (Q = {sibling.q:+.2f}, {sibling.visits} visits; "
            f"best continuation: {describe_outcome(sibling.outcome)}):\n"
            f"{indent}{_indented(sibling.step, indent)}"
        )
    return "\n".join(lines)


def _indented(text: str, indent: str) -> str:
    return text.strip().replace("\n", "\n" + indent)


# ---------------------------------------------------------------------------------------------------------
# Critique, mode `path`
# ---------------------------------------------------------------------------------------------------------

CRITIQUE_PATH_TEMPLATE = """\
You are reviewing a step-by-step solution to a math problem, one depth at a time.

{explainer}

Problem:
{problem}

{gold_line}

Selected solution path (it reaches the correct answer):
{path}

Candidates at each depth:
{depths}

For every depth from 1 to {n_steps}, write feedback on the selected step: {guide}

Answer with JSON only, exactly one entry per depth, in this form:
{{"feedback": [{{"depth": 1, "feedback": "..."}}, {{"depth": 2, "feedback": "..."}}]}}"""

CRITIQUE_PATH_DEPTH = """\
Depth {depth}: selected step {depth} (Q = {q:+.2f}, {visits} visits) against:
{siblings}"""


def render_path_critique(problem: str, gold: str, records: Sequence[SiblingSet]) -> str:
    """One prompt covering every depth of one problem's selected path (records ordered by depth)."""
    steps = [r.selected_step for r in records]
    depths = "\n\n".join(
        CRITIQUE_PATH_DEPTH.format(
            depth=r.depth, q=r.selected_q, visits=r.selected_visits, siblings=_siblings_block(r, "  ")
        )
        for r in records
    )
    return CRITIQUE_PATH_TEMPLATE.format(
        explainer=SIBLING_EXPLAINER,
        problem=problem.strip(),
        gold_line=GOLD_LINE.format(gold=gold),
        path=numbered_steps(steps),
        depths=depths,
        n_steps=len(records),
        guide=FEEDBACK_GUIDE,
    )


# ---------------------------------------------------------------------------------------------------------
# Critique, mode `step`
# ---------------------------------------------------------------------------------------------------------

CRITIQUE_STEP_TEMPLATE = """\
You are reviewing one step of a step-by-step solution to a math problem.

{explainer}

Problem:
{problem}

{gold_line}

Steps so far (shared by every candidate below):
{history}

Selected step {depth} (Q = {q:+.2f}, {visits} visits; on the path that reaches the correct answer):
{selected}

Other candidates for step {depth}:
{siblings}

Write feedback on the selected step in a few sentences: {guide}
Answer with the feedback only, as plain text."""


def render_step_critique(problem: str, gold: str, record: SiblingSet) -> str:
    history = numbered_steps(record.history) if record.history else "(none: this is the first step)"
    return CRITIQUE_STEP_TEMPLATE.format(
        explainer=SIBLING_EXPLAINER,
        problem=problem.strip(),
        gold_line=GOLD_LINE.format(gold=gold),
        history=history,
        depth=record.depth,
        q=record.selected_q,
        visits=record.selected_visits,
        selected=record.selected_step.strip(),
        siblings=_siblings_block(record),
        guide=FEEDBACK_GUIDE,
    )


# The fixed wording a critic is given; feedback that repeats it is an echo, not feedback.
CRITIC_INSTRUCTIONS = (
    SIBLING_EXPLAINER,
    FEEDBACK_GUIDE,
    GOLD_LINE,
    CRITIQUE_PATH_TEMPLATE,
    CRITIQUE_PATH_DEPTH,
    CRITIQUE_STEP_TEMPLATE,
)


# ---------------------------------------------------------------------------------------------------------
# Revision, mode `path`
# ---------------------------------------------------------------------------------------------------------

# `Step k:` lines rather than JSON: steps are full of LaTeX, and `\frac`, `\boxed`, `\neq` inside a JSON
# string are invalid or silently different escapes (`\f`, `\b`, `\n`). Line labels survive any content.
REVISION_PATH_TEMPLATE = """\
Rewrite the step-by-step solution below, applying the feedback given for each step.

Problem:
{problem}

Solution:
{path}

Feedback:
{feedback}

Write the revised solution as exactly {n_steps} steps, one for each original step and in the same order,
each starting on a new line with its label:
Step 1: ...
...
Step {n_steps}: ...
A step may span several lines. Keep what each original step does and improve it as its feedback says.
Step {n_steps} must end with the final answer written as \\boxed{{...}}. Write nothing after it."""


# What a depth without usable feedback says in a path revision (generic feedback is never shown).
KEEP_STEP = "(no specific feedback: keep this step as it is)"


def render_path_revision(problem: str, steps: Sequence[str], feedback: Mapping[int, str | None]) -> str:
    """`feedback` maps depth (1-based) to its feedback; a depth without one (or None) keeps its step."""
    lines = "\n".join(f"Step {d}: {(feedback.get(d) or KEEP_STEP).strip()}" for d in range(1, len(steps) + 1))
    return REVISION_PATH_TEMPLATE.format(
        problem=problem.strip(), path=numbered_steps(steps), feedback=lines, n_steps=len(steps)
    )


# ---------------------------------------------------------------------------------------------------------
# Revision, mode `step`
# ---------------------------------------------------------------------------------------------------------

REVISION_STEP_TEMPLATE = """\
Rewrite one step of a step-by-step solution to a math problem, applying the feedback.

Problem:
{problem}

Steps so far (already revised):
{history}

Step {depth} of {n_steps}, to rewrite:
{step}

Feedback on step {depth}:
{feedback}

Keep what the step does and improve it as the feedback says.{last}
Answer with the rewritten step only: no label, no other steps."""

LAST_STEP_NOTE = " This is the last step: it must end with the final answer written as \\boxed{...}."


def render_step_revision(
    problem: str, history: Sequence[str], step: str, feedback: str, depth: int, n_steps: int
) -> str:
    return REVISION_STEP_TEMPLATE.format(
        problem=problem.strip(),
        history=numbered_steps(history) if history else "(none: this is the first step)",
        depth=depth,
        n_steps=n_steps,
        step=step.strip(),
        feedback=feedback.strip(),
        last=LAST_STEP_NOTE if depth == n_steps else "",
    )


# ---------------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[a-zA-Z]*\n?|```")
# Escapes, consumed pairwise so `\\\\` stays one escaped backslash; an invalid one (LaTeX such as `\sqrt`,
# `\cdot`) gets its backslash doubled.
_ESCAPE_RE = re.compile(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt]|.)', re.DOTALL)
# Control characters that valid JSON escapes turned LaTeX into (`\frac` -> form feed + "rac"): undo them.
_LATEX_CONTROL_RE = re.compile(r"[\x08\x0c]|[\t\r](?=[a-z])")


def _repair_escapes(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        valid = len(m.group(1)) > 1 or m.group(1) in '"\\/bfnrt'
        return m.group(0) if valid else "\\" + m.group(0)

    return _ESCAPE_RE.sub(fix, text)


def _undo_latex_controls(text: str) -> str:
    names = {"\x08": "\\b", "\x0c": "\\f", "\t": "\\t", "\r": "\\r"}
    return _LATEX_CONTROL_RE.sub(lambda m: names[m.group(0)], text)


_NOT_FOUND = object()


def _first_json_value(text: str) -> object:
    """The first JSON object or array in `text` (fences and prose around it ignored), else `_NOT_FOUND`."""
    text = _FENCE_RE.sub("", text)
    decoder = json.JSONDecoder()
    # Repairing first is safe: valid JSON has no invalid escapes, so only broken text changes.
    text = _repair_escapes(text)
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        return value
    return _NOT_FOUND


def _depth_of(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _feedback_entries(value: object) -> list[tuple[int, str]]:
    """(depth, feedback) pairs from `{"feedback": [...]}`, a bare list, or a `{"1": "..."}` mapping."""
    if isinstance(value, dict) and "depth" in value:  # a single entry (or the one intact in cut-off JSON)
        value = [value]
    if isinstance(value, dict) and "feedback" in value:
        value = value["feedback"]
    if isinstance(value, dict):  # {"1": "...", "2": "..."}
        items = list(value.items())
        if not all(_depth_of(k) is not None for k, _ in items):
            raise ValueError(f"expected an object with key 'feedback', got keys {sorted(map(str, value))}")
        value = [{"depth": k, "feedback": v} for k, v in items]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of feedback entries, got {type(value).__name__}")
    entries = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ValueError(f"feedback entry {i} is a {type(entry).__name__}, not an object")
        depth = _depth_of(entry.get("depth"))
        if depth is None:
            raise ValueError(f"feedback entry {i} has no integer 'depth'")
        text = entry.get("feedback")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"feedback for depth {depth} is empty or not a string")
        entries.append((depth, _undo_latex_controls(text).strip()))
    return entries


def parse_path_critique(text: str, depths: Sequence[int] | None = None) -> dict[int, str]:
    """Feedback per depth from a path-mode critique; every depth in `depths` exactly once, no others.

    `depths=None` accepts any depths 1..k (a check that does not know the path, as when one validator
    serves a batch of problems).
    """
    value = _first_json_value(text)
    if value is _NOT_FOUND:
        raise ValueError("no JSON object or array found in the critique")
    entries = _feedback_entries(value)
    expected = set(depths) if depths is not None else set(range(1, len(entries) + 1))
    feedback: dict[int, str] = {}
    for depth, item in entries:
        if depth not in expected:
            raise ValueError(f"feedback for unexpected depth {depth}; expected depths {sorted(expected)}")
        if depth in feedback:
            raise ValueError(f"feedback for depth {depth} given twice")
        feedback[depth] = item
    missing = sorted(expected - feedback.keys())
    if missing:
        raise ValueError(f"missing feedback for depth(s) {', '.join(map(str, missing))}")
    return {d: feedback[d] for d in sorted(feedback)}


# A label at the start of a line: `Step 3:`, `**Step 3.**`, `### Step 3 -`, `- Step 3)`.
_STEP_LABEL_RE = re.compile(r"^[ \t>#*_\-]*Step\s+(\d+)\s*(?:[:.)\-–—]|\*\*:?)[ \t*_]*", re.MULTILINE)


def parse_path_revision(text: str, n_steps: int | None = None) -> list[str]:
    """The `Step 1:` .. `Step n:` texts of a path revision; the last must hold a `\\boxed{}` answer.

    Text before `Step 1` is ignored; text after the last label (a "Final answer" line) belongs to it.
    `n_steps=None` accepts any number of steps.
    """
    labels = list(_STEP_LABEL_RE.finditer(text))
    if not labels:
        raise ValueError("no 'Step k:' labels found in the revision")
    numbers = [int(m.group(1)) for m in labels]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"step labels must run 1, 2, ... in order; found {numbers}")
    if n_steps is not None and len(numbers) != n_steps:
        raise ValueError(f"expected {n_steps} steps, found {len(numbers)}")
    ends = [m.start() for m in labels[1:]] + [len(text)]
    steps = [_FENCE_RE.sub("", text[m.end() : end]).strip() for m, end in zip(labels, ends, strict=True)]
    for number, step in zip(numbers, steps, strict=True):
        if not step:
            raise ValueError(f"step {number} is empty")
    if extract_boxed(steps[-1]) is None:
        raise ValueError(f"the last step (step {len(steps)}) has no final answer in \\boxed{{}}")
    return steps


# A leading label a model may add to a plain answer: `Step 3:`, `Revised step:`, `Feedback:`.
_LEADING_LABEL_RE = re.compile(
    r"^[ \t#*_]*(?:Step\s+\d+|Revised\s+step(?:\s+\d+)?|Rewritten\s+step(?:\s+\d+)?|Feedback)"
    r"\s*[:.)\-–—]?[ \t*_]*",
    re.IGNORECASE,
)


def parse_step_text(text: str, require_answer: bool = False) -> str:
    """A plain-text answer (step feedback or a revised step): stripped, leading label removed, non-empty.

    `require_answer`: the text is a revised last step and must hold a `\\boxed{}` answer.
    """
    cleaned = _LEADING_LABEL_RE.sub("", _FENCE_RE.sub("", text).strip(), count=1).strip()
    if not cleaned:
        raise ValueError("empty answer")
    if require_answer and extract_boxed(cleaned) is None:
        raise ValueError("the revised last step has no final answer in \\boxed{}")
    return cleaned
