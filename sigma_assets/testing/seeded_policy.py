"""Scripted policies for search tests and benchmarks: each sample is drawn from a generator seeded by
its request's own seed, so a rerun replays exactly, as a seeded model does."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from sigma_assets.llm.generation import GenerationRequest, Sample

# One kind of sample: how likely it is, and its text drawn from the request's generator.
Kind = tuple[float, Callable[[random.Random], str]]


def draw(rng: random.Random, kinds: Sequence[Kind]) -> str:
    """One sample: a kind chosen by its share (one draw), then its text."""
    roll, cumulative = rng.random(), 0.0
    for share, text in kinds:
        cumulative += share
        if roll < cumulative:
            return text(rng)
    return kinds[-1][1](rng)


def seeded_policy(
    steps: Sequence[Kind], rollouts: Sequence[Kind], sample: Callable[[str], Sample] = Sample
) -> Callable[..., list[list[Sample]]]:
    """A `generate` function: `n` samples per request, from `steps`, or `rollouts` for a request without a
    step delimiter (a rollout to the end)."""

    def generate(requests: Sequence[GenerationRequest], validate: object = None) -> list[list[Sample]]:
        out = []
        for request in requests:
            rng = random.Random(request.params.seed)
            kinds = steps if request.params.stop else rollouts
            out.append([sample(draw(rng, kinds)) for _ in range(request.params.n)])
        return out

    return generate


# Rollouts that mostly answer 4 (right for "2 + 2"), else give up.
ROLLOUTS: list[Kind] = [
    (0.8, lambda rng: f"... \\boxed{{{rng.choice([4, 4, 6])}}}"),
    (0.2, lambda rng: "I give up"),
]


def mixed_steps(blank_share: float = 0.0) -> list[Kind]:
    """Right and wrong answers, optionally blank steps, and steps that keep reasoning."""
    return [
        (0.15, lambda rng: "\\boxed{4}"),
        (0.15, lambda rng: f"the answer is {rng.choice([3, 5])}"),
        (blank_share, lambda rng: "   "),
        (1.0, lambda rng: f"think {rng.randrange(1000)}"),
    ]
