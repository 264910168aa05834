"""Search benchmark on the tiny local model: backend calls per round as problems grow, and search
overhead over the backend alone on the same prompt batches.

    .venv/bin/python bench/bench_search.py [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import recorded_search, report
from upath import UPath

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.llm.backends.hf_local import TransformersBackend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.method.mcts import MCTSSettings
from sigma_assets.testing.tiny_model import build_tiny_model

SETTINGS = MCTSSettings(simulations=6, max_depth=6, step_max_tokens=24, rollout_max_tokens=48)


def search(model_dir: Path, count: int, work: Path) -> dict[str, float]:
    problems = arithmetic_problems(count)
    backend = TransformersBackend(model_dir, device="cpu", max_batch=4096, batch_size=256)
    with LLMClient(backend, ResponseStore(UPath(work), f"bench-{count}").load()) as client:
        result, batches, search_s = recorded_search(client, problems, SETTINGS)
    # The same prompt batches sent to the backend alone: no client, no store, no tree bookkeeping.
    bare = TransformersBackend(model_dir, device="cpu", max_batch=4096, batch_size=256)
    started = time.perf_counter()
    for batch in batches:
        asyncio.run(bare.generate(batch))
    backend_s = time.perf_counter() - started
    return {
        "problems": count,
        "rounds": result.rounds,
        "calls_per_round": result.generate_calls / max(1, result.rounds),
        "requests": result.requests,
        "search_s": search_s,
        "backend_s": backend_s,
        "overhead": search_s / backend_s - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=Path, help="replace the search section of this markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny")
        rows = [search(model_dir, count, Path(tmp) / "store") for count in (1, 4, 16, 64)]
    lines = [
        "## Search (tiny local model, batched across trees)",
        "",
        "Command: `.venv/bin/python bench/bench_search.py --write docs/benchmarks.md`. "
        f"Settings: {SETTINGS.simulations} simulations, n = {SETTINGS.n_children}, "
        f"depth {SETTINGS.max_depth}. Overhead = search wall time over the time the backend alone takes "
        "on the same prompt batches, minus 1 (target: at most 0.25). Backend calls per round must not "
        "grow with the number of problems.",
        "",
        "| problems | rounds | backend calls per round | requests | overhead |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['problems']} | {row['rounds']} | {row['calls_per_round']:.2f} | {row['requests']} "
            f"| {row['overhead']:+.1%} |"
        )
    report(lines, args.write, "## Search")


if __name__ == "__main__":
    main()
