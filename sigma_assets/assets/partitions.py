"""The problem-shard partitions, fixed when the code location loads (SIGMA_NUM_SHARDS)."""

from __future__ import annotations

import dagster as dg

from sigma_assets.settings import Settings
from sigma_assets.shards import shard_keys

SETTINGS = Settings.from_env()
SHARDS = dg.StaticPartitionsDefinition(shard_keys(SETTINGS.num_shards))
# One run per shard: a failed shard is retried alone and a new shard never touches the others.
ONE_RUN_PER_SHARD = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
