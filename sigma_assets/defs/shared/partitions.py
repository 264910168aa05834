"""Partitions, fixed when the code location loads (SIGMA_NUM_SHARDS, SIGMA_TEMPERATURES).

`raw_problems` is partitioned by problem shard. The search and refinement stages are partitioned by
shard × temperature: the paper builds one data set at each sampling temperature and combines them, so
each temperature is an independent search of the same problems, materialised and retried on its own.
"""

from __future__ import annotations

import functools

import dagster as dg

from sigma_assets.data.shards import shard_keys
from sigma_assets.settings import Settings

SETTINGS = Settings.from_env()
SHARDS = dg.StaticPartitionsDefinition(shard_keys(SETTINGS.num_shards))
TEMPERATURES = dg.StaticPartitionsDefinition(list(SETTINGS.temperatures))
SHARD_TEMPERATURE = dg.MultiPartitionsDefinition({"shard": SHARDS, "temperature": TEMPERATURES})
# One run per partition: a failed one is retried alone and a new shard never touches the others.
ONE_RUN_PER_PARTITION = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
# A run that dies (a lost machine, an OOM) is retried; finished calls replay from the store.
SHARD_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# A (shard, temperature) partition reads its shard of `raw_problems`.
SAME_SHARD = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="shard")

_generation_asset = functools.partial(
    dg.asset, backfill_policy=ONE_RUN_PER_PARTITION, group_name="generation", kinds={"polars", "parquet"}
)
# `raw_problems`: a parquet table per shard.
shard_asset = functools.partial(_generation_asset, partitions_def=SHARDS)
# Search and refinement: a parquet table per (shard, temperature).
search_asset = functools.partial(_generation_asset, partitions_def=SHARD_TEMPERATURE)


def shard_and_temperature(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
) -> tuple[str, str]:
    """The (shard, temperature) keys of the partition being materialised or checked."""
    key = context.partition_key
    if not isinstance(key, dg.MultiPartitionKey):
        key = dg.MultiPartitionKey(dict(zip(("shard", "temperature"), str(key).split("|"), strict=True)))
    return key.keys_by_dimension["shard"], key.keys_by_dimension["temperature"]


def store_namespace(role: str, context: dg.AssetExecutionContext) -> str:
    """Where a partition's model responses are kept: `<role>/<shard>/<temperature>`."""
    shard, temperature = shard_and_temperature(context)
    return f"{role}/{shard}/{temperature}"
