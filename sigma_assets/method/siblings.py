"""Selected step vs its siblings: what the critique model compares at every depth of the selected path.

For each depth d >= 1 of a tree's selected path (see `search_tree.selected_path`), the siblings are the other
children of the selected node's parent: they share the same history (the selected steps before d).
Each sibling is shown with its step, its value and the outcome of its best continuation: its best-Q
descendant leaf, or itself when it is a leaf.

No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from sigma_assets.data.tables import Column, Table
from sigma_assets.method.search_tree import Node, Tree, node_id_key, selected_path
from sigma_assets.method.tree_table import trees_from_rows


@dataclass(frozen=True)
class Outcome:
    """Where a sibling's best continuation ended up."""

    leaf_id: str
    answer: str | None  # a terminal's answer, or a non-terminal leaf's rollout answer
    correct: bool | None
    terminal: bool  # False: the leaf was only valued by a rollout (an estimate, not a reached answer)


@dataclass(frozen=True)
class Sibling:
    node_id: str
    step: str
    q: float
    visits: int
    outcome: Outcome


@dataclass(frozen=True)
class SiblingSet:
    problem_id: str
    depth: int
    history: tuple[str, ...]
    selected_node_id: str
    selected_step: str
    selected_q: float
    selected_visits: int
    siblings: tuple[Sibling, ...]

    def to_row(self) -> dict[str, Any]:
        """A parquet-friendly row (history a list of strings, siblings a list of structs)."""
        row = asdict(self)
        row["history"] = list(self.history)
        row["siblings"] = [asdict(s) for s in self.siblings]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SiblingSet:
        """The inverse of `to_row`, e.g. for a row of the stored `sibling_sets` table."""
        siblings = tuple(
            Sibling(
                node_id=s["node_id"],
                step=s["step"],
                q=s["q"],
                visits=s["visits"],
                outcome=Outcome(**s["outcome"]),
            )
            for s in row["siblings"]
        )
        fields = {k: row[k] for k in ("problem_id", "depth", "selected_node_id", "selected_step")}
        return cls(
            **fields,
            history=tuple(row["history"]),
            selected_q=row["selected_q"],
            selected_visits=row["selected_visits"],
            siblings=siblings,
        )


_OUTCOME = pl.Struct(
    {"leaf_id": pl.String, "answer": pl.String, "correct": pl.Boolean, "terminal": pl.Boolean}
)
_SIBLING = pl.Struct(
    {"node_id": pl.String, "step": pl.String, "q": pl.Float64, "visits": pl.Int64, "outcome": _OUTCOME}
)
SIBLING_COLUMNS: Table = {
    "problem_id": Column(pl.String, "The problem."),
    "depth": Column(pl.Int64, "Depth of the selected step on the selected path (1 = first step)."),
    "history": Column(
        pl.List(pl.String),
        "The selected steps before this depth, shared with the siblings.",
    ),
    "selected_node_id": Column(pl.String, "The selected step's node."),
    "selected_step": Column(pl.String, "The selected step's text."),
    "selected_q": Column(pl.Float64, "The selected step's Q."),
    "selected_visits": Column(pl.Int64, "The selected step's visits."),
    "siblings": Column(
        pl.List(_SIBLING),
        "Other children of the parent: step, Q, visits, outcome of the best continuation.",
    ),
}


def _leaves(node: Node) -> list[Node]:
    if not node.children:
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


def best_continuation(node: Node) -> Outcome:
    """The best-Q leaf under `node` (itself if a leaf).

    Ties: a terminal beats a rollout-valued leaf (a reached answer beats an estimate), then more
    visits, then the smallest node id.
    """
    leaf = min(_leaves(node), key=lambda n: (-n.q, not n.terminal, -n.visits, node_id_key(n.node_id)))
    if leaf.terminal:
        return Outcome(leaf.node_id, leaf.answer, leaf.correct, True)
    return Outcome(leaf.node_id, leaf.rollout_answer, leaf.rollout_correct, False)


def sibling_sets(tree: Tree) -> list[SiblingSet]:
    """One record per depth of the selected path; [] when the tree has no selected path."""
    path = selected_path(tree)
    if path is None:
        return []
    records = []
    for depth in range(1, len(path)):
        parent, chosen = path[depth - 1], path[depth]
        siblings = tuple(
            Sibling(c.node_id, c.step, c.q, c.visits, best_continuation(c))
            for c in parent.children
            if c is not chosen
        )
        records.append(
            SiblingSet(
                problem_id=tree.problem_id,
                depth=depth,
                history=tuple(n.step for n in path[1:depth]),
                selected_node_id=chosen.node_id,
                selected_step=chosen.step,
                selected_q=chosen.q,
                selected_visits=chosen.visits,
                siblings=siblings,
            )
        )
    return records


def sibling_sets_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[SiblingSet]:
    """Sibling sets of every tree in a stored `tree_rows` table (several problems allowed)."""
    return [record for tree in trees_from_rows(rows) for record in sibling_sets(tree)]


@dataclass(frozen=True)
class ExplorationStats:
    """How well the search explored the selected paths' siblings (what the critic gets to compare)."""

    siblings: int
    mean_visits: float
    reached_share: float  # siblings whose best continuation is a reached terminal, not a rollout estimate


def exploration_stats(records: Iterable[SiblingSet]) -> ExplorationStats:
    siblings = [s for record in records for s in record.siblings]
    if not siblings:
        return ExplorationStats(0, 0.0, 0.0)
    return ExplorationStats(
        siblings=len(siblings),
        mean_visits=sum(s.visits for s in siblings) / len(siblings),
        reached_share=sum(s.outcome.terminal for s in siblings) / len(siblings),
    )


def problems_without_selected_path(trees: Iterable[Tree]) -> list[str]:
    """Problems with no correct terminal leaf: no siblings, no SFT sample; report them."""
    return [tree.problem_id for tree in trees if selected_path(tree) is None]
