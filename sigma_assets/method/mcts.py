"""Policy search: grow one MCTS tree per math problem, every tree on its own, all trees at once.

A node holds one reasoning step (text up to the step delimiter). A simulation picks a leaf by UCT,
expands it with `n_children` sampled steps (one request), grades the new terminal steps (one checker
call), values the new non-terminal steps with one rollout each (one request per rollout, sent together,
then one checker call), and backs the values up. Each tree runs its simulations as soon as its own answers
arrive; nothing waits for the other trees, so the server receives requests from every live tree
continuously and the answer checks run beside generation. A tree's simulations happen in its own order
with its own seeds (`sampling_seed`), so with a backend that seeds each request the trees of a run do not
depend on timing, on the other problems of the shard or on their order. `parallel_simulations` > 1 runs
several simulations of one tree at once, each selecting with a virtual loss on the paths in flight (and
never a leaf being expanded); the tree then depends on the order answers arrive, so it is off by default.

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

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams
from sigma_assets.method.answers import final_answer
from sigma_assets.method.policy_prompt import CHATML_TEMPLATE, policy_prompt

Generate = Callable[[Sequence[GenerationRequest]], list[list[Sample]]]
# Pairs are (gold, prediction): gold first, because math-verify's comparison is asymmetric.
CheckAnswers = Callable[[Sequence[tuple[str, str | None]]], list[bool]]
AGenerate = Callable[[Sequence[GenerationRequest]], Awaitable[list[list[Sample]]]]
ACheckAnswers = Callable[[Sequence[tuple[str, str | None]]], Awaitable[list[bool]]]

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
    # Simulations of one tree in flight at once; above 1 each selects with `virtual_loss` counted against
    # the paths in flight, and the tree depends on the order answers arrive (1: it never does).
    parallel_simulations: int = 1
    virtual_loss: float = 1.0

    def __post_init__(self) -> None:
        if self.simulations < 1 or self.n_children < 1 or self.max_depth < 1:
            raise ValueError("simulations, n_children and max_depth must be at least 1")
        if self.parallel_simulations < 1:
            raise ValueError(f"parallel_simulations must be at least 1, got {self.parallel_simulations}")
        if self.parallel_simulations > 1 and self.virtual_loss <= 0:
            raise ValueError("parallel_simulations > 1 needs a positive virtual_loss")
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


@dataclass
class SearchResult:
    trees: list[Tree]
    generate_calls: int = 0
    requests: int = 0
    check_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The most model requests the search had awaiting answers at once (all trees together).
    peak_requests_in_flight: int = 0
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
    """Decide whether a new step is terminal, and why (module docstring); set its answer if it has one.

    The rule reads the whole path: it loops across its steps, and an answer marker may be a step of its
    own with the answer in the next (PRM800K's "# Answer", then "216"). No earlier step stated an answer
    (it would have been terminal), so an answer the path states is this step's."""
    path = delimiter.join([*history, child.step])
    verdict = final_answer(path)
    reason: str | None = None
    if sample.finish_reason == "length":
        reason = "token_limit"  # cut mid-step: whatever it says is unfinished
    elif verdict.reason == "repetition":
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


class _Calls:
    """The search's model and checker calls, counted into its result."""

    def __init__(self, result: SearchResult, generate: AGenerate, check_answers: ACheckAnswers):
        self.result = result
        self._generate = generate
        self._check = check_answers
        self.in_flight = 0

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        result = self.result
        self.in_flight += len(requests)
        result.peak_requests_in_flight = max(result.peak_requests_in_flight, self.in_flight)
        try:
            responses = await self._generate(requests)
        finally:
            self.in_flight -= len(requests)
        if len(responses) != len(requests):
            raise ValueError(f"generate returned {len(responses)} responses for {len(requests)} requests")
        result.generate_calls += 1
        result.requests += len(requests)
        for samples in responses:
            for sample in samples:
                result.prompt_tokens += sample.prompt_tokens
                result.completion_tokens += sample.completion_tokens
        return responses

    async def check(self, pairs: list[tuple[str, str | None]]) -> list[bool]:
        verdicts = list(await self._check(pairs))
        if len(verdicts) != len(pairs):
            raise ValueError(f"check_answers returned {len(verdicts)} verdicts for {len(pairs)} pairs")
        self.result.check_calls += 1
        return [bool(v) for v in verdicts]


async def search(
    problems: Sequence[tuple[str, str, str]],
    generate: AGenerate,
    check_answers: ACheckAnswers,
    settings: MCTSSettings = MCTSSettings(),
) -> SearchResult:
    """Grow one tree per (problem_id, problem, gold_answer), every tree on its own (module docstring).

    A tree that fails (its model call failed for good) does not stop the others: every tree runs to its
    end, so whatever was answered is stored, and then the first failure in problem order is raised.
    """
    ids = [problem_id for problem_id, _, _ in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique")
    trees = [Tree(str(pid), problem, str(gold)) for pid, problem, gold in problems]
    result = SearchResult(trees=trees)
    calls = _Calls(result, generate, check_answers)
    _raise_first(
        await asyncio.gather(*(_grow(tree, calls, settings) for tree in trees), return_exceptions=True)
    )
    return result


def run_search(
    problems: Sequence[tuple[str, str, str]],
    generate: Generate,
    check_answers: CheckAnswers,
    settings: MCTSSettings = MCTSSettings(),
) -> SearchResult:
    """`search` with blocking callables (a scripted policy): the trees are the same, grown one call at a
    time, since a blocking call holds the event loop."""

    async def agenerate(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return generate(requests)

    async def acheck(pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
        return list(check_answers(pairs))

    return asyncio.run(search(problems, agenerate, acheck, settings))


async def _grow(tree: Tree, calls: _Calls, settings: MCTSSettings) -> None:
    """Run a tree's simulations: one after another, or `parallel_simulations` at once with a virtual loss."""
    if settings.parallel_simulations == 1:
        while tree.simulations < settings.simulations and not tree.exhausted:
            tree.simulations += 1
            await _simulate(
                tree, select_leaf(tree, settings.exploration, settings.reselect_terminals), calls, settings
            )
        return
    busy: set[str] = set()  # leaves whose expansion is in flight: no other simulation selects them
    changed = asyncio.Condition()

    async def worker() -> None:
        while tree.simulations < settings.simulations and not tree.exhausted:
            if is_exhausted(tree.root, busy, settings.reselect_terminals):
                async with changed:
                    await changed.wait()  # a simulation in flight may open new leaves
                continue
            tree.simulations += 1
            path = select_leaf(tree, settings.exploration, settings.reselect_terminals, busy)
            leaf = path[-1]
            busy.add(leaf.node_id)
            _virtual_loss(path, settings.virtual_loss)
            try:
                await _simulate(tree, path, calls, settings)
            finally:
                _virtual_loss(path, -settings.virtual_loss)
                busy.discard(leaf.node_id)
                async with changed:
                    changed.notify_all()

    _raise_first(
        await asyncio.gather(
            *(worker() for _ in range(settings.parallel_simulations)), return_exceptions=True
        )
    )


def _raise_first(outcomes: Sequence[object]) -> None:
    """Raise the first exception among gathered outcomes (each ran to its end: nothing is left pending)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _virtual_loss(path: Sequence[Node], loss: float) -> None:
    """Count a pending simulation as a visit that lost (`loss` > 0), or take it back (`loss` < 0), so that
    the other simulations in flight select elsewhere."""
    sign = 1 if loss > 0 else -1
    for node in path:
        node.visits += sign
        node.value_sum -= loss


async def _simulate(tree: Tree, path: list[Node], calls: _Calls, settings: MCTSSettings) -> None:
    """One simulation from the selected `path`: expand its leaf, grade and roll out the new steps, back up."""
    leaf = path[-1]
    if leaf.terminal:  # classic UCT reached a terminal: back its own value up again
        backup(path, 1.0 if leaf.correct else -1.0)
        return

    def seed_for(node: Node, purpose: str) -> int:
        return sampling_seed(settings.seed, settings.temperature, tree.problem_id, node.node_id, purpose)

    def prompt_for(nodes: Sequence[Node]) -> str:
        steps = [n.step for n in nodes[1:]]
        return policy_prompt(
            tree.problem, steps, settings.prompt_template or CHATML_TEMPLATE, settings.step_delimiter
        )

    # Expansion: one request, n_children samples.
    expand = GenerationRequest(
        prompt=prompt_for(path),
        params=SamplingParams(
            n=settings.n_children,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.step_max_tokens,
            stop=(settings.step_delimiter,),
            seed=seed_for(leaf, "expand"),
        ),
    )
    samples = (await calls.generate([expand]))[0]
    if not samples:
        raise ValueError(f"no samples to expand node {leaf.node_id} of {tree.problem_id}")
    if any(sample.finish_reason == "context_overflow" for sample in samples):
        # Nothing more fits after this leaf: it ends here, with no answer.
        leaf.terminal, leaf.terminal_reason, leaf.correct = True, "context_overflow", False
        backup(path, -1.0)
        return
    history = [n.step for n in path[1:]]
    new_children: list[Node] = []
    for sample in samples:
        step = cut_step(sample.text, settings.step_delimiter)
        same = next((c for c in leaf.children if _same_step(c.step, step)), None)
        if same is not None:
            same.samples += 1
            continue
        child = Node(f"{leaf.node_id}.{len(leaf.children)}", leaf.node_id, leaf.depth + 1, step)
        classify_step(child, sample, history, settings.max_depth, settings.step_delimiter)
        leaf.children.append(child)
        new_children.append(child)

    # Grade the new answered terminals in one checker call (the others are wrong without asking).
    graded = [c for c in new_children if c.terminal and c.answer is not None]
    for child in new_children:
        if child.terminal and child.answer is None:
            child.correct = False
    if graded:
        verdicts = await calls.check([(tree.gold_answer, c.answer) for c in graded])
        for child, ok in zip(graded, verdicts, strict=True):
            child.correct = ok

    # Rollouts for the new non-terminal children, in one call, then one checker call.
    open_children = [c for c in new_children if not c.terminal]
    if open_children and settings.rollout == "policy":
        requests = [
            GenerationRequest(
                prompt=prompt_for([*path, c]),
                params=SamplingParams(
                    n=1,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    max_tokens=settings.rollout_max_tokens,
                    seed=seed_for(c, "rollout"),
                ),
            )
            for c in open_children
        ]
        answered: list[Node] = []
        outcomes = calls.result.rollout_outcomes
        for child, rolled in zip(open_children, await calls.generate(requests), strict=True):
            outcome = _rollout_outcome(
                rolled[0] if rolled else None, [*history, child.step], settings.step_delimiter
            )
            outcomes[outcome.reason] = outcomes.get(outcome.reason, 0) + 1
            child.rollout_answer = outcome.answer
            if outcome.answer is None:
                child.rollout_correct = False
            else:
                answered.append(child)
        if answered:
            verdicts = await calls.check([(tree.gold_answer, c.rollout_answer) for c in answered])
            for child, ok in zip(answered, verdicts, strict=True):
                child.rollout_correct = ok

    # Backup: every new child is one evaluation, backed up through its ancestors.
    for child in new_children:
        if child.terminal:
            value = 1.0 if child.correct else -1.0
        elif settings.rollout == "policy":
            value = 1.0 if child.rollout_correct else -1.0
        else:
            value = 0.0
        backup([*path, child], value)


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
