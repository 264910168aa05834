"""Concurrency pool limits of the instance.

Steps name their pool in code (`pool=` on the asset); the limit of each pool lives in the instance's
storage: dagster.yaml sets only the default for pools without one (`concurrency: pools: default_limit`),
so these are set through the instance, as `dagster instance concurrency set <pool> <limit>` does.
"""

from __future__ import annotations

import dagster as dg

POOL_LIMITS = {
    # The search's policy model: in process it holds the machine's cores or GPU, one search at a time.
    "llm_policy": 1,
    # The critic: a remote API with its own bounded concurrency per step; two shards may overlap.
    "llm_critic": 2,
    # Training and evaluation load models onto the accelerator: one at a time.
    "gpu": 1,
}


def apply_pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """Set each pool's limit unless someone set one already (UI or CLI); returns the limits in force."""
    storage = instance.event_log_storage
    chosen = {p.name: p.limit for p in storage.get_pool_limits() if not p.from_default}
    for pool, limit in POOL_LIMITS.items():
        if pool not in chosen:
            storage.set_concurrency_slots(pool, limit)
            chosen[pool] = limit
    return {pool: chosen[pool] for pool in POOL_LIMITS}
