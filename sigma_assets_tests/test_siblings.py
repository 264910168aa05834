"""Sibling sets along the selected path, from a scripted search and from hand-built trees."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.method.mcts import MCTSSettings, run_search
from sigma_assets.method.search_tree import Node, Tree, selected_path
from sigma_assets.method.siblings import (
    ExplorationStats,
    Outcome,
    best_continuation,
    exploration_stats,
    problems_without_selected_path,
    sibling_sets,
    sibling_sets_from_rows,
)
from sigma_assets.method.tree_table import tree_rows
from sigma_assets.testing.seeded_policy import ROLLOUTS, mixed_steps, seeded_policy

# The same scripted policies as test_mcts (kept here so each test module imports on its own).


def scripted_policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
    """From depth 1 on, sample 0 answers right, sample 1 wrong; rollouts right only below "option 0"."""
    out = []
    for request in requests:
        assert request.prompt is not None
        steps = request.prompt.split("<|im_start|>assistant\n", 1)[1].split("\n\n")[:-1]
        depth = len(steps)
        if request.params.stop:
            texts = [
                "So the answer is \\boxed{4}."
                if depth >= 1 and i == 0
                else "Perhaps \\boxed{5}."
                if depth >= 1 and i == 1
                else f"Step {depth + 1} option {i}"
                for i in range(request.params.n)
            ]
        else:
            texts = ["so \\boxed{4}" if steps and "option 0" in steps[-1] else "hence \\boxed{9}"]
        out.append([Sample(t) for t in texts])
    return out


random_policy = seeded_policy(mixed_steps(), ROLLOUTS)


def checker(pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
    return [pred is not None and gold == pred for gold, pred in pairs]


def problems(count: int) -> list[tuple[str, str, str]]:
    return [(f"p{i}", f"What is {i} + {4 - i}?", "4") for i in range(count)]


def scripted_tree() -> Tree:
    # Three rounds of the scripted policy (see test_mcts): path 0 -> 0.0 -> 0.0.0.
    return run_search(problems(1), scripted_policy, checker, MCTSSettings(simulations=3)).trees[0]


def test_sibling_sets_of_the_scripted_tree() -> None:
    tree = scripted_tree()
    depth1, depth2 = sibling_sets(tree)

    assert (depth1.depth, depth1.history, depth1.selected_node_id) == (1, (), "0.0")
    assert depth1.selected_step == "Step 1 option 0"
    assert (depth1.selected_q, depth1.selected_visits) == (-1 / 7, 7)
    assert [(s.node_id, s.step, s.q, s.visits) for s in depth1.siblings] == [
        ("0.1", "Step 1 option 1", -1.0, 1),
        ("0.2", "Step 1 option 2", -1.0, 1),
    ]
    # Unexpanded siblings are their own best continuation, known only through a wrong rollout.
    assert [s.outcome for s in depth1.siblings] == [
        Outcome("0.1", "9", False, False),
        Outcome("0.2", "9", False, False),
    ]

    assert (depth2.depth, depth2.history, depth2.selected_node_id) == (2, ("Step 1 option 0",), "0.0.0")
    assert depth2.selected_step == "So the answer is \\boxed{4}."
    # The third round explored the open sibling 0.0.2 instead of re-visiting 0.0.0: its outcome is a
    # reached (correct) answer, not a rollout estimate.
    assert [s.outcome for s in depth2.siblings] == [
        Outcome("0.0.1", "5", False, True),
        Outcome("0.0.2.0", "4", True, True),
    ]
    assert [s.visits for s in depth2.siblings] == [1, 4]

    stats = exploration_stats([depth1, depth2])
    assert stats == ExplorationStats(siblings=4, mean_visits=(1 + 1 + 1 + 4) / 4, reached_share=0.5)


def test_classic_uct_leaves_siblings_estimated_by_one_rollout() -> None:
    settings = MCTSSettings(simulations=3, reselect_terminals=True)
    tree = run_search(problems(1), scripted_policy, checker, settings).trees[0]
    stats = exploration_stats(sibling_sets(tree))
    assert stats == ExplorationStats(siblings=4, mean_visits=1.0, reached_share=0.25)
    assert exploration_stats([]) == ExplorationStats(0, 0.0, 0.0)


def test_siblings_share_the_selected_parent_after_a_full_search() -> None:
    settings = MCTSSettings(simulations=12, max_depth=5, seed=5)
    result = run_search(problems(10), random_policy, checker, settings)
    with_path = [t for t in result.trees if selected_path(t) is not None]
    assert with_path
    for tree in with_path:
        path = selected_path(tree)
        records = sibling_sets(tree)
        assert [r.depth for r in records] == list(range(1, len(path)))
        for record in records:
            chosen = tree.node(record.selected_node_id)
            assert chosen is path[record.depth]
            assert list(record.history) == [n.step for n in path[1 : record.depth]]
            assert len(record.siblings) <= settings.n_children - 1 == 2
            for sibling in record.siblings:
                node = tree.node(sibling.node_id)
                assert node.parent_id == chosen.parent_id and node is not chosen
                leaf = tree.node(sibling.outcome.leaf_id)
                assert leaf.node_id.startswith(sibling.node_id) and not leaf.children
                assert sibling.outcome.terminal == leaf.terminal
                if leaf.terminal:
                    assert (sibling.outcome.answer, sibling.outcome.correct) == (leaf.answer, leaf.correct)
                else:
                    assert sibling.outcome.correct == leaf.rollout_correct
        assert records[-1].selected_node_id == path[-1].node_id
    missing = problems_without_selected_path(result.trees)
    assert missing == result.without_selected_path
    assert all(sibling_sets(t) == [] for t in result.trees if t.problem_id in missing)

    rows = [row for tree in result.trees for row in tree_rows(tree)]
    from_rows = sibling_sets_from_rows(pl.DataFrame(rows).to_dicts())
    assert from_rows == [r for t in result.trees for r in sibling_sets(t)]
    table = pl.DataFrame([r.to_row() for r in from_rows])
    assert table.schema["siblings"].inner.fields  # a list of structs: storable as parquet
    assert table.height == len(from_rows)


def test_best_continuation_is_the_best_q_descendant_leaf() -> None:
    sibling = Node("0.1", "0", 1, "s", visits=4, value_sum=0.0)
    a = Node("0.1.0", "0.1", 2, "a", visits=1, value_sum=-1.0, terminal=True, answer="3", correct=False)
    b = Node("0.1.1", "0.1", 2, "b", visits=2, value_sum=0.0)
    c = Node("0.1.2", "0.1", 2, "c", visits=1, value_sum=1.0, rollout_answer="4", rollout_correct=True)
    sibling.children = [a, b, c]
    b.children = [
        Node("0.1.1.0", "0.1.1", 3, visits=1, value_sum=1.0, terminal=True, answer="4", correct=True),
    ]
    # 0.1.2 (rollout +1) ties with 0.1.1.0 (terminal +1): the reached answer wins the tie.
    assert best_continuation(sibling) == Outcome("0.1.1.0", "4", True, True)
    b.children[0].value_sum = -1.0
    b.children[0].correct = False
    assert best_continuation(sibling) == Outcome("0.1.2", "4", True, False)
    assert best_continuation(a) == Outcome("0.1.0", "3", False, True)
