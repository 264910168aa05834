"""Runs the main job once per shard in the local Dagster instance (the README's first command).

Each shard is its own run, as a backfill would launch it, so the UI shows them as ordinary runs.
"""

from __future__ import annotations

import sys
import time

import dagster as dg

from sigma_assets.definitions import defs, generation_job


def main() -> int:
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(generation_job.name)
    keys = job.partitions_def.get_partition_keys() if job.partitions_def else []
    failed = []
    for key in keys:
        started = time.monotonic()
        result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        status = "ok" if result.success else "FAILED"
        elapsed = time.monotonic() - started
        print(f"{generation_job.name} {key}: {status} in {elapsed:.1f} s (run {result.run_id})")
        if not result.success:
            failed.append(key)
    if failed:
        print(f"failed shards: {', '.join(failed)}; see the runs in the UI", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
