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

The tree itself (nodes, UCT selection, backup, the selected path) is `search_tree`; when a new step
ends its path, and how a rollout is scored, is `terminal_steps`.

No Dagster imports: the search is a plain function of a `generate` and a `check_answers` callable.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams
from sigma_assets.method.policy_prompt import CHATML_TEMPLATE, policy_prompt
from sigma_assets.method.search_tree import Node, Tree, backup, is_exhausted, select_leaf, selected_path
from sigma_assets.method.terminal_steps import classify_step, cut_step, rollout_outcome, same_step

Generate = Callable[[Sequence[GenerationRequest]], list[list[Sample]]]
# Pairs are (gold, prediction): gold first, because math-verify's comparison is asymmetric.
CheckAnswers = Callable[[Sequence[tuple[str, str | None]]], list[bool]]
AGenerate = Callable[[Sequence[GenerationRequest]], Awaitable[list[list[Sample]]]]
ACheckAnswers = Callable[[Sequence[tuple[str, str | None]]], Awaitable[list[bool]]]


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
        same = next((c for c in leaf.children if same_step(c.step, step)), None)
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
            outcome = rollout_outcome(
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
