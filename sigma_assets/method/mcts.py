"""Policy search: grow one MCTS tree per math problem, many trees at once, with batched model calls.

A node holds one reasoning step (text up to the step delimiter). Each search round picks one leaf
per active tree by UCT, expands every picked leaf with `n_children` sampled steps in ONE `generate`
call, grades the new terminal steps in ONE checker call, values the new non-terminal steps with one
rollout each in ONE more `generate` call (plus ONE checker call), and backs the values up. The number
of model calls per round is therefore constant in the number of problems; only the batch grows.

Terminal steps (DESIGN §1). Only an explicit final answer can be correct. A new step is terminal when
  - it states a final answer (`answers.final_answer`: a `\\boxed{}` or "The answer is ..."; the rest of its
    sentence and a remark may follow): valued +1 if it equals the ground truth, else -1;
  - it states one and then goes wrong (`new_question`, `other_answer`, `garbage`), or the path loops
    (`repetition`: the same passage again and again, never markup or a restated formula): -1;
  - it states an equation between plain numbers that does not hold, e.g. "5 - 6 = 1"
    (`false_arithmetic`): -1, whatever answer it reaches;
  - it ends without one: the model ended the text (`end_of_text`), the step was cut at the token limit
    (`token_limit`) or it sits at `max_depth` (`depth_limit`): -1, with no answer. Nothing is graded
    by guessing the last number of an unfinished text.
A leaf whose prompt no longer fits the model's context becomes a -1 terminal (`context_overflow`). A
non-terminal leaf is valued by one rollout, scored by the same rule. Identical sibling steps (after
whitespace normalisation) are merged into one child that counts its `samples`.

Selection never enters an exhausted subtree (every leaf below it terminal), so the search spends its
simulations on siblings instead of re-visiting answers it already has (Super_MARIO, rStar-Math);
`reselect_terminals=True` restores classic UCT, which re-backs up a terminal it reaches again.

Backup invariant (tested): a new child starts with visits=1 and value_sum=its value; every ancestor
gets visits += 1 and value_sum += value per new child; a terminal reached again by selection is
re-backed up with its own value along its path. Hence for every expanded non-root node
`visits == 1 + sum(child.visits)` and for the root `visits == sum(child.visits)`.

No Dagster imports: the search is a plain function of a `generate` and a `check_answers` callable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams
from sigma_assets.method.answers import final_answer
from sigma_assets.method.degeneration import loop
from sigma_assets.method.policy_prompt import CHATML_TEMPLATE, policy_prompt

Generate = Callable[[Sequence[GenerationRequest]], list[list[Sample]]]
# Pairs are (gold, prediction): gold first, because math-verify's comparison is asymmetric.
CheckAnswers = Callable[[Sequence[tuple[str, str | None]]], list[bool]]

ROOT_ID = "0"


@dataclass(frozen=True)
class MCTSSettings:
    simulations: int = 16
    n_children: int = 3
    max_depth: int = 16
    temperature: float = 0.7
    top_p: float = 1.0
    step_max_tokens: int = 256
    rollout_max_tokens: int = 1024
    # UCT constant c in Q(c) + c * sqrt(ln N(parent) / N(c)).
    exploration: float = 1.0
    # "policy": value a non-terminal leaf by sampling the policy to the end; "none": value it 0.
    rollout: Literal["policy", "none"] = "policy"
    step_delimiter: str = "\n\n"
    seed: int = 0
    # The policy's prompt, `{problem}` in it; None: the policy model's chat template, resolved by the
    # caller that holds its tokenizer (`policy_prompt.resolve_policy_prompt`), else ChatML.
    prompt_template: str | None = None
    # Classic UCT re-selects terminals; off, exhausted subtrees are skipped (siblings get explored).
    reselect_terminals: bool = False

    def __post_init__(self) -> None:
        if self.simulations < 1 or self.n_children < 1 or self.max_depth < 1:
            raise ValueError("simulations, n_children and max_depth must be at least 1")
        if self.rollout not in ("policy", "none"):
            raise ValueError(f"rollout must be 'policy' or 'none', got {self.rollout!r}")
        if not self.step_delimiter:
            raise ValueError("step_delimiter must not be empty")


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
    # end_of_text | token_limit | depth_limit | context_overflow (module docstring); None if not terminal.
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
    simulations: int = 0  # selections made so far (each round uses one)

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


@dataclass(frozen=True)
class RoundStats:
    round: int
    active_trees: int
    expand_requests: int
    rollout_requests: int
    generate_calls: int
    check_calls: int


@dataclass
class SearchResult:
    trees: list[Tree]
    rounds: int = 0
    generate_calls: int = 0
    requests: int = 0
    check_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    round_stats: list[RoundStats] = field(default_factory=list)
    # How each rollout ended: a `final_answer` reason (answer, no_answer, repetition, ...), token_limit or
    # context_overflow.
    rollout_outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def without_selected_path(self) -> list[str]:
        """Problems whose tree reached no correct terminal leaf: they yield no SFT sample."""
        return [tree.problem_id for tree in self.trees if selected_path(tree) is None]


def sampling_seed(seed: int, temperature: float, problem_id: str, node_id: str, purpose: str) -> int:
    """A stable per-request seed, so a rerun issues identical requests (and a response store replays).

    The temperature is part of it: the searches at 0.4 and 0.7 are independent draws, as in the paper.
    """
    key = f"{seed}\x1f{temperature!r}\x1f{problem_id}\x1f{node_id}\x1f{purpose}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


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


def select_leaf(tree: Tree, exploration: float, reselect_terminals: bool = False) -> list[Node]:
    """Descend from the root by UCT through expanded non-terminal nodes; return the path to the leaf.

    Exhausted children are skipped unless `reselect_terminals`, so the leaf is one still to expand.
    """
    path = [tree.root]
    while path[-1].children and not path[-1].terminal:
        node = path[-1]
        open_children = None if reselect_terminals else [c for c in node.children if not is_exhausted(c)]
        path.append(select_child(node, exploration, open_children))
    return path


def is_exhausted(node: Node) -> bool:
    """True when no unexpanded non-terminal leaf is left below `node` (nothing more to grow)."""
    if node.terminal:
        return True
    return bool(node.children) and all(is_exhausted(child) for child in node.children)


def backup(path: Sequence[Node], value: float) -> None:
    for node in path:
        node.visits += 1
        node.value_sum += value


def cut_step(text: str, delimiter: str) -> str:
    # The backend should already stop at the delimiter; cut again in case one did not.
    return text.split(delimiter, 1)[0].strip()


def _same_step(a: str, b: str) -> bool:
    return a.split() == b.split()


# Verdicts of `final_answer` that end a step: an answer (right or wrong), and what goes wrong with one.
_ANSWERED = ("answer", "false_arithmetic", "new_question", "other_answer", "garbage")


def classify_step(
    child: Node, sample: Sample, history: Sequence[str], max_depth: int, delimiter: str = "\n\n"
) -> None:
    """Decide whether a new step is terminal, and why (module docstring); set its answer if it has one."""
    verdict = final_answer(child.step)
    reason: str | None = None
    if sample.finish_reason == "length":
        reason = "token_limit"  # cut mid-step: whatever it says is unfinished
    elif loop(delimiter.join([*history, child.step])) is not None:
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
class _RolloutOutcome:
    answer: str | None
    reason: str


def _rollout_outcome(sample: Sample | None, steps: Sequence[str], delimiter: str) -> _RolloutOutcome:
    """A rollout is scored like a path: only an explicit answer that closes the whole text counts."""
    if sample is None or sample.finish_reason == "context_overflow":
        return _RolloutOutcome(None, "context_overflow")
    if sample.finish_reason == "length":
        return _RolloutOutcome(None, "token_limit")
    verdict = final_answer(delimiter.join([*steps, sample.text]))
    return _RolloutOutcome(verdict.answer, verdict.reason)


@dataclass
class _Expansion:
    tree: Tree
    path: list[Node]  # root .. the expanded leaf


def run_search(
    problems: Sequence[tuple[str, str, str]],
    generate: Generate,
    check_answers: CheckAnswers,
    settings: MCTSSettings = MCTSSettings(),
) -> SearchResult:
    """Grow one tree per (problem_id, problem, gold_answer), batching every round across all trees."""
    ids = [problem_id for problem_id, _, _ in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique")
    trees = [Tree(str(pid), problem, str(gold)) for pid, problem, gold in problems]
    result = SearchResult(trees=trees)

    def call_generate(requests: list[GenerationRequest]) -> list[list[Sample]]:
        responses = generate(requests)
        if len(responses) != len(requests):
            raise ValueError(f"generate returned {len(responses)} responses for {len(requests)} requests")
        result.generate_calls += 1
        result.requests += len(requests)
        for samples in responses:
            for sample in samples:
                result.prompt_tokens += sample.prompt_tokens
                result.completion_tokens += sample.completion_tokens
        return responses

    def call_check(pairs: list[tuple[str, str | None]]) -> list[bool]:
        verdicts = list(check_answers(pairs))
        if len(verdicts) != len(pairs):
            raise ValueError(f"check_answers returned {len(verdicts)} verdicts for {len(pairs)} pairs")
        result.check_calls += 1
        return [bool(v) for v in verdicts]

    def seed_for(tree: Tree, node: Node, purpose: str) -> int:
        return sampling_seed(settings.seed, settings.temperature, tree.problem_id, node.node_id, purpose)

    def prompt_for(tree: Tree, path: Sequence[Node]) -> str:
        steps = [n.step for n in path[1:]]
        return policy_prompt(
            tree.problem, steps, settings.prompt_template or CHATML_TEMPLATE, settings.step_delimiter
        )

    while True:
        active = [t for t in trees if t.simulations < settings.simulations and not t.exhausted]
        if not active:
            break
        result.rounds += 1
        calls_before, checks_before = result.generate_calls, result.check_calls

        # 1. Selection: one leaf per active tree (classic UCT may reach a terminal: re-back it up).
        expansions: list[_Expansion] = []
        for tree in active:
            tree.simulations += 1
            path = select_leaf(tree, settings.exploration, settings.reselect_terminals)
            leaf = path[-1]
            if leaf.terminal:
                backup(path, 1.0 if leaf.correct else -1.0)
            else:
                expansions.append(_Expansion(tree, path))

        # 2. Expansion: one request per selected leaf, n_children samples each, in one call.
        new_children: list[tuple[_Expansion, Node]] = []
        if expansions:
            requests = [
                GenerationRequest(
                    prompt=prompt_for(e.tree, e.path),
                    params=SamplingParams(
                        n=settings.n_children,
                        temperature=settings.temperature,
                        top_p=settings.top_p,
                        max_tokens=settings.step_max_tokens,
                        stop=(settings.step_delimiter,),
                        seed=seed_for(e.tree, e.path[-1], "expand"),
                    ),
                )
                for e in expansions
            ]
            for e, samples in zip(expansions, call_generate(requests), strict=True):
                leaf = e.path[-1]
                if not samples:
                    raise ValueError(f"no samples to expand node {leaf.node_id} of {e.tree.problem_id}")
                if any(sample.finish_reason == "context_overflow" for sample in samples):
                    # Nothing more fits after this leaf: it ends here, with no answer.
                    leaf.terminal, leaf.terminal_reason, leaf.correct = True, "context_overflow", False
                    backup(e.path, -1.0)
                    continue
                history = [n.step for n in e.path[1:]]
                for sample in samples:
                    step = cut_step(sample.text, settings.step_delimiter)
                    same = next((c for c in leaf.children if _same_step(c.step, step)), None)
                    if same is not None:
                        same.samples += 1
                        continue
                    child = Node(f"{leaf.node_id}.{len(leaf.children)}", leaf.node_id, leaf.depth + 1, step)
                    classify_step(child, sample, history, settings.max_depth, settings.step_delimiter)
                    leaf.children.append(child)
                    new_children.append((e, child))

        # 3. Grade the new answered terminals in one checker call (the others are wrong without asking).
        graded = [(e, c) for e, c in new_children if c.terminal and c.answer is not None]
        for _, child in new_children:
            if child.terminal and child.answer is None:
                child.correct = False
        if graded:
            verdicts = call_check([(e.tree.gold_answer, c.answer) for e, c in graded])
            for (_, child), ok in zip(graded, verdicts, strict=True):
                child.correct = ok

        # 4. Rollouts for the new non-terminal children, one call, then one checker call.
        open_children = [(e, c) for e, c in new_children if not c.terminal]
        if open_children and settings.rollout == "policy":
            requests = [
                GenerationRequest(
                    prompt=prompt_for(e.tree, [*e.path, c]),
                    params=SamplingParams(
                        n=1,
                        temperature=settings.temperature,
                        top_p=settings.top_p,
                        max_tokens=settings.rollout_max_tokens,
                        seed=seed_for(e.tree, c, "rollout"),
                    ),
                )
                for e, c in open_children
            ]
            responses = call_generate(requests)
            answered: list[tuple[_Expansion, Node]] = []
            for (e, child), samples in zip(open_children, responses, strict=True):
                steps = [n.step for n in e.path[1:]] + [child.step]
                outcome = _rollout_outcome(samples[0] if samples else None, steps, settings.step_delimiter)
                result.rollout_outcomes[outcome.reason] = result.rollout_outcomes.get(outcome.reason, 0) + 1
                child.rollout_answer = outcome.answer
                if outcome.answer is None:
                    child.rollout_correct = False
                else:
                    answered.append((e, child))
            if answered:
                verdicts = call_check([(e.tree.gold_answer, c.rollout_answer) for e, c in answered])
                for (_, child), ok in zip(answered, verdicts, strict=True):
                    child.rollout_correct = ok

        # 5. Backup: every new child is one evaluation, backed up through its ancestors.
        for e, child in new_children:
            if child.terminal:
                value = 1.0 if child.correct else -1.0
            elif settings.rollout == "policy":
                value = 1.0 if child.rollout_correct else -1.0
            else:
                value = 0.0
            backup([*e.path, child], value)

        result.round_stats.append(
            RoundStats(
                round=result.rounds,
                active_trees=len(active),
                expand_requests=len(expansions),
                rollout_requests=len(open_children) if settings.rollout == "policy" else 0,
                generate_calls=result.generate_calls - calls_before,
                check_calls=result.check_calls - checks_before,
            )
        )
    return result


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
