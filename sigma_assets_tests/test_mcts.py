"""MCTS search against a scripted policy: UCT and backup arithmetic, invariants, batching, determinism."""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl
import pytest

from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.method.mcts import MCTSSettings, run_search, sampling_seed
from sigma_assets.method.policy_prompt import CHATML_TEMPLATE, policy_prompt
from sigma_assets.method.search_tree import Node, Tree, path_mean_q, select_child, selected_path, uct_score
from sigma_assets.method.tree_table import tree_from_rows, tree_rows, trees_from_rows
from sigma_assets.testing.seeded_policy import ROLLOUTS, mixed_steps, seeded_policy

ASSISTANT = "<|im_start|>assistant\n"


def steps_of(prompt: str) -> list[str]:
    """The steps a policy prompt already holds (each one followed by the delimiter)."""
    tail = prompt.split(ASSISTANT, 1)[1]
    return tail.split("\n\n")[:-1]


class ScriptedPolicy:
    """Expansion: from depth 1 on, sample 0 answers right, sample 1 wrong, the rest keep reasoning.

    Rollouts answer right only below an "option 0" step. Every call is logged.
    """

    def __init__(self) -> None:
        self.calls: list[list[GenerationRequest]] = []

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        self.calls.append(list(requests))
        out = []
        for request in requests:
            assert request.prompt is not None
            steps = steps_of(request.prompt)
            if request.params.stop:
                texts = [self.step(len(steps), i) for i in range(request.params.n)]
            else:
                right = bool(steps) and "option 0" in steps[-1]
                texts = ["so the total is \\boxed{4}" if right else "hence \\boxed{9}"]
            out.append([Sample(t, "stop", len(request.prompt), len(t)) for t in texts])
        return out

    @staticmethod
    def step(depth: int, index: int) -> str:
        if depth >= 1 and index == 0:
            return "So the answer is \\boxed{4}."
        if depth >= 1 and index == 1:
            return "Perhaps \\boxed{5}."
        return f"Step {depth + 1} option {index}"


class Checker:
    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str | None]]] = []

    def __call__(self, pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
        self.calls.append(list(pairs))
        return [pred is not None and gold == pred for gold, pred in pairs]


# Every kind of step: right and wrong answers, blank steps, and steps that keep reasoning.
random_policy = seeded_policy(
    mixed_steps(blank_share=0.05), ROLLOUTS, lambda text: Sample(text, "stop", 10, 5)
)


class LoggedPolicy:
    """`random_policy` with a log of every call's requests."""

    def __init__(self) -> None:
        self.calls: list[list[GenerationRequest]] = []

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        self.calls.append(list(requests))
        return random_policy(requests)


def problems(count: int) -> list[tuple[str, str, str]]:
    return [(f"p{i}", f"What is {i} + {4 - i}?", "4") for i in range(count)]


# --- prompts and UCT ---------------------------------------------------------------------------------


def test_policy_prompt_is_chatml_and_extends_its_parent_byte_for_byte() -> None:
    parent = policy_prompt("What is 2+2?", ["First add."])
    child = policy_prompt("What is 2+2?", ["First add.", "2+2=4."])
    assert parent == (
        "<|im_start|>user\nWhat is 2+2?\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\nFirst add.\n\n"
    )
    assert child == parent + "2+2=4.\n\n"
    assert policy_prompt("Q {x}", [], template="Q: {problem}|") == "Q: Q {x}|"
    assert CHATML_TEMPLATE.count("{problem}") == 1


def hand_tree() -> Node:
    parent = Node("0", None, 0, visits=10, value_sum=1.0)
    parent.children = [
        Node("0.0", "0", 1, "a", visits=5, value_sum=3.0),  # q 0.6
        Node("0.1", "0", 1, "b", visits=2, value_sum=1.0),  # q 0.5
        Node("0.2", "0", 1, "c", visits=3, value_sum=-1.0),  # q -1/3
    ]
    return parent


def test_uct_arithmetic_and_choice() -> None:
    parent = hand_tree()
    a, b, c = parent.children
    assert uct_score(a, 10, 1.0) == pytest.approx(0.6 + math.sqrt(math.log(10) / 5))  # 1.2786
    assert uct_score(b, 10, 1.0) == pytest.approx(0.5 + math.sqrt(math.log(10) / 2))  # 1.5730
    assert uct_score(c, 10, 1.0) == pytest.approx(-1 / 3 + math.sqrt(math.log(10) / 3))  # 0.5427
    assert select_child(parent, 1.0) is b  # exploration favours the less visited b
    assert select_child(parent, 0.0) is a  # pure exploitation: highest Q
    assert select_child(parent, 0.1) is a  # 0.6+0.068 > 0.5+0.107
    parent.children.append(Node("0.3", "0", 1, "d"))
    assert select_child(parent, 0.0) is parent.children[3]  # unvisited first


def test_uct_ties_go_to_the_lowest_index() -> None:
    parent = Node("0", None, 0, visits=3, value_sum=0.0)
    parent.children = [Node(f"0.{i}", "0", 1, visits=1, value_sum=0.0) for i in range(3)]
    assert select_child(parent, 1.0).node_id == "0.0"


# --- backup arithmetic ------------------------------------------------------------------------------


def test_backup_arithmetic_round_by_round() -> None:
    def search(simulations: int) -> tuple[Tree, object]:
        policy = ScriptedPolicy()
        result = run_search(problems(1), policy, Checker(), MCTSSettings(simulations=simulations))
        return result.trees[0], result

    # Round 1 expands the root: three reasoning steps, rollouts +1 (option 0), -1, -1.
    tree, result = search(1)
    root = tree.root
    assert [c.node_id for c in root.children] == ["0.0", "0.1", "0.2"]
    assert [(c.visits, c.value_sum) for c in root.children] == [(1, 1.0), (1, -1.0), (1, -1.0)]
    assert [c.rollout_correct for c in root.children] == [True, False, False]
    assert [c.rollout_answer for c in root.children] == ["4", "9", "9"]
    assert (root.visits, root.value_sum) == (3, -1.0)

    # Round 2 picks 0.0 (highest Q, equal visits) and expands it: right terminal, wrong terminal,
    # reasoning step whose rollout is wrong.
    tree, result = search(2)
    n00 = tree.node("0.0")
    assert [(c.terminal, c.answer, c.correct) for c in n00.children] == [
        (True, "4", True),
        (True, "5", False),
        (False, None, None),
    ]
    assert (n00.visits, n00.value_sum) == (4, 0.0)  # 1 + 3 children; +1 +1 -1 -1
    assert (tree.root.visits, tree.root.value_sum) == (6, -2.0)

    # Round 3: UCT from the root picks 0.0 (0 + sqrt(ln6/4) = 0.669 beats -1 + sqrt(ln6) = 0.339). Its
    # terminals are never selected again, so the search expands the open sibling 0.0.2: right, wrong,
    # and a reasoning step whose rollout is wrong (-1 in all).
    tree, result = search(3)
    assert (tree.node("0.0.0").visits, tree.node("0.0.0").value_sum) == (1, 1.0)
    assert (tree.node("0.0.2").visits, tree.node("0.0.2").value_sum) == (4, -2.0)
    assert (tree.node("0.0").visits, tree.node("0.0").value_sum) == (7, -1.0)
    assert (tree.root.visits, tree.root.value_sum) == (9, -3.0)
    # Per simulation one expansion call and one rollout call; checks: rollouts, then terminals and rollouts.
    assert result.check_calls == 1 + 2 + 2
    assert result.generate_calls == 6 and result.requests == 1 + 3 + 1 + 1 + 1 + 1
    # Two correct leaves; 0.0.0's path has the higher mean Q (0.43 against 0.12).
    assert [n.node_id for n in selected_path(tree)] == ["0", "0.0", "0.0.0"]


def test_classic_uct_re_selects_a_terminal_and_only_backs_it_up() -> None:
    settings = MCTSSettings(simulations=3, reselect_terminals=True)
    result = run_search(problems(1), ScriptedPolicy(), Checker(), settings)
    tree = result.trees[0]
    # Round 3 reaches the right terminal 0.0.0 again: re-backed up (+1) without any model call.
    assert (tree.node("0.0.0").visits, tree.node("0.0.0").value_sum) == (2, 2.0)
    assert (tree.node("0.0").visits, tree.node("0.0").value_sum) == (5, 1.0)
    assert result.generate_calls == 2 + 2 + 0


# --- invariants after a full search -------------------------------------------------------------------


def check_invariants(tree: Tree, settings: MCTSSettings) -> None:
    root = tree.root
    assert root.visits == sum(c.visits for c in root.children)
    assert root.value_sum == pytest.approx(sum(c.value_sum for c in root.children))
    for node in tree.nodes():
        assert node.depth <= settings.max_depth
        assert -1.0 <= node.q <= 1.0
        if node.depth == settings.max_depth:
            assert node.terminal
        assert (node.terminal_reason is not None) == node.terminal
        if node.terminal:
            assert not node.children
            assert node.correct is not None
            assert node.correct is False or node.terminal_reason == "answer"
            assert node.value_sum == (1.0 if node.correct else -1.0) * node.visits
            if not settings.reselect_terminals and node.terminal_reason != "context_overflow":
                assert node.visits == 1  # a terminal is never selected again
        if node.children:
            # Identical samples are merged into one child that counts them.
            assert sum(c.samples for c in node.children) == settings.n_children
            assert len({" ".join(c.step.split()) for c in node.children}) == len(node.children)
            for index, child in enumerate(node.children):
                assert child.node_id == f"{node.node_id}.{index}"
                assert child.parent_id == node.node_id and child.depth == node.depth + 1
            if node is not root:
                # Its own evaluation (visit 1, value in {-1, 0, 1}) plus everything below it.
                assert node.visits == 1 + sum(c.visits for c in node.children)
                own = node.value_sum - sum(c.value_sum for c in node.children)
                assert own in (-1.0, 0.0, 1.0)


@pytest.mark.parametrize("rollout", ["policy", "none"])
def test_invariants_after_full_search(rollout: str) -> None:
    settings = MCTSSettings(simulations=16, max_depth=4, rollout=rollout, seed=3)  # type: ignore[arg-type]
    policy = LoggedPolicy()
    result = run_search(problems(8), policy, Checker(), settings)
    for tree in result.trees:
        assert 1 <= tree.simulations <= settings.simulations
        assert tree.simulations == settings.simulations or tree.exhausted
        check_invariants(tree, settings)
        path = selected_path(tree)
        if path is not None:
            leaf = path[-1]
            assert leaf.terminal and leaf.correct is True
            assert [n.node_id for n in path] == [n.node_id for n in tree.path_to(leaf.node_id)]
            # No other correct terminal's path has a higher mean Q over its steps.
            others = [tree.path_to(n.node_id) for n in tree.nodes() if n.terminal and n.correct]
            assert all(path_mean_q(other) <= path_mean_q(path) for other in others)
            assert sum(r["on_selected_path"] for r in tree_rows(tree)) == len(path)
        else:
            assert not any(n.terminal and n.correct for n in tree.nodes())
            assert not any(r["on_selected_path"] for r in tree_rows(tree))
    if rollout == "none":
        assert all(r.params.stop for call in policy.calls for r in call)  # expansions only
        assert result.rollout_outcomes == {}
        assert all(n.rollout_answer is None for t in result.trees for n in t.nodes())
    assert any(selected_path(t) for t in result.trees)


def test_no_selected_path_without_a_correct_terminal() -> None:
    # Every step keeps reasoning and every rollout is right: rollouts alone never make a selected path.
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [
            [
                Sample(f"step {r.params.seed}-{i}" if r.params.stop else "\\boxed{4}")
                for i in range(r.params.n)
            ]
            for r in requests
        ]

    settings = MCTSSettings(simulations=4, max_depth=16)
    result = run_search(problems(2), policy, Checker(), settings)
    assert all(n.rollout_correct for t in result.trees for n in t.nodes() if n.parent_id is not None)
    assert result.without_selected_path == ["p0", "p1"]
    assert all(selected_path(t) is None for t in result.trees)


def test_depth_limit_and_empty_steps_are_terminal_without_answer() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [[Sample("keep going"), Sample(" \n"), Sample("more")] for _ in requests]

    settings = MCTSSettings(simulations=50, max_depth=2, rollout="none")
    result = run_search(problems(1), policy, Checker(), settings)
    tree = result.trees[0]
    assert tree.exhausted and tree.simulations < 50  # stops once nothing is left to grow
    for node in tree.nodes():
        if node.depth == 2 or (node.parent_id is not None and node.step == ""):
            assert node.terminal and node.answer is None and node.correct is False  # no number reached
    assert {n.depth for n in tree.nodes()} == {0, 1, 2}


def test_a_depth_limited_step_is_never_correct_whatever_number_it_ends_with() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [
            [Sample("2 + 2 = 4."), Sample("2 + 2 = 4, so the answer is 4."), Sample("hmm")] for _ in requests
        ]

    checker = Checker()
    result = run_search(
        problems(1), policy, checker, MCTSSettings(simulations=4, max_depth=1, rollout="none")
    )
    leaves = {n.step: n for n in result.trees[0].nodes() if n.depth == 1}
    unfinished = leaves["2 + 2 = 4."]
    assert (unfinished.terminal_reason, unfinished.answer, unfinished.correct) == ("depth_limit", None, False)
    assert leaves["hmm"].answer is None and leaves["hmm"].correct is False
    explicit = leaves["2 + 2 = 4, so the answer is 4."]
    assert (explicit.terminal_reason, explicit.answer, explicit.correct) == ("answer", "4", True)
    assert checker.calls == [[("4", "4")]]  # only the explicit answer was graded
    assert selected_path(result.trees[0])[-1] is explicit


def test_a_step_with_false_arithmetic_is_a_wrong_terminal_whatever_its_answer() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        texts = [
            "2 + 2 = 4, so the answer is 4.",
            "2 + 3 = 4, so the answer is 4.",
            "Ben has 2 + 3 = 4 apples.",
        ]
        return [[Sample(t) for t in texts] for _ in requests]

    checker = Checker()
    settings = MCTSSettings(simulations=3, n_children=3, max_depth=2, rollout="none")
    tree = run_search(problems(1)[:1], policy, checker, settings).trees[0]
    children = {c.step: c for c in tree.root.children}
    for false in ("2 + 3 = 4, so the answer is 4.", "Ben has 2 + 3 = 4 apples."):
        node = children[false]
        assert (node.terminal, node.terminal_reason, node.answer, node.correct) == (
            True,
            "false_arithmetic",
            None,
            False,
        )
    assert checker.calls == [[("4", "4")]]  # the false one was never graded, though its answer is 4
    assert [n.step for n in selected_path(tree)[1:]] == ["2 + 2 = 4, so the answer is 4."]


def test_a_step_cut_at_the_token_limit_is_never_correct() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [
            [Sample("The answer is \\boxed{4}", "length"), Sample("3. 5 + 5 = 10 in", "length")]
            for _ in requests
        ]

    result = run_search(problems(1), policy, Checker(), MCTSSettings(simulations=2, n_children=2))
    children = result.trees[0].root.children
    assert [(c.terminal_reason, c.answer, c.correct) for c in children] == [("token_limit", None, False)] * 2
    assert selected_path(result.trees[0]) is None


def test_an_answer_that_does_not_close_the_step_or_a_repeating_path_is_rejected() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        out = []
        for r in requests:
            depth = len(steps_of(r.prompt or ""))
            if depth < 2:
                texts = ["Ben has 3", "Ben has 3 more", "x"]
            else:
                texts = ["The answer is 4. Question: how many pears?", "Ben has 3", "The answer is 4."]
            out.append([Sample(t) for t in texts])
        return out

    settings = MCTSSettings(simulations=30, max_depth=3, rollout="none")
    tree = run_search(problems(1), policy, Checker(), settings).trees[0]
    reasons = {n.terminal_reason for n in tree.nodes() if n.terminal}
    assert {"new_question", "repetition", "answer"} <= reasons
    for node in tree.nodes():
        if node.terminal_reason in ("new_question", "repetition"):
            assert node.answer is None and node.correct is False
    # "Ben has 3" three times along one path is a repetition, never a correct path.
    repeated = [n for n in tree.nodes() if n.terminal_reason == "repetition"]
    assert all([s.step for s in tree.path_to(n.node_id)].count("Ben has 3") == 3 for n in repeated)


def test_a_text_ended_by_the_model_without_an_answer_is_a_wrong_terminal() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [[Sample("Ben has 3 apples.", "end"), Sample("The answer is 4.", "end")] for _ in requests]

    tree = run_search(problems(1), policy, Checker(), MCTSSettings(simulations=2, n_children=2)).trees[0]
    ended, answered = tree.root.children
    assert (ended.terminal_reason, ended.correct) == ("end_of_text", False)
    assert (answered.terminal_reason, answered.correct) == ("answer", True)


def test_rollouts_count_only_an_explicit_answer_that_closes_the_text() -> None:
    rollouts = {
        "0.0": Sample("2 + 2 = 4"),  # no explicit answer
        "0.1": Sample("The answer is \\boxed{4}", "length"),  # cut off
        "0.2": Sample("The answer is 4.\n\nQuestion: what is 5 + 5?"),  # runs on into a new question
        "0.3": Sample("So \\boxed{4}."),
    }

    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        out = []
        for r in requests:
            if r.params.stop:
                out.append([Sample(f"step {i}") for i in range(r.params.n)])
            else:
                index = steps_of(r.prompt or "")[-1].split()[-1]
                out.append([rollouts[f"0.{index}"]])
        return out

    result = run_search(problems(1), policy, Checker(), MCTSSettings(simulations=1, n_children=4))
    children = result.trees[0].root.children
    assert [c.rollout_correct for c in children] == [False, False, False, True]
    assert [c.rollout_answer for c in children] == [None, None, None, "4"]
    assert result.rollout_outcomes == {"no_answer": 1, "token_limit": 1, "new_question": 1, "answer": 1}


def test_a_prompt_beyond_the_context_is_a_wrong_terminal_not_a_failure() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        out = []
        for r in requests:
            depth = len(steps_of(r.prompt or ""))
            if depth >= 1:  # anything past the first step no longer fits
                out.append([Sample("", "context_overflow")] * r.params.n)
            else:
                out.append([Sample(f"step {i}") for i in range(r.params.n)])
        return out

    settings = MCTSSettings(simulations=5)
    result = run_search(problems(1), policy, Checker(), settings)
    tree = result.trees[0]
    overflowed = [n for n in tree.nodes() if n.terminal_reason == "context_overflow"]
    assert overflowed and all(n.correct is False and not n.children for n in overflowed)
    assert tree.exhausted and selected_path(tree) is None
    assert result.rollout_outcomes == {"context_overflow": 3}
    check_invariants(tree, settings)
    for node in overflowed:
        assert node.visits == 2 and node.value_sum == -2.0  # its rollout, then the overflow itself


def test_identical_sibling_steps_are_merged() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [
            [Sample("add  3 and 4"), Sample("add 3\nand 4"), Sample("The answer is 7.")] for _ in requests
        ]

    tree = run_search(problems(1), policy, Checker(), MCTSSettings(simulations=1)).trees[0]
    assert [(c.step, c.samples) for c in tree.root.children] == [("add  3 and 4", 2), ("The answer is 7.", 1)]
    assert [c.node_id for c in tree.root.children] == ["0.0", "0.1"]


def test_exhausted_root_stops_after_one_round() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [[Sample(f"\\boxed{{{i}}}") for i in (4, 5, 6)] for _ in requests]

    checker = Checker()
    result = run_search(problems(3), policy, checker, MCTSSettings(simulations=16))
    # One simulation per tree: one expansion, its three terminals graded in one call.
    assert result.generate_calls == 3 and [len(call) for call in checker.calls] == [3, 3, 3]
    assert [t.simulations for t in result.trees] == [1, 1, 1]
    for tree in result.trees:
        assert [n.node_id for n in selected_path(tree)] == ["0", "0.0"]


def test_step_is_cut_at_the_delimiter_even_if_the_backend_does_not() -> None:
    def policy(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        assert all(r.params.stop == ("\n\n",) for r in requests if r.params.n == 3)
        return [[Sample("first part\n\nsecond \\boxed{4}")] * r.params.n for r in requests]

    result = run_search(problems(1), policy, Checker(), MCTSSettings(simulations=1))
    assert all(c.step == "first part" and not c.terminal for c in result.trees[0].root.children)


# --- accounting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 5, 20])
def test_calls_requests_and_tokens_are_counted(count: int) -> None:
    policy = LoggedPolicy()
    checker = Checker()
    result = run_search(problems(count), policy, checker, MCTSSettings(simulations=6, max_depth=5))
    assert result.generate_calls == len(policy.calls)
    assert result.requests == sum(len(call) for call in policy.calls)
    assert result.check_calls == len(checker.calls)
    # Each call is one tree's: an expansion (one request) or the rollouts of one expansion's new steps.
    assert all(len(call) == 1 for call in policy.calls if call[0].params.stop)
    assert all(len(call) <= 3 for call in policy.calls)
    samples = sum(r.params.n for call in policy.calls for r in call)
    assert (result.prompt_tokens, result.completion_tokens) == (10 * samples, 5 * samples)


def test_rerun_issues_identical_requests() -> None:
    first, second = LoggedPolicy(), LoggedPolicy()
    settings = MCTSSettings(simulations=5, seed=11)
    a = run_search(problems(4), first, Checker(), settings)
    b = run_search(problems(4), second, Checker(), settings)
    assert first.calls == second.calls
    assert [tree_rows(t) for t in a.trees] == [tree_rows(t) for t in b.trees]
    seeds = [r.params.seed for call in first.calls for r in call]
    assert len(set(seeds)) == len(seeds)  # one seed per (problem, node, purpose)
    assert sampling_seed(11, 0.7, "p0", "0", "expand") == first.calls[0][0].params.seed
    assert sampling_seed(12, 0.7, "p0", "0", "expand") != sampling_seed(11, 0.7, "p0", "0", "expand")
    assert sampling_seed(11, 0.7, "p0", "0.1", "expand") != sampling_seed(11, 0.7, "p0", "0.1", "rollout")


def test_seeds_differ_by_temperature() -> None:
    cold, hot = LoggedPolicy(), LoggedPolicy()
    run_search(problems(2), cold, Checker(), MCTSSettings(simulations=3, temperature=0.4))
    run_search(problems(2), hot, Checker(), MCTSSettings(simulations=3, temperature=0.7))
    cold_seeds = {r.params.seed for call in cold.calls for r in call}
    hot_seeds = {r.params.seed for call in hot.calls for r in call}
    assert cold_seeds and not cold_seeds & hot_seeds


def test_duplicate_problem_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        run_search([("a", "x", "1"), ("a", "y", "2")], random_policy, Checker())


# --- storage ------------------------------------------------------------------------------------------------


def test_tree_rows_round_trip_through_polars() -> None:
    result = run_search(problems(3), random_policy, Checker(), MCTSSettings(simulations=8, max_depth=4))
    rows = [row for tree in result.trees for row in tree_rows(tree)]
    frame = pl.DataFrame(rows)
    assert frame.height == sum(len(list(t.nodes())) for t in result.trees)
    root_rows = frame.filter(pl.col("depth") == 0)
    assert root_rows["step"].to_list() == ["", "", ""] and root_rows["parent_id"].null_count() == 3

    rebuilt = trees_from_rows(frame.to_dicts())
    assert [t.problem_id for t in rebuilt] == ["p0", "p1", "p2"]
    for original, copy in zip(result.trees, rebuilt, strict=True):
        assert tree_rows(copy) == tree_rows(original)
    one = tree_from_rows(tree_rows(result.trees[1]), problem="What?", gold_answer="4")
    assert (one.problem, one.gold_answer, one.problem_id) == ("What?", "4", "p1")
    with pytest.raises(ValueError):
        tree_from_rows(rows)  # several problems
