"""Markdown previews shown as asset metadata: a search tree, the selected steps with their siblings,
the critiques and revisions, the problems, the SFT samples.

The Dagster UI renders these as GitHub-flavoured markdown without raw HTML (a `<br>` is dropped), and a
table cell cannot hold a line break. So every preview is headings, paragraphs and bullet lists: text
keeps its own line breaks as markdown hard breaks (a trailing backslash), long lines are wrapped in the
source at `WIDTH` (soft breaks, which the UI reflows), and model text is escaped so that `2*3*4` or
`\\boxed{}` show as written. No Dagster imports.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sigma_assets.method.prompts import describe_outcome
from sigma_assets.method.refinement_records import CritiqueRow, RefinedPath
from sigma_assets.method.search_tree import Node, Tree, selected_path
from sigma_assets.method.siblings import SiblingSet

WIDTH = 100  # longest source line of a preview, except a single word longer than that
MAX_CHARS = 600  # longest text shown for one step, feedback or chat turn

_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")
_LINE_START = re.compile(r"^(\s*)([-+=#>]|\d+[.)])")


def escape(text: str) -> str:
    """Markdown-escaped text: emphasis, code, links, HTML and list markers show as written."""
    return _protect_line_start(_SPECIAL.sub(r"\\\1", text))


def _protect_line_start(line: str) -> str:
    """A source line that does not open a list, heading or quote of its own."""
    return _LINE_START.sub(r"\1\\\2", line)


def text_block(text: str, indent: int = 0, max_chars: int | None = MAX_CHARS) -> list[str]:
    """`text` as source lines, indented by `indent` spaces: each of its own lines ends in a hard break,
    a blank line starts a new paragraph, and long lines wrap in the source (soft breaks the UI reflows)."""
    text = text.strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    pad = " " * indent
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        own = [" ".join(line.split()) for line in paragraph.splitlines()]
        own = [line for line in own if line]
        if out and own:
            out.append("")
        for i, line in enumerate(own):
            wrapped = textwrap.wrap(
                _SPECIAL.sub(r"\\\1", line),
                max(WIDTH - indent, 40),
                break_long_words=False,
                break_on_hyphens=False,
            )
            wrapped = [pad + _protect_line_start(part) for part in wrapped]
            if i < len(own) - 1:
                wrapped[-1] += "\\"
            out += wrapped
    return out or [pad + "(empty)"]


def render_text_markdown(text: str) -> str:
    """Plain text (e.g. a prompt template) that keeps its line breaks and wraps, unlike a code block."""
    return "\n".join(text_block(text, max_chars=None)) + "\n"


def _item(head: str, body: str | None, indent: int) -> list[str]:
    """One bullet: `head` on the bullet's line, `body` as continuation lines inside the same item."""
    pad = " " * (indent + 2)
    lines = textwrap.wrap(
        head,
        WIDTH,
        initial_indent=" " * indent + "- ",
        subsequent_indent=pad,
        break_long_words=False,
        break_on_hyphens=False,
    )
    # A wrapped line must not start a list or a heading of its own.
    lines[1:] = [_protect_line_start(line) for line in lines[1:]]
    if body is not None:
        lines[-1] += "\\"
        lines += text_block(body, indent + 2)
    return lines


def _q(value: float) -> str:
    return f"Q {value:+.2f}"


def _visits(n: int) -> str:
    return f"{n} visit" if n == 1 else f"{n} visits"


# --- mcts_trees ------------------------------------------------------------------------------------------


def _node_head(node: Node, on_path: bool) -> str:
    marks = ("★ " if on_path else "") + (("✓ " if node.correct else "✗ ") if node.terminal else "")
    label = "root" if node.parent_id is None else f"depth {node.depth}"
    parts = [f"{marks}**{label}** `{node.node_id}`", _visits(node.visits), _q(node.q)]
    if node.samples > 1:
        parts.append(f"{node.samples} samples merged")
    if node.terminal:
        answer = f"answer {escape(node.answer)}" if node.answer is not None else "no answer"
        verdict = " (correct)" if node.correct else " (incorrect)" if node.answer is not None else ""
        reason = node.terminal_reason if node.terminal_reason not in (None, "answer") else ""
        parts.append(answer + verdict + (f", {reason.replace('_', ' ')}" if reason else ""))
    return " · ".join(parts)


def render_tree_markdown(tree: Tree, max_nodes: int = 40) -> str:
    """The tree as a nested bullet list, one bullet per node (depth first, children in order): depth,
    visits, Q, ★ on the selected path, ✓/✗ and why on terminals, then the step with its line breaks."""
    path = selected_path(tree)
    on_path = {n.node_id for n in path} if path else set()
    nodes = list(tree.nodes())
    lines = [
        f"**{escape(tree.problem_id)}** — "
        + ("selected path found (★)" if path else "no correct leaf")
        + f" · {len(nodes)} nodes",
        "",
    ]
    for node in nodes[:max_nodes]:
        body = None if node.parent_id is None else node.step
        lines += _item(_node_head(node, node.node_id in on_path), body, 2 * node.depth)
    if len(nodes) > max_nodes:
        lines.append(f"- … {len(nodes) - max_nodes} more nodes")
    return "\n".join(lines) + "\n"


# --- sibling_sets, critiques, refined_paths -------------------------------------------------------------


def _depth_section(record: SiblingSet) -> list[str]:
    lines = [
        f"#### Step {record.depth}",
        "",
        f"**selected** · {_q(record.selected_q)} · {_visits(record.selected_visits)}\\",
        *text_block(record.selected_step),
        "",
    ]
    if record.siblings:
        for i, s in enumerate(record.siblings, start=1):
            outcome = escape(describe_outcome(s.outcome))
            head = f"**sibling {i}** · {_q(s.q)} · {_visits(s.visits)} · {outcome}"
            lines += _item(head, s.step, 0)
    else:
        lines.append("_no sibling was explored at this depth_")
    lines.append("")
    return lines


def render_sibling_sets_markdown(sibling_sets: Sequence[SiblingSet]) -> str:
    """One problem's selected path: per depth the selected step, then its siblings, one bullet each with
    its Q and the outcome of its best continuation."""
    if not sibling_sets:
        return "_no selected path_\n"
    lines = [f"### {escape(sibling_sets[0].problem_id)}", ""]
    for record in sorted(sibling_sets, key=lambda s: s.depth):
        lines += _depth_section(record)
    return "\n".join(lines)


def render_preview_markdown(
    sibling_sets: Sequence[SiblingSet],
    critiques: Sequence[CritiqueRow],
    refined: RefinedPath | None = None,
) -> str:
    """One problem, per depth: the selected step, its siblings, the feedback, the revision."""
    if not sibling_sets:
        return "_no selected path_\n"
    problem_id = sibling_sets[0].problem_id
    feedback = {row.depth: row for row in critiques if row.problem_id == problem_id}
    lines = [f"### {escape(problem_id)}", ""]
    if refined is not None:
        flags = [
            name
            for name, on in (
                ("drift", refined.drift),
                ("regurgitation", refined.regurgitation),
                ("generic feedback", refined.generic_feedback),
            )
            if on
        ]
        answer = escape(refined.final_answer) if refined.final_answer is not None else "none"
        lines += [
            f"- answer: **{answer}** ({'correct' if refined.correct else 'incorrect'})",
            f"- flags: {', '.join(flags) or 'none'}"
            + (f" (revision rejected: {refined.rejected_revision})" if refined.rejected_revision else ""),
            f"- critique: {refined.critique_mode} · revision: {refined.revision_mode} · "
            f"calls: {refined.calls} · tokens: {refined.prompt_tokens} + {refined.completion_tokens}",
            "",
        ]
    for record in sorted(sibling_sets, key=lambda s: s.depth):
        lines += _depth_section(record)
        row = feedback.get(record.depth)
        if row is None:
            lines += ["**feedback**: _missing_", ""]
        else:
            lines += [f"**feedback**{' (generic)' if row.generic else ''}\\", *text_block(row.feedback), ""]
        if refined is not None and record.depth <= len(refined.refined_steps):
            kept = " (original kept: drift)" if refined.drift else ""
            lines += [f"**revision**{kept}\\", *text_block(refined.refined_steps[record.depth - 1]), ""]
    return "\n".join(lines)


# --- raw_problems, sft_dataset ---------------------------------------------------------------------------


def render_problems_markdown(rows: Iterable[Mapping[str, Any]]) -> str:
    """Problems as bullets: id and gold answer on the bullet's line, the statement below it."""
    lines: list[str] = []
    for row in rows:
        head = f"**{escape(str(row['problem_id']))}** · answer **{escape(str(row['answer']))}**"
        lines += _item(head, str(row["problem"]), 0)
    return "\n".join(lines) + "\n" if lines else "_no problems_\n"


def render_chat_samples_markdown(rows: Iterable[Mapping[str, Any]]) -> str:
    """SFT samples: per sample its id, then each turn's role and text with its line breaks."""
    parts: list[str] = []
    for row in rows:
        lines = [f"**{escape(str(row['problem_id']))}** · T={row['temperature']} · {row['shard']}", ""]
        for message in row["messages"]:
            lines += [f"_{message['role']}_\\", *text_block(str(message["content"])), ""]
        parts.append("\n".join(lines))
    return "\n---\n\n".join(parts) if parts else "_no samples_\n"
