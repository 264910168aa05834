"""Shared test support: materialising one (shard, temperature), and scripted models for the fault server.

`raw_problems` is partitioned by shard, the rest by both keys.

A Dagster run holds one partitions definition, so a shard's problems and its search/refinement stages
are two runs, as `problems_job` and `generation_job` launch them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import dagster as dg

from sigma_assets.data.shards import shard_of
from sigma_assets.settings import Settings


class ShardRun:
    """The runs of one (shard, temperature), read as one result."""

    def __init__(self, results: Sequence[dg.ExecuteInProcessResult]) -> None:
        self.results = list(results)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def all_events(self) -> list[dg.DagsterEvent]:
        return [e for r in self.results for e in r.all_events]

    def _with(self, node: str) -> dg.ExecuteInProcessResult:
        for result in self.results:
            if any(n.name == node for n in result.job_def.nodes):
                return result
        raise KeyError(node)

    def output_for_node(self, node: str) -> Any:
        return self._with(node).output_for_node(node)

    def asset_materializations_for_node(self, node: str) -> list[dg.AssetMaterialization]:
        return self._with(node).asset_materializations_for_node(node)

    def get_asset_check_evaluations(self) -> list[dg.AssetCheckEvaluation]:
        return [e for r in self.results for e in r.get_asset_check_evaluations()]


def partition(shard: str, temperature: str = "0.7") -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"shard": shard, "temperature": temperature})


def materialize_shard(
    assets: Sequence[Any],
    shard: str,
    temperature: str = "0.7",
    *,
    resources: dict[str, Any],
    instance: dg.DagsterInstance | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    selection: Sequence[Any] | None = None,
) -> ShardRun:
    """Materialise `assets` (and checks) for one (shard, temperature): problems first, then the rest.

    `selection`: only these of `assets` (the others are read from storage).
    """
    instance = instance or dg.DagsterInstance.ephemeral()
    chosen = list(assets if selection is None else selection)
    by_shard = [a for a in chosen if _partitions_def(a) is not None and not _is_multi(a)]
    by_both = [a for a in chosen if a not in by_shard]
    results = []
    for selection, key in ((by_shard, shard), (by_both, partition(shard, temperature))):
        if not selection:
            continue
        result = dg.materialize(
            assets,  # all of them, so each run can load what the other one made
            selection=_selection(selection),
            partition_key=key,
            resources=resources,
            instance=instance,
            run_config=_config_for(selection, run_config),
            raise_on_error=raise_on_error,
        )
        results.append(result)
        if not result.success:
            break
    return ShardRun(results)


def _selection(items: Sequence[Any]) -> dg.AssetSelection:
    assets = [a for a in items if isinstance(a, dg.AssetsDefinition) and a.keys]
    checks = [k for a in items if isinstance(a, dg.AssetsDefinition) for k in a.check_keys]
    return (
        dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks(*checks)
        if checks
        else dg.AssetSelection.assets(*assets)
    )


def _partitions_def(item: Any) -> Any:
    if isinstance(item, dg.AssetsDefinition):
        return item.partitions_def
    return getattr(item, "partitions_def", None)


def _is_multi(item: Any) -> bool:
    return isinstance(_partitions_def(item), dg.MultiPartitionsDefinition)


def _config_for(selection: Sequence[Any], run_config: dict[str, Any] | None) -> dict[str, Any]:
    """Only the ops of this run: run config naming an op outside the job is refused."""
    if not run_config:
        return {}
    names = {key.path[-1] for item in selection if isinstance(item, dg.AssetsDefinition) for key in item.keys}
    ops = {name: cfg for name, cfg in run_config.get("ops", {}).items() if name in names}
    return {**run_config, "ops": ops}


# -- scripted models on the fault server -------------------------------------------------------

SEARCH_CONFIG = {"simulations": 4, "max_depth": 4, "step_max_tokens": 32, "rollout_max_tokens": 64}


def arithmetic_policy(request: dict, sample_index: int) -> str:
    """A policy that restates the question, then answers right (sample 0) or wrong (others)."""
    question = re.findall(r"What is (\d+) \+ (\d+)\?", request.get("prompt", ""))
    a, b = (int(x) for x in question[-1]) if question else (0, 0)
    if "Let us add" not in request.get("prompt", "") and sample_index < 2:
        return "Let us add the two numbers."
    return f"So the answer is \\boxed{{{a + b if sample_index == 0 else a + b + 1}}}."


def shard_with_problems(settings: Settings) -> str:
    from sigma_assets.data.problems import load_problems

    problems = load_problems(settings.problems).problems
    return shard_of(problems[3].problem_id, settings.num_shards)  # problem 3 is "What is a + b?"


def scripted_critic(request: dict, sample_index: int) -> str:
    """Specific JSON feedback for critiques; revisions that keep every step and its final answer."""
    prompt = request["messages"][-1]["content"]
    if "Answer with JSON only" in prompt:
        steps = re.findall(r"^Step (\d+): (.*)$", prompt.split("Candidates at each depth", 1)[0], flags=re.M)
        feedback = [
            {"depth": int(d), "feedback": f"Keep '{text}' and also name both numbers."} for d, text in steps
        ]
        return json.dumps({"feedback": feedback})
    solution = prompt.split("Solution:\n", 1)[1].split("\n\nFeedback:", 1)[0]
    steps = re.findall(r"^Step \d+: (.*)$", solution, flags=re.M)
    return "\n".join(f"Step {i}: Adding the numbers carefully, {s}" for i, s in enumerate(steps, start=1))


# The critic here is a capable (scripted) API model: path mode, whatever the environment's critic is.
PATH_MODE = {name: {"config": {"mode": "path"}} for name in ("critiques", "refined_paths")}
