"""Scheduled backfills: each tick requests exactly the partitions that are missing or failed.

A schedule launches runs of one job, so there are two: `raw_problems` shards (problems_job) on the
hour, and (shard, temperature) partitions of the generation stages (generation_job) half an hour later,
so a shard whose problems landed on the hour is searched and refined the same hour. Healthy partitions,
and partitions a run is at (queued or started), are never requested.
"""

from __future__ import annotations

import datetime

import dagster as dg

from sigma_assets.defs.operations.status import Repair, generation_state, shard_repairs

PROBLEMS_JOB = "problems_job"
GENERATION_JOB = "generation_job"
REASON_TAG = "sigma/backfill_reason"  # "missing" or "failed"
ASSETS_TAG = "sigma/backfill_assets"  # the assets the run materialises again


def _tick(context: dg.ScheduleEvaluationContext) -> str:
    when = context.scheduled_execution_time or datetime.datetime.now(datetime.UTC)
    return when.isoformat()


def _request(repair: Repair, tick: str, select: bool) -> dg.RunRequest:
    return dg.RunRequest(
        # One request per partition per tick: a tick evaluated again submits nothing new.
        run_key=f"{repair.partition}@{tick}",
        partition_key=repair.partition,
        # Only the unhealthy asset and those after it: healthy upstream tables are read, not rebuilt.
        asset_selection=list(repair.assets) if select else None,
        tags={REASON_TAG: repair.reason, ASSETS_TAG: ",".join(k.to_user_string() for k in repair.assets)},
    )


@dg.schedule(
    name="backfill_problems",
    cron_schedule="0 * * * *",
    job_name=PROBLEMS_JOB,
    execution_timezone="UTC",
    # Off until switched on (UI or `dagster schedule start`): a backfill loads and spends on its own.
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every hour: a problems_job run for each shard of raw_problems that is missing or failed.",
)
def backfill_problems(context: dg.ScheduleEvaluationContext):
    repairs = shard_repairs(context.instance)
    if not repairs:
        return dg.SkipReason("every shard of raw_problems is materialised or being materialised")
    tick = _tick(context)
    return [_request(repair, tick, select=False) for repair in repairs]


@dg.schedule(
    name="backfill_generation",
    cron_schedule="30 * * * *",
    job_name=GENERATION_JOB,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every hour at :30: a generation_job run for each (shard, temperature) whose search or "
    "refinement is missing or failed, once the shard's raw_problems has landed.",
)
def backfill_generation(context: dg.ScheduleEvaluationContext):
    state = generation_state(context.instance)
    if not state.repairs:
        waiting = f" ({len(state.waiting)} wait for their problems or a running run)" if state.waiting else ""
        return dg.SkipReason(f"no (shard, temperature) to repair{waiting}")
    tick = _tick(context)
    return [_request(repair, tick, select=True) for repair in state.repairs]


SCHEDULES = [backfill_problems, backfill_generation]
