"""Scripted policies for search tests and benchmarks: each sample is drawn from a generator seeded by
its request's own seed, so a rerun replays exactly, as a seeded model does."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from sigma_assets.llm.generation import GenerationRequest, Sample

# (rng, is_rollout) -> the sample's text; a rollout is a request without a step delimiter.
Draw = Callable[[random.Random, bool], str]


def seeded_policy(draw: Draw, sample: Callable[[str], Sample] = Sample) -> Callable[..., list[list[Sample]]]:
    """A `generate` function whose `n` samples per request come from `draw`."""

    def generate(requests: Sequence[GenerationRequest], validate: object = None) -> list[list[Sample]]:
        out = []
        for request in requests:
            rng = random.Random(request.params.seed)
            rollout = not request.params.stop
            out.append([sample(draw(rng, rollout)) for _ in range(request.params.n)])
        return out

    return generate
