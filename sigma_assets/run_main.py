"""Runs the main jobs in the local Dagster instance (the README's first command).

`problems_job` once per shard, then `generation_job` once per (shard, temperature), as a backfill
would launch them, so the UI shows them as ordinary runs. Each run prints a line as it starts and
its headline figures when it ends.
"""

from __future__ import annotations

import sys
import time

import dagster as dg

from sigma_assets.definitions import defs, evaluation_job, generation_job, problems_job, training_job
from sigma_assets.defs.operations.pools import apply_pool_limits
from sigma_assets.evaluation.scoring import format_table

# Per asset, the metadata worth a line in the terminal; the UI shows all of it.
SUMMARY = {
    "raw_problems": ("dagster/row_count", "skipped_rows"),
    "mcts_trees": ("solved", "trees", "nodes", "policy_completion_tokens"),
    "sibling_sets": ("problems_with_path", "sibling_mean_visits", "sibling_reached_share"),
    "critiques": ("generic_rate", "step_fallback_problems", "critic_requests"),
    "refined_paths": ("drift_rate", "regurgitation_rate", "calls_per_problem", "tokens_per_problem"),
    "sft_dataset": ("samples", "tokens", "kept_original_share", "duplicates_removed"),
    "finetuned_model": ("steps", "final_loss", "tokens_per_s", "path"),
}
# The console stays quiet; the UI keeps every event.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def summary(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for asset, names in SUMMARY.items():
        events = result.asset_materializations_for_node(asset)
        if events:
            metadata = events[0].metadata
            values = ", ".join(f"{n.split('/')[-1]}={metadata[n].value}" for n in names if n in metadata)
            parts.append(f"  {asset}: {values}")
    return "\n".join(parts)


def run_all(job_name: str, instance: dg.DagsterInstance, started: float) -> list[str]:
    """One run per partition of the job (one run if it is unpartitioned); returns the keys that failed."""
    job = defs.resolve_job_def(job_name)
    keys = job.partitions_def.get_partition_keys() if job.partitions_def else [None]
    failed = []
    for index, key in enumerate(keys, start=1):
        print(
            f"[{time.monotonic() - started:6.0f} s] {job_name} {key or ''} ({index}/{len(keys)}) ...",
            flush=True,
        )
        t0 = time.monotonic()
        result = job.execute_in_process(
            run_config=QUIET, instance=instance, partition_key=key, raise_on_error=False
        )
        status = "ok" if result.success else "FAILED"
        print(f"  {status} in {time.monotonic() - t0:.0f} s (run {result.run_id})")
        print(summary(result), flush=True)
        if result.success and job_name == evaluation_job.name:
            print(format_table(result.output_for_node("eval_scores")), flush=True)
        if not result.success:
            failed.append(f"{job_name} {key}")
    return failed


def main() -> int:
    instance = dg.DagsterInstance.get()
    apply_pool_limits(instance)
    started = time.monotonic()
    failed = run_all(problems_job.name, instance, started)
    failed += run_all(generation_job.name, instance, started)
    if not failed:
        failed += run_all(training_job.name, instance, started)
    if not failed:
        failed += run_all(evaluation_job.name, instance, started)
    if failed:
        print(f"failed: {', '.join(failed)}; see the runs in the UI", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
