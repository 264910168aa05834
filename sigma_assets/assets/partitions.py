"""The problem-shard partitions, fixed when the code location loads (SIGMA_NUM_SHARDS)."""

from __future__ import annotations

import functools

import dagster as dg

from sigma_assets.settings import Settings
from sigma_assets.shards import shard_keys

SETTINGS = Settings.from_env()
SHARDS = dg.StaticPartitionsDefinition(shard_keys(SETTINGS.num_shards))
# One run per shard: a failed shard is retried alone and a new shard never touches the others.
ONE_RUN_PER_SHARD = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
# A shard run that dies (a lost machine, an OOM) is retried; finished calls replay from the store.
SHARD_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Every data-generation asset: a parquet table per shard, launched one run per shard.
shard_asset = functools.partial(
    dg.asset,
    partitions_def=SHARDS,
    backfill_policy=ONE_RUN_PER_SHARD,
    group_name="generation",
    kinds={"polars", "parquet"},
)
