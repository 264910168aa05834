"""In-process sampling depends on a request's own prompt and seed, never on the batch it shares.

The transformers backend on the tiny model (and on SmolLM2 when slow): the same requests in other batch
compositions, orders and sizes give the same samples bit for bit. Then the search, siblings, critiques
and refined paths through Dagster, run at two concurrencies: every table comes out the same.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from sigma_assets.definitions import ASSETS, build_resources
from sigma_assets.defs.shared.resources import TransformersModelResource
from sigma_assets.llm.backends.hf_local import TransformersBackend
from sigma_assets.llm.generation import Backend, GenerationRequest, Sample, SamplingParams, user
from sigma_assets.settings import Settings
from sigma_assets_tests.support import SEARCH_CONFIG, materialize_shard, shard_with_problems

QUESTIONS = [f"What is {2 + 3 * i} + {5 + 4 * i}? Show each step." for i in range(13)]


def requests_of(seed: int = 0) -> list[GenerationRequest]:
    """Sampled requests of many prompt lengths and parameters, a greedy one and a stop string among them."""
    out = []
    for i, question in enumerate(QUESTIONS):
        params = SamplingParams(
            n=1 + i % 3,
            temperature=(0.0, 0.7, 1.0)[i % 3],
            top_p=(1.0, 0.9)[i % 2],
            max_tokens=8 + 4 * (i % 4),
            stop=("=",) if i % 5 == 0 else (),
            seed=seed + 1000 * i,
        )
        if i % 2:
            out.append(GenerationRequest(messages=user(question * (1 + i % 4)), params=params))
        else:
            out.append(GenerationRequest(prompt=f"Question: {question}\nAnswer:", params=params))
    return out


def generate(backend: TransformersBackend, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
    return asyncio.run(backend.generate(list(requests)))


def in_chunks(
    backend: TransformersBackend, requests: list[GenerationRequest], sizes: Sequence[int], seed: int
) -> list[list[Sample]]:
    """The requests shuffled and sent in consecutive batches of `sizes` (cycled), answers in input order."""
    order = list(range(len(requests)))
    random.Random(seed).shuffle(order)
    answers: dict[int, list[Sample]] = {}
    start, k = 0, 0
    while start < len(order):
        chunk = order[start : start + sizes[k % len(sizes)]]
        for index, samples in zip(chunk, generate(backend, [requests[i] for i in chunk]), strict=True):
            answers[index] = samples
        start, k = start + len(chunk), k + 1
    return [answers[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, device="cpu")


def test_samples_do_not_depend_on_batch_composition_order_or_size(tiny_model_dir: Path) -> None:
    requests = requests_of()
    whole = generate(TransformersBackend(tiny_model_dir, device="cpu"), requests)
    assert len({s.text for samples in whole for s in samples}) > len(requests)  # sampled, not copies
    # Few rows per generate call (under the kernels' small-batch threshold), and batches of every size.
    few_rows = TransformersBackend(tiny_model_dir, device="cpu", batch_size=5)
    assert in_chunks(few_rows, requests, [1, 3, 7], seed=1) == whole
    assert in_chunks(few_rows, requests, [2, 5], seed=2) == whole
    # Each request alone, and with other requests around it.
    alone = [generate(few_rows, [request])[0] for request in requests[:4]]
    assert alone == whole[:4]
    others = requests_of(seed=7)
    mixed = generate(few_rows, [*others[:6], requests[1], *others[6:], requests[2]])
    assert [mixed[6], mixed[-1]] == [whole[1], whole[2]]


def test_a_request_keeps_its_samples_across_calls_and_another_seed_gives_others(
    tiny: TransformersBackend,
) -> None:
    request = GenerationRequest(
        prompt="Question: What is 3 + 4?\nAnswer:",
        params=SamplingParams(n=4, temperature=1.0, max_tokens=16, seed=5),
    )
    first = generate(tiny, [request])[0]
    assert generate(tiny, [request])[0] == first
    assert len({s.text for s in first}) > 1  # the n samples of a request differ from each other
    reseeded = [
        GenerationRequest(prompt=request.prompt, params=replace(request.params, seed=s)) for s in (6, 7)
    ]
    for samples in generate(tiny, reseeded):
        assert [s.text for s in samples] != [s.text for s in first]


def test_an_unseeded_request_samples_anew(tiny: TransformersBackend) -> None:
    request = GenerationRequest(
        prompt="Question: What is 3 + 4?\nAnswer:", params=SamplingParams(n=4, temperature=1.0, max_tokens=16)
    )
    first, second = generate(tiny, [request, request])
    assert [s.text for s in first] != [s.text for s in second]


@pytest.mark.slow
def test_smollm2_samples_do_not_depend_on_the_batch() -> None:
    pytest.importorskip("gguf")
    from sigma_assets.llm.local_models import smollm2_gguf_path
    from sigma_assets.llm.models import resolve_local_model
    from sigma_assets.settings import BUNDLED_SMOLLM2

    try:
        smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    folder = resolve_local_model(BUNDLED_SMOLLM2)
    requests = requests_of()[:8]
    whole = generate(TransformersBackend(folder, device="cpu"), requests)
    assert in_chunks(TransformersBackend(folder, device="cpu", batch_size=5), requests, [1, 3], 3) == whole


# -- through Dagster ---------------------------------------------------------------------------------


class LocalModel(TransformersModelResource):
    """The transformers resource with its batching limits in config: requests per engine call
    (`max_batch`, 1: no coalescing) and samples per `generate` call (`batch_size`)."""

    max_batch: int = 64
    batch_size: int = 128

    def build_backend(self) -> Backend:
        return TransformersBackend(
            self._local_folder(self.model),
            device=self.device,
            model_name=self.model,
            max_batch=self.max_batch,
            batch_size=self.batch_size,
        )


SEARCH_TO_REFINED = ("mcts_trees", "sibling_sets", "critiques", "refined_paths")
# One request per engine call and a few samples per generate call, against every waiting request in one
# call: the two ends of what the streaming search's timing can make of a batch.
ONE_BY_ONE = {"max_batch": 1, "batch_size": 3, "concurrency": 1}
MERGED = {"max_batch": 64, "batch_size": 128, "concurrency": 16}


def run_at(
    root: Path, model: str, problems: str, search: dict[str, Any], limits: dict[str, int]
) -> dict[str, pl.DataFrame]:
    """raw_problems to refined_paths on one shard, `model` as policy and critic; the tables stored."""
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(root), "SIGMA_PROBLEMS": problems})
    role = {"model": model, "device": "cpu", **limits}
    result = materialize_shard(
        [a for a in ASSETS if a.key.path[-1] in {"raw_problems", *SEARCH_TO_REFINED}],
        shard_with_problems(settings),
        resources=build_resources(settings) | {"policy": LocalModel(**role), "critic": LocalModel(**role)},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"mcts_trees": {"config": search}}} if search else None,
    )
    assert result.success
    # Every table as stored (parquet under the storage root), by its path there.
    return {
        str(path.relative_to(root)): pl.read_parquet(path)
        for name in SEARCH_TO_REFINED
        for path in sorted((root / "assets" / name).rglob("*.parquet"))
    }


def assert_same_tables(first: dict[str, pl.DataFrame], second: dict[str, pl.DataFrame]) -> None:
    assert first.keys() == second.keys()
    assert {path.split("/")[1] for path in first} == set(SEARCH_TO_REFINED)
    for path, table in first.items():
        assert table.equals(second[path]), path


def test_the_search_tables_do_not_depend_on_concurrency(tmp_path: Path, tiny_model_dir: Path) -> None:
    search = {**SEARCH_CONFIG, "parallel_simulations": 2}
    one_by_one = run_at(tmp_path / "a", str(tiny_model_dir), "arithmetic:8", search, ONE_BY_ONE)
    merged = run_at(tmp_path / "b", str(tiny_model_dir), "arithmetic:8", search, MERGED)
    assert_same_tables(one_by_one, merged)
    # The tiny model ends no step in time (its trees stop at depth 1 and yield no siblings), but its
    # steps are sampled text: tens of them, nearly all different.
    trees = next(table for path, table in one_by_one.items() if path.startswith("assets/mcts_trees/"))
    steps = trees.filter(pl.col("depth") > 0)["step"]
    assert steps.len() >= 9 and steps.n_unique() > steps.len() // 2
