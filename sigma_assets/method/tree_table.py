"""MCTS trees as tables: one row per node (`mcts_trees`), and the trees rebuilt from those rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from sigma_assets.data.tables import Column, Table
from sigma_assets.method.search_tree import ROOT_ID, Node, Tree, node_id_key, selected_path

TREE_COLUMNS: Table = {
    "problem_id": Column(pl.String, "The problem this tree searched."),
    "node_id": Column(pl.String, "Dotted path from the root: 0.2.1 is child 1 of child 2 of the root."),
    "parent_id": Column(pl.String, "The parent's node_id (null for the root)."),
    "depth": Column(pl.Int64, "Steps from the root (the root holds no step)."),
    "step": Column(pl.String, "One reasoning step: the policy's text up to the step delimiter."),
    "visits": Column(pl.Int64, "Times the search backed a value up through this node."),
    "value": Column(pl.Float64, "Sum of the values backed up through this node."),
    "q": Column(pl.Float64, "value / visits, from -1 to +1."),
    "terminal": Column(pl.Boolean, "No children will be grown: an answer, an unfinished end, or a limit."),
    "terminal_reason": Column(
        pl.String,
        "Why it is terminal (answer, new_question, repetition, false_arithmetic, ...); null if open.",
    ),
    "answer": Column(
        pl.String, "The explicit final answer the step states (boxed or 'The answer is'); null otherwise."
    ),
    "correct": Column(pl.Boolean, "Terminal only: the answer equals the gold one (math-verify, gold first)."),
    "rollout_answer": Column(
        pl.String, "Explicit answer of the rollout that valued this node when it was new; null if none."
    ),
    "rollout_correct": Column(pl.Boolean, "Whether that rollout's answer equals the gold one."),
    "samples": Column(
        pl.Int64, "Sampled steps merged into this node (identical after whitespace normalisation)."
    ),
    "on_selected_path": Column(pl.Boolean, "On the path from the root to the selected correct leaf."),
}


def tree_rows(tree: Tree) -> list[dict[str, Any]]:
    """One row per node, root included (step ""), in depth-first child order."""
    path = selected_path(tree)
    on_path = {n.node_id for n in path} if path else set()
    return [
        {
            "problem_id": tree.problem_id,
            "node_id": n.node_id,
            "parent_id": n.parent_id,
            "depth": n.depth,
            "step": n.step,
            "visits": n.visits,
            "value": float(n.value_sum),
            "q": float(n.q),
            "terminal": n.terminal,
            "terminal_reason": n.terminal_reason,
            "answer": n.answer,
            "correct": n.correct,
            "rollout_answer": n.rollout_answer,
            "rollout_correct": n.rollout_correct,
            "samples": n.samples,
            "on_selected_path": n.node_id in on_path,
        }
        for n in tree.nodes()
    ]


def tree_from_rows(rows: Sequence[Mapping[str, Any]], problem: str = "", gold_answer: str = "") -> Tree:
    """Rebuild one problem's tree from `tree_rows` output (e.g. a parquet table's `to_dicts()`)."""
    if not rows:
        raise ValueError("no rows to rebuild a tree from")
    problem_ids = {str(r["problem_id"]) for r in rows}
    if len(problem_ids) != 1:
        raise ValueError(f"rows span several problems: {sorted(problem_ids)}")
    nodes: dict[str, Node] = {}
    for r in sorted(rows, key=lambda r: node_id_key(str(r["node_id"]))):
        node = Node(
            node_id=str(r["node_id"]),
            parent_id=None if r["parent_id"] is None else str(r["parent_id"]),
            depth=int(r["depth"]),
            step=r["step"] or "",
            visits=int(r["visits"]),
            value_sum=float(r["value"]),
            terminal=bool(r["terminal"]),
            terminal_reason=r.get("terminal_reason"),
            answer=r.get("answer"),
            correct=r.get("correct"),
            rollout_answer=r.get("rollout_answer"),
            rollout_correct=r.get("rollout_correct"),
            samples=int(r.get("samples") or 1),
        )
        nodes[node.node_id] = node
        if node.parent_id is not None:
            # Sorted ids put every parent before its children, and children in index order.
            nodes[node.parent_id].children.append(node)
    if ROOT_ID not in nodes:
        raise ValueError("rows have no root node")
    return Tree(problem_ids.pop(), problem, gold_answer, root=nodes[ROOT_ID])


def trees_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[Tree]:
    """Rebuild every tree in a multi-problem table, in first-seen problem order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(str(r["problem_id"]), []).append(r)
    return [tree_from_rows(group) for group in grouped.values()]
