"""Search benchmark on the bundled SmolLM2 (in process, transformers): the batches the engine gets as
problems grow, and the search's overhead over the engine alone on the same batches.

    .venv/bin/python bench/bench_search.py [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import recorded_search, report
from upath import UPath

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.llm.backends.hf_local import TransformersBackend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.method.mcts import MCTSSettings
from sigma_assets.settings import BUNDLED_SMOLLM2

# The budget `generation_job` uses for the bundled model (definitions.demo_run_config).
SETTINGS = MCTSSettings(simulations=4, max_depth=3, step_max_tokens=48, rollout_max_tokens=48)


class RecordingBackend(TransformersBackend):
    """The engine, keeping every batch it is handed (after the client merged the trees' calls)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.batches: list[list[GenerationRequest]] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        self.batches.append(list(requests))
        return await super().generate(requests)


def search(model_dir: Path, count: int, work: Path) -> dict[str, float]:
    problems = arithmetic_problems(count)
    backend = RecordingBackend(model_dir, device="cpu", max_batch=4096, batch_size=256)
    with LLMClient(backend, ResponseStore(UPath(work), f"bench-{count}").load()) as client:
        result, _, search_s = recorded_search(client, problems, SETTINGS)
    # The same engine batches sent to the backend alone: no client, no store, no tree bookkeeping.
    bare = TransformersBackend(model_dir, device="cpu", max_batch=4096, batch_size=256)
    started = time.perf_counter()
    for batch in backend.batches:
        asyncio.run(bare.generate(batch))
    backend_s = time.perf_counter() - started
    return {
        "problems": count,
        "generate_calls": result.generate_calls,
        "engine_batches": len(backend.batches),
        "mean_batch": result.requests / max(1, len(backend.batches)),
        "requests": result.requests,
        "search_s": search_s,
        "backend_s": backend_s,
        "overhead": search_s / backend_s - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=Path, help="replace the search section of this markdown file")
    args = parser.parse_args()
    model_dir = Path(resolve_local_model(BUNDLED_SMOLLM2))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [search(model_dir, count, Path(tmp) / "store") for count in (1, 4, 16)]
    lines = [
        "## Search (the bundled SmolLM2, in process)",
        "",
        "Command: `.venv/bin/python bench/bench_search.py --write docs/benchmarks.md`. "
        f"Settings: {SETTINGS.simulations} simulations, n = {SETTINGS.n_children}, "
        f"depth {SETTINGS.max_depth}. Every tree streams its own calls; the client merges the calls "
        "in flight into one engine batch whenever the engine is free. Overhead = search wall time over "
        "the time the engine alone takes on the same batches, minus 1.",
        "",
        "| problems | search calls | engine batches | requests per batch | overhead |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['problems']} | {row['generate_calls']} | {row['engine_batches']} "
            f"| {row['mean_batch']:.1f} | {row['overhead']:+.1%} |"
        )
    report(lines, args.write, "## Search")


if __name__ == "__main__":
    main()
