"""The search tree: nodes, UCT selection, backup, and the path the search selects.

A node holds one reasoning step (text up to the step delimiter); its id spells its ancestry (`0.2.1` is
child 1 of child 2 of the root `0`). Selection descends by UCT and never enters an exhausted subtree
(every leaf below it terminal), so the search spends its simulations on siblings instead of re-visiting
answers it already has (Super_MARIO, rStar-Math); `reselect_terminals=True` restores classic UCT, which
re-backs up a terminal it reaches again.

Backup invariant (tested): a new child starts with visits=1 and value_sum=its value; every ancestor
gets visits += 1 and value_sum += value per new child; a terminal reached again by selection is
re-backed up with its own value along its path. Hence for every expanded non-root node
`visits == 1 + sum(child.visits)` and for the root `visits == sum(child.visits)`.

The selected path ends at the correct terminal leaf whose path has the highest mean Q (`selected_path`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

ROOT_ID = "0"


@dataclass
class Node:
    node_id: str
    parent_id: str | None
    depth: int
    step: str = ""
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False
    # Why a terminal is one: answer | new_question | other_answer | garbage | repetition | false_arithmetic |
    # end_of_text | token_limit | depth_limit | context_overflow (`terminal_steps`); None if not terminal.
    terminal_reason: str | None = None
    answer: str | None = None
    correct: bool | None = None
    rollout_answer: str | None = None
    rollout_correct: bool | None = None
    samples: int = 1  # sampled steps merged into this node (identical after whitespace normalisation)
    children: list[Node] = field(default_factory=list)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass
class Tree:
    problem_id: str
    problem: str
    gold_answer: str
    root: Node = field(default_factory=lambda: Node(ROOT_ID, None, 0))
    simulations: int = 0  # selections made so far (each simulation makes one)

    def nodes(self) -> Iterator[Node]:
        """Every node, depth-first in child order (root first)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def node(self, node_id: str) -> Node:
        return self.path_to(node_id)[-1]

    def path_to(self, node_id: str) -> list[Node]:
        """Root .. node, following the ancestors the id spells (matched by id, not list position)."""
        parts = node_id.split(".")
        path = [self.root]
        for end in range(2, len(parts) + 1):
            prefix = ".".join(parts[:end])
            path.append(next(c for c in path[-1].children if c.node_id == prefix))
        return path

    @property
    def exhausted(self) -> bool:
        return is_exhausted(self.root)


def uct_score(child: Node, parent_visits: int, exploration: float) -> float:
    if child.visits == 0:
        return math.inf
    return child.q + exploration * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def select_child(node: Node, exploration: float, candidates: Sequence[Node] | None = None) -> Node:
    """argmax UCT over `candidates` (default: every child); unvisited first; ties to the lowest index."""
    pool = list(node.children if candidates is None else candidates)
    best = pool[0]
    best_score = uct_score(best, node.visits, exploration)
    for child in pool[1:]:
        score = uct_score(child, node.visits, exploration)
        if score > best_score:
            best, best_score = child, score
    return best


def select_leaf(
    tree: Tree, exploration: float, reselect_terminals: bool = False, busy: Collection[str] = ()
) -> list[Node]:
    """Descend from the root by UCT through expanded non-terminal nodes; return the path to the leaf.

    Exhausted children are skipped unless `reselect_terminals`, so the leaf is one still to expand; so are
    the leaves in `busy` (being expanded by another simulation) and subtrees with nothing else open.
    """
    path = [tree.root]
    while path[-1].children and not path[-1].terminal:
        node = path[-1]
        open_children = (
            None
            if reselect_terminals and not busy
            else [c for c in node.children if not is_exhausted(c, busy, reselect_terminals)]
        )
        path.append(select_child(node, exploration, open_children))
    return path


def is_exhausted(node: Node, busy: Collection[str] = (), terminals_open: bool = False) -> bool:
    """True when no unexpanded non-terminal leaf is left below `node` (nothing more to grow).

    Leaves in `busy` count as taken; with `terminals_open`, terminals count as open (classic UCT)."""
    if node.node_id in busy:
        return True
    if node.terminal:
        return not terminals_open
    return bool(node.children) and all(is_exhausted(c, busy, terminals_open) for c in node.children)


def backup(path: Sequence[Node], value: float) -> None:
    for node in path:
        node.visits += 1
        node.value_sum += value


def node_id_key(node_id: str) -> tuple[int, ...]:
    """Orders node ids as the tree does: by child index at each depth."""
    return tuple(int(i) for i in node_id.split("."))


def path_mean_q(path: Sequence[Node]) -> float:
    """Mean Q over a path's steps (the root holds no step)."""
    steps = path[1:]
    return sum(n.q for n in steps) / len(steps) if steps else 0.0


def selected_path(tree: Tree) -> list[Node] | None:
    """Root .. the correct terminal leaf whose path has the highest mean Q over its steps; None if none.

    Ties: more visits of the leaf, then the smallest node id. A non-terminal leaf whose rollout was
    correct does not count: the path must end in an explicit answer.
    """
    paths = [tree.path_to(n.node_id) for n in tree.nodes() if n.terminal and n.correct is True]
    if not paths:
        return None
    return min(paths, key=lambda p: (-path_mean_q(p), -p[-1].visits, node_id_key(p[-1].node_id)))


SELECTION_RULE = "correct terminal leaf with the highest mean Q over its path's steps (then visits, then id)"
