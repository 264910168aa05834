"""How often a batch changes an in-process sample: SmolLM2 expansion requests in two batch compositions.

    python bench/bench_batch_invariance.py [--problems 100] [--chunks 1,2,5]

The search's expansion requests (the embedded few-shot prompt, n=3, T=0.7, 24 tokens, stop at a blank
line, a seed each) for `--problems` arithmetic problems, every other one a step further, go to the
transformers backend twice: all in one call (128 samples per `generate`), then shuffled in calls of
`--chunks` requests. Two modes:

- invariant: the backend as shipped (`batch_invariance`);
- generators only: each sample still draws from its own generator, but prefill is one padded batch,
  attention reads the padded keys and small batches are not filled up: what floating-point differences
  between batch compositions alone do to the samples.

Prints the share of samples that differ between the two compositions, and the seconds of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from typing import Any

from sigma_assets.data.problems import load_problems
from sigma_assets.llm.backends import hf_local
from sigma_assets.llm.backends.hf_local import TransformersBackend
from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.method.budgets import search_budget
from sigma_assets.method.policy_prompt import policy_prompt
from sigma_assets.settings import BUNDLED_SMOLLM2


def expansion_requests(problems: int) -> list[GenerationRequest]:
    budget = search_budget(BUNDLED_SMOLLM2)
    params = SamplingParams(
        n=budget.n_children,
        temperature=budget.temperature,
        max_tokens=budget.step_max_tokens,
        stop=(budget.step_delimiter,),
    )
    out = []
    for i, problem in enumerate(load_problems(f"arithmetic:{problems}").problems):
        steps = ["Let us work it out step by step."] if i % 2 else []
        prompt = policy_prompt(problem.problem, steps, budget.prompt_template or "")
        out.append(GenerationRequest(prompt=prompt, params=SamplingParams(**{**vars(params), "seed": i})))
    return out


def in_calls(backend: TransformersBackend, requests: list[GenerationRequest], sizes: list[int]) -> Any:
    order = list(range(len(requests)))
    random.Random(0).shuffle(order)
    answers: dict[int, list[Sample]] = {}
    start = k = 0
    while start < len(order):
        chunk = order[start : start + sizes[k % len(sizes)]]
        for index, samples in zip(
            chunk, asyncio.run(backend.generate([requests[i] for i in chunk])), strict=True
        ):
            answers[index] = samples
        start, k = start + len(chunk), k + 1
    return [answers[i] for i in range(len(requests))]


@contextlib.contextmanager
def generators_only() -> Any:
    """Per-row generators, the rest of the invariance measures off (this process only)."""
    cache = hf_local.PromptCache
    saved = (hf_local.ROW_FLOOR, hf_local.decoding_rows, hf_local.batch_cache, cache.layers)
    hf_local.ROW_FLOOR = 1  # no filler rows
    hf_local.decoding_rows = lambda starts, real: contextlib.nullcontext()  # sdpa over padded keys
    hf_local.batch_cache = lambda *args: None  # generate() prefills the padded batch itself
    cache.layers = lambda self, model, ids: None
    try:
        yield
    finally:
        (hf_local.ROW_FLOOR, hf_local.decoding_rows, hf_local.batch_cache, cache.layers) = saved


def measure(
    folder: str, requests: list[GenerationRequest], sizes: list[int]
) -> tuple[int, int, float, float]:
    backend = TransformersBackend(folder, device="cpu")
    asyncio.run(backend.generate(requests[:1]))  # load the model outside the timings
    start = time.perf_counter()
    whole = asyncio.run(backend.generate(requests))
    whole_s = time.perf_counter() - start
    start = time.perf_counter()
    chunked = in_calls(backend, requests, sizes)
    chunked_s = time.perf_counter() - start
    pairs = [(a, b) for x, y in zip(whole, chunked, strict=True) for a, b in zip(x, y, strict=True)]
    return sum(a.text != b.text for a, b in pairs), len(pairs), whole_s, chunked_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--chunks", default="1,2,5", help="requests per call in the second composition")
    args = parser.parse_args()
    folder = resolve_local_model(BUNDLED_SMOLLM2)
    requests = expansion_requests(args.problems)
    sizes = [int(x) for x in args.chunks.split(",")]
    for mode, context in (("invariant", contextlib.nullcontext()), ("generators only", generators_only())):
        with context:
            differ, total, whole_s, chunked_s = measure(folder, requests, sizes)
        print(
            f"{mode:>16}: {differ}/{total} samples differ ({100 * differ / total:.1f}%); "
            f"one call {whole_s:.1f} s, calls of {args.chunks} requests {chunked_s:.1f} s"
        )


if __name__ == "__main__":
    main()
