"""Markdown previews: structure checked on the source and on HTML rendered by a CommonMark renderer with
raw HTML off, as the Dagster UI renders metadata (a `<br>` or a line break in a table cell is lost)."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from sigma_assets.method.previews import (
    WIDTH,
    render_chat_samples_markdown,
    render_preview_markdown,
    render_problems_markdown,
    render_sibling_sets_markdown,
    render_text_markdown,
    render_tree_markdown,
)
from sigma_assets.method.prompts import describe_outcome
from sigma_assets.method.refinement_records import CritiqueRow, RefinedPath
from sigma_assets.method.search_tree import Node, Tree, selected_path
from sigma_assets.method.siblings import Outcome, Sibling, SiblingSet

MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
LONG = " ".join(f"word{i}" for i in range(80))  # about 500 characters, no line break


def html(source: str) -> str:
    return MARKDOWN.render(source)


def text_of(rendered: str) -> str:
    """The rendered text without tags, whitespace collapsed: what a reader sees, reflowed."""
    return " ".join(re.sub(r"<[^>]+>", " ", rendered).split())


def tree() -> Tree:
    t = Tree("p-1", "What is 2 + 2?", "4")
    t.root.visits, t.root.value_sum = 4, 0.0
    first = Node("0.0", "0", 1, "Add them:\n2 + 2 = 4", visits=3, value_sum=1.0)
    first.children = [
        Node("0.0.0", "0.0", 2, "So the answer is \\boxed{4}.", 1, 1.0, True, "answer", "4", True),
        Node("0.0.1", "0.0", 2, LONG, 2, -2.0, True, "token_limit"),
    ]
    wrong = Node("0.1", "0", 1, "Guess: 2*3*4 <b>x</b>", 1, -1.0, True, "answer", "24", False)
    t.root.children = [first, wrong]
    return t


def test_tree_is_a_nested_list_with_one_bullet_per_node() -> None:
    t = tree()
    source = render_tree_markdown(t)
    nodes = list(t.nodes())
    for node in nodes:
        bullets = [line for line in source.splitlines() if f"`{node.node_id}`" in line]
        assert len(bullets) == 1 and bullets[0].startswith("  " * node.depth + "- "), node.node_id
        assert f"Q {node.q:+.2f}" in bullets[0] and f"{node.visits} visit" in bullets[0]
    rendered = html(source)
    assert rendered.count("<li>") == len(nodes)
    assert rendered.count("<ul>") == 3  # root, depth 1, depth 2 under 0.0


def test_tree_marks_the_selected_path_and_terminals() -> None:
    t = tree()
    path = {n.node_id for n in selected_path(t) or []}
    assert path == {"0", "0.0", "0.0.0"}
    lines = render_tree_markdown(t).splitlines()
    bullets = [line for line in lines if line.lstrip().startswith("- ")]
    starred = {re.findall(r"`([\d.]+)`", line)[0] for line in bullets if "★" in line}
    assert starred == path
    line_of = {n.node_id: next(line for line in lines if f"`{n.node_id}`" in line) for n in t.nodes()}
    assert "✓" in line_of["0.0.0"] and "answer 4 (correct)" in line_of["0.0.0"]
    assert "✗" in line_of["0.0.1"] and "no answer, token limit" in line_of["0.0.1"]
    assert "✗" in line_of["0.1"] and "answer 24 (incorrect)" in line_of["0.1"]
    assert "✓" not in line_of["0.0"] and "✗" not in line_of["0.0"]


def test_tree_step_keeps_its_line_breaks_and_long_lines_wrap() -> None:
    source = render_tree_markdown(tree())
    assert max(len(line) for line in source.splitlines()) <= WIDTH
    rendered = html(source)
    assert "Add them:<br />\n2 + 2 = 4" in rendered
    assert LONG in text_of(rendered)  # wrapped in the source, one paragraph when rendered
    assert "```" not in source and not any(line.lstrip().startswith("|") for line in source.splitlines())


def test_model_text_shows_as_written() -> None:
    rendered = html(render_tree_markdown(tree()))
    assert "Guess: 2*3*4 &lt;b&gt;x&lt;/b&gt;" in rendered and "<em>" not in rendered
    assert "\\boxed{4}" in rendered


def test_tree_truncates() -> None:
    source = render_tree_markdown(tree(), max_nodes=2)
    assert source.splitlines()[-1] == "- … 3 more nodes"
    assert html(source).count("<li>") == 3


def sibling_sets() -> list[SiblingSet]:
    siblings = (
        Sibling("0.1", "Multiply first:\n3 * 4 = 12", -1.0, 2, Outcome("0.1.0", "14", False, True)),
        Sibling("0.2", "Think again.", 0.25, 4, Outcome("0.2.1", "20", True, False)),
        Sibling("0.3", "Hmm.", -0.5, 1, Outcome("0.3", None, None, True)),
    )
    return [
        SiblingSet(
            "p-1", 2, ("First add: 2 + 3 = 5.",), "0.0.0", "Then 5 * 4 = 20.\nSo \\boxed{20}.", 1.0, 3, ()
        ),
        SiblingSet("p-1", 1, (), "0.0", "First add:\n2 + 3 = 5.", 0.5, 4, siblings),
    ]


def test_each_sibling_is_one_bullet_with_its_q_and_outcome() -> None:
    records = sibling_sets()
    source = render_sibling_sets_markdown(records)
    lines = source.splitlines()
    for s in records[1].siblings:
        mine = [line for line in lines if f"Q {s.q:+.2f}" in line]
        assert len(mine) == 1 and mine[0].startswith("- ")
        assert describe_outcome(s.outcome) in mine[0]
    rendered = html(source)
    assert rendered.count("<li>") == 3
    assert "Multiply first:<br />\n3 * 4 = 12" in rendered
    # Depth order, whatever the input order, and the selected step keeps its line breaks.
    assert source.index("Step 1") < source.index("Step 2")
    assert "First add:<br />\n2 + 3 = 5." in rendered
    assert "Then 5 * 4 = 20.<br />\nSo \\boxed{20}." in rendered
    assert "no sibling was explored" in rendered


def refined(drift: bool = False) -> RefinedPath:
    return RefinedPath(
        problem_id="p-1",
        original_steps=("First add:\n2 + 3 = 5.", "Then 5 * 4 = 20.\nSo \\boxed{20}."),
        refined_steps=("Add first:\n2 + 3 = 5.", "Multiply:\n5 * 4 = 20, so \\boxed{20}."),
        final_answer="20",
        correct=True,
        drift=drift,
        rejected_revision="wrong_answer" if drift else None,
        regurgitation=False,
        generic_feedback=False,
        generic_depths=0,
        critique_mode="path",
        revision_mode="path",
        revision_attempts=1,
        calls=2,
        prompt_tokens=200,
        completion_tokens=20,
    )


def test_refinement_preview_reads_per_depth() -> None:
    critiques = [
        CritiqueRow("p-1", 1, "Sibling 1 multiplied first.\nKeep the order explicit.", False, "path"),
        CritiqueRow("p-1", 2, "Fine as is.", True, "path"),
    ]
    source = render_preview_markdown(sibling_sets(), critiques, refined())
    rendered = html(source)
    assert "<h4>Step 1</h4>" in rendered and "<h4>Step 2</h4>" in rendered
    assert rendered.index("<h4>Step 1</h4>") < rendered.index("Sibling 1 multiplied first.")
    assert "Sibling 1 multiplied first.<br />\nKeep the order explicit." in rendered
    assert "Add first:<br />\n2 + 3 = 5." in rendered
    assert "Multiply:<br />\n5 * 4 = 20, so \\boxed{20}." in rendered
    assert "feedback</strong> (generic)" in rendered
    assert "answer: <strong>20</strong> (correct)" in rendered and "flags: none" in rendered
    assert "<table>" not in rendered and "<code>" not in rendered
    for s in sibling_sets()[1].siblings:
        assert len([line for line in source.splitlines() if describe_outcome(s.outcome) in line]) == 1
    assert max(len(line) for line in source.splitlines()) <= WIDTH


def test_refinement_preview_flags_drift_and_missing_feedback() -> None:
    rendered = html(render_preview_markdown(sibling_sets(), [], refined(drift=True)))
    assert "flags: drift (revision rejected: wrong_answer)" in rendered
    assert rendered.count("original kept: drift") == 2 and rendered.count("<em>missing</em>") == 2
    assert "no selected path" in render_preview_markdown([], [])


def test_problems_and_chat_samples_keep_line_breaks() -> None:
    rows = [
        {"problem_id": "p-1", "answer": "\\frac{1}{2}", "problem": "Half of one?\nGive a fraction."},
        {"problem_id": "p-2", "answer": "4", "problem": LONG},
    ]
    source = render_problems_markdown(rows)
    rendered = html(source)
    assert rendered.count("<li>") == 2 and "Half of one?<br />\nGive a fraction." in rendered
    assert "answer <strong>\\frac{1}{2}</strong>" in rendered and LONG in text_of(rendered)
    assert max(len(line) for line in source.splitlines()) <= WIDTH
    sample = {
        "problem_id": "p-1",
        "temperature": "0.7",
        "shard": "shard-000",
        "messages": [
            {"role": "user", "content": "What is 2*3?"},
            {"role": "assistant", "content": "2*3 = 6.\n\nThe answer is 6."},
        ],
    }
    source = render_chat_samples_markdown([sample, sample])
    rendered = html(source)
    assert "```" not in source and rendered.count("<hr />") == 1
    # A blank line between steps is a paragraph break, as in the text.
    assert "<p><em>assistant</em><br />\n2*3 = 6.</p>\n<p>The answer is 6.</p>" in rendered
    assert render_chat_samples_markdown([]) == "_no samples_\n"


def test_prompt_template_keeps_its_lines_without_a_code_block() -> None:
    template = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n\n<|im_start|>user\n{problem}<|im_end|>\n" + LONG
    source = render_text_markdown(template)
    rendered = html(source)
    assert "```" not in source and max(len(line) for line in source.splitlines()) <= WIDTH
    assert "&lt;|im_start|&gt;user<br />\nWhat is 2 + 3?&lt;|im_end|&gt;</p>" in rendered
    assert "&lt;|im_start|&gt;user<br />\n{problem}&lt;|im_end|&gt;<br />" in rendered
    assert LONG in text_of(rendered)  # never cut, however long
