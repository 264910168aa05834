"""What the benchmarks share: a search whose requests are recorded (to replay them against the
backend alone), and the section of docs/benchmarks.md each benchmark rewrites."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.method.mcts import MCTSSettings, SearchResult, search


def recorded_search(
    client: LLMClient, problems: Sequence[tuple[str, str, str]], settings: MCTSSettings
) -> tuple[SearchResult, list[GenerationRequest], float]:
    """Run the search through `client` as `mcts_trees` does; returns its result, every request it sent
    (in the order sent), and its seconds."""
    sent: list[GenerationRequest] = []

    async def generate(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        sent.extend(requests)
        return await client.agenerate(requests)

    with AnswerChecker() as checker:
        checker.check_many([("1", "1")])  # start the worker before timing
        started = time.perf_counter()
        result = client.run_coroutine(search(problems, generate, checker.acheck_many, settings))
        seconds = time.perf_counter() - started
    return result, sent, seconds


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replace the section starting at `heading` (up to the next `## `) or append it."""
    old = path.read_text() if path.exists() else "# Benchmarks\n\nMachine: 2 CPU cores, no GPU.\n\n"
    text = text.rstrip("\n") + "\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip() + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + text + ("\n" + old[end + 1 :] if end >= 0 else "")  # a blank line before it
    path.write_text(new)


def report(lines: list[str], write: Path | None, heading: str) -> None:
    """Print a benchmark's section and, with `--write`, put it in that markdown file."""
    text = "\n".join(lines)
    print(text)
    if write:
        replace_section(write, heading, text)
