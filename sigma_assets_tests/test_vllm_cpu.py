"""The policy through a real vLLM (the CPU build in `.venv-vllm`): an OpenAI-compatible vLLM server
driving the search stages, and the in-process engine behind `VLLMBackend`.

`bash infra/install_vllm.sh` creates `.venv-vllm` (`infra/test.sh` runs it). Without it these tests
fail under CI (`CI` set) and are skipped, with the reason shown by `-ra`, elsewhere.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from local_vllm import INSTALL_HINT, VLLM_VENV, local_vllm, vllm_env, vllm_python

from sigma_assets.data.shards import shard_of
from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.method.budgets import search_budget
from sigma_assets.method.mcts import MCTSSettings
from sigma_assets.method.policy_prompt import policy_prompt
from sigma_assets.settings import BUNDLED_SMOLLM2, Settings
from sigma_assets_tests.recording_proxy import Exchange, RecordingProxy
from sigma_assets_tests.support import ShardRun, materialize_shard

pytestmark = pytest.mark.vllm

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Tiny on purpose: vLLM on 2 CPU cores decodes tens of tokens per second.
PROBLEMS = "arithmetic:8"
SEARCH_CONFIG = {"simulations": 4, "max_depth": 3, "step_max_tokens": 32, "rollout_max_tokens": 48}
DELIMITER = MCTSSettings().step_delimiter
N_CHILDREN = MCTSSettings().n_children


@pytest.fixture(scope="module")
def vllm_interpreter() -> Path:
    python = vllm_python()
    if python is None:
        message = f"{VLLM_VENV.name} is missing: {INSTALL_HINT}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    """The bundled SmolLM2 as safetensors (converted once into SIGMA_MODEL_CACHE, then reused)."""
    return Path(resolve_local_model(BUNDLED_SMOLLM2))


# -- the search against a vLLM server --------------------------------------------------------------


# The template the search uses for the bundled model, however a run starts (`method.budgets`).
SEARCH_TEMPLATE = search_budget(BUNDLED_SMOLLM2).prompt_template


def search_partition(settings: Settings) -> str:
    """The partition to search: the shard of "What is 9 + 9?", two of the eight problems of PROBLEMS."""
    return shard_of("arithmetic-0007", settings.num_shards)


def materialize_search(settings: Settings, instance: dg.DagsterInstance) -> ShardRun:
    """raw_problems → mcts_trees → sibling_sets for one (shard, 0.7), resources built from `settings`."""
    return materialize_shard(
        [raw_problems, mcts_trees, sibling_sets],
        search_partition(settings),
        "0.7",
        resources=build_resources(settings),
        instance=instance,
        run_config={"ops": {"mcts_trees": {"config": SEARCH_CONFIG}}},
    )


def built_prompts(trees: pl.DataFrame, problems: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The prompts the search builds for the stored trees: one expansion per node with children
    (the node's path), one rollout per non-terminal node below the root (its path)."""
    rows = {(r["problem_id"], r["node_id"]): r for r in trees.iter_rows(named=True)}
    parents = {(*key[:1], r["parent_id"]) for key, r in rows.items() if r["parent_id"] is not None}

    def prompt(problem_id: str, node_id: str) -> str:
        steps: list[str] = []
        row = rows[(problem_id, node_id)]
        while row["parent_id"] is not None:
            steps.append(row["step"])
            row = rows[(problem_id, row["parent_id"])]
        return policy_prompt(problems[problem_id], steps[::-1], SEARCH_TEMPLATE)

    expansions = [prompt(*key) for key in rows if key in parents]
    rollouts = [prompt(*key) for key, r in rows.items() if r["parent_id"] is not None and not r["terminal"]]
    return expansions, rollouts


def prefix_cache_hits(base_url: str) -> float:
    """vLLM's prefix-cache hits (in tokens), from its Prometheus endpoint."""
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:prefix_cache_hits_total")
    ]
    assert values, "vLLM's /metrics has no vllm:prefix_cache_hits_total"
    return sum(values)


def test_search_through_a_vllm_server(tmp_path, vllm_interpreter, smollm2_dir, monkeypatch):
    monkeypatch.setenv("SIGMA_POLICY_API_KEY", "EMPTY")  # the server checks no key; the client sends one
    with (
        local_vllm(smollm2_dir, BUNDLED_SMOLLM2, tmp_path / "vllm.log", python=vllm_interpreter) as server,
        RecordingProxy(server.base_url) as proxy,
    ):
        settings = Settings.from_env(
            {
                "SIGMA_STORAGE_URL": str(tmp_path / "store"),
                "SIGMA_PROBLEMS": PROBLEMS,
                "SIGMA_POLICY_BACKEND": "openai",
                "SIGMA_POLICY_BASE_URL": proxy.base_url,  # the served name is the bundled model's
            }
        )
        instance = dg.DagsterInstance.ephemeral()
        first = materialize_search(settings, instance)
        assert first.success, server.log_tail()
        sent: list[Exchange] = proxy.exchanges()
        trees = first.output_for_node("mcts_trees")
        problems = dict(first.output_for_node("raw_problems").select("problem_id", "problem").iter_rows())
        metadata = first.asset_materializations_for_node("mcts_trees")[0].metadata

        # Everything the client sent reached vLLM and was answered; the client counted the same.
        assert problems and len(sent) > len(problems)
        assert all(e.path == "/v1/completions" and e.status == 200 for e in sent)
        assert metadata["policy_requests"].value == len(sent)
        assert metadata["policy_backend"].value == "openai"

        # `n` is native: one request per expansion asks for all children, and vLLM answers with
        # all of them (an emulated `n` would show as extra n=1 requests with the step delimiter).
        expansions = [e for e in sent if e.request.get("stop") == [DELIMITER]]
        rollouts = [e for e in sent if "stop" not in e.request]
        assert len(expansions) + len(rollouts) == len(sent)
        assert {e.request["n"] for e in expansions} == {N_CHILDREN}
        assert {e.request["n"] for e in rollouts} == {1}
        assert all(len(e.response["choices"]) == e.request["n"] for e in sent)
        assert all(e.request["model"] == BUNDLED_SMOLLM2 for e in sent)
        # Sampled children differ: vLLM gives each of the n samples its own seed.
        distinct = [len({c["text"] for c in e.response["choices"]}) for e in expansions]
        assert sum(d > 1 for d in distinct) > len(distinct) / 2, distinct

        # The prompts vLLM received are the ones the search builds for the stored trees, byte for
        # byte, and each child's expansion prompt extends its parent's (what prefix caching reuses).
        built_expansions, built_rollouts = built_prompts(trees, problems)
        received = collections.Counter(e.request["prompt"] for e in expansions)
        assert received == collections.Counter(built_expansions)
        assert collections.Counter(e.request["prompt"] for e in rollouts) == collections.Counter(
            built_rollouts
        )
        roots = {policy_prompt(problem, [], SEARCH_TEMPLATE) for problem in problems.values()}
        assert roots <= set(received)
        for prompt in set(received) - roots:
            parent = max((p for p in received if prompt.startswith(p) and p != prompt), key=len)
            assert prompt[len(parent) :].endswith(DELIMITER)
        # ... and vLLM reused those shared prefixes from its cache.
        assert prefix_cache_hits(server.base_url) > 0

        # A second materialisation replays every response from the store: nothing reaches vLLM.
        second = materialize_search(settings, instance)
        assert second.success
        assert len(proxy.exchanges()) == len(sent)
        assert second.output_for_node("mcts_trees").equals(trees)
        replay = second.asset_materializations_for_node("mcts_trees")[0].metadata
        assert replay["policy_requests"].value == 0
        assert replay["policy_store_hits"].value == sum(e.request["n"] for e in sent)  # samples

    # The server stopped on SIGTERM by itself, and its port is free again.
    assert server.returncode == 0, server.log_tail()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0


# -- the in-process engine ---------------------------------------------------------------------------


def run_engine_script(python: Path, model_dir: Path, work: Path) -> dict[str, Any]:
    out = work / "engine.json"
    result = subprocess.run(
        [
            str(python),
            str(PROJECT_ROOT / "sigma_assets_tests" / "vllm_engine_run.py"),
            str(model_dir),
            str(out),
        ],
        cwd=PROJECT_ROOT,
        env=vllm_env({"PYTHONPATH": str(PROJECT_ROOT)}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads(out.read_text())


def test_vllm_backend_generates_in_process(tmp_path, vllm_interpreter, smollm2_dir):
    result = run_engine_script(vllm_interpreter, smollm2_dir, tmp_path)
    seeded, chat, seeded_again, other_seed, short = result["batch"]

    # n samples per request, prompt tokens counted once per request, token limits honoured.
    assert [len(s) for s in result["batch"]] == [3, 1, 3, 3, 1]
    for samples in result["batch"]:
        assert samples[0]["prompt_tokens"] > 0 and all(s["prompt_tokens"] == 0 for s in samples[1:])
        assert all(0 < s["completion_tokens"] <= 32 for s in samples)
    assert short[0]["finish_reason"] == "length" and short[0]["completion_tokens"] == 3

    # Seeds: the same seed gives the same samples, even in one batch; another seed, other samples;
    # the n samples of one request differ from each other.
    texts = [[s["text"] for s in samples] for samples in (seeded, seeded_again, other_seed)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]
    assert len(set(texts[0])) == 3

    # A chat request goes through the model's chat template and ends on its own (greedy): "end", the
    # model closed the text (vLLM's stop_reason is None), not a stop string.
    assert chat[0]["text"].strip() and chat[0]["finish_reason"] == "end"

    # Stop strings: the same seeded request with a stop string ends right before its first
    # occurrence (the string itself is not returned); samples without it are unchanged.
    stop = result["stop"]
    cut = 0
    for full, stopped in zip(seeded, result["stopped"], strict=True):
        assert stop not in stopped["text"]
        if stop in full["text"]:
            cut += 1
            assert stopped["text"] == full["text"][: full["text"].index(stop)]
            assert stopped["finish_reason"] == "stop"
        else:
            assert stopped == full
    assert cut >= 1
    assert result["empty"] == []
