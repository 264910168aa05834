"""What the instance says about each partition of the generation stages: healthy, or missing/failed."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.refinement.assets import critiques, refined_paths
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets

MATERIALIZED = dg.AssetPartitionStatus.MATERIALIZED
FAILED = dg.AssetPartitionStatus.FAILED
IN_PROGRESS = dg.AssetPartitionStatus.IN_PROGRESS
# The (shard, temperature) stages in the order a generation run materialises them.
GENERATION_CHAIN = (mcts_trees, sibling_sets, critiques, refined_paths)


def statuses(
    instance: dg.DagsterInstance, asset: dg.AssetsDefinition
) -> dict[str, dg.AssetPartitionStatus | None]:
    """Every partition of `asset` with its status: None for one never materialised nor attempted."""
    partitions_def = asset.partitions_def
    assert partitions_def is not None
    keys = partitions_def.get_partition_keys()
    # None when the instance has never seen the asset: every partition is missing.
    found = instance.get_status_by_partition(asset.key, keys, partitions_def) or {}
    return {str(key): found.get(key) for key in keys}


@dataclass(frozen=True)
class Repair:
    """A partition to run again: why, and which assets (the first unhealthy one and all after it)."""

    partition: str
    reason: str  # "failed" when any of `assets` failed in its latest run, else "missing"
    assets: tuple[dg.AssetKey, ...]


def _reason(found: list[dg.AssetPartitionStatus | None]) -> str:
    return "failed" if FAILED in found else "missing"


def shard_repairs(instance: dg.DagsterInstance) -> list[Repair]:
    """The shards of `raw_problems` missing or failed (one in progress is left to its run)."""
    return [
        Repair(shard, _reason([status]), (raw_problems.key,))
        for shard, status in statuses(instance, raw_problems).items()
        if status in (None, FAILED)
    ]


@dataclass(frozen=True)
class GenerationState:
    repairs: list[Repair]  # unhealthy (shard, temperature) whose shard of problems has landed
    waiting: list[str]  # unhealthy partitions not repairable now: problems not landed, or a run at it
    shards_not_landed: list[str]  # shards of `raw_problems` not materialised in their latest state

    @property
    def complete(self) -> bool:
        return not self.repairs and not self.waiting and not self.shards_not_landed


def generation_state(instance: dg.DagsterInstance) -> GenerationState:
    """Each (shard, temperature) is healthy when all four stages are materialised and the latest run
    of none of them failed; the rest are repairs, or wait for their problems or for a running run."""
    shards = statuses(instance, raw_problems)
    by_asset = [statuses(instance, asset) for asset in GENERATION_CHAIN]
    repairs: list[Repair] = []
    waiting: list[str] = []
    for key in mcts_trees.partitions_def.get_partition_keys():
        found = [status_of[str(key)] for status_of in by_asset]
        unhealthy = [index for index, status in enumerate(found) if status != MATERIALIZED]
        if not unhealthy:
            continue
        shard = key.keys_by_dimension["shard"]
        # Generation reads the shard's problems: they land first (a later tick repairs the rest).
        if IN_PROGRESS in found or shards[shard] != MATERIALIZED:
            waiting.append(str(key))
            continue
        chain = tuple(asset.key for asset in GENERATION_CHAIN[unhealthy[0] :])
        repairs.append(Repair(str(key), _reason([found[i] for i in unhealthy]), chain))
    return GenerationState(repairs, waiting, [s for s, status in shards.items() if status != MATERIALIZED])
