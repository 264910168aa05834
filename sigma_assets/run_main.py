"""Runs the main job once per shard in the local Dagster instance (the README's first command).

Each shard is its own run, as a backfill would launch it, so the UI shows them as ordinary runs.
"""

from __future__ import annotations

import sys
import time

import dagster as dg

from sigma_assets.assets.partitions import SETTINGS
from sigma_assets.definitions import defs, demo_run_config, generation_job

# Per asset, the metadata worth a line in the terminal; the UI shows all of it.
SUMMARY = {
    "raw_problems": ("dagster/row_count",),
    "mcts_trees": ("solved_share", "nodes", "policy_completion_tokens"),
    "sibling_sets": ("problems_with_path", "problems_without_correct_leaf"),
    "critiques": ("generic_rate", "step_fallback_problems", "critic_requests"),
    "refined_paths": ("drift_rate", "regurgitation_rate", "calls_per_problem", "tokens_per_problem"),
}


def summary(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for asset, names in SUMMARY.items():
        events = result.asset_materializations_for_node(asset)
        if events:
            metadata = events[0].metadata
            values = ", ".join(f"{n.split('/')[-1]}={metadata[n].value}" for n in names if n in metadata)
            parts.append(f"  {asset}: {values}")
    return "\n".join(parts)


def main() -> int:
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(generation_job.name)
    keys = job.partitions_def.get_partition_keys() if job.partitions_def else []
    # The job's default config, with the console quiet: the UI keeps every event.
    run_config = demo_run_config(SETTINGS) | {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    failed = []
    for key in keys:
        started = time.monotonic()
        result = job.execute_in_process(
            run_config=run_config, instance=instance, partition_key=key, raise_on_error=False
        )
        status = "ok" if result.success else "FAILED"
        elapsed = time.monotonic() - started
        print(f"{generation_job.name} {key}: {status} in {elapsed:.1f} s (run {result.run_id})")
        print(summary(result), flush=True)
        if not result.success:
            failed.append(key)
    if failed:
        print(f"failed shards: {', '.join(failed)}; see the runs in the UI", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
