"""Runs the main jobs in the local Dagster instance (the README's first command), watched.

`problems_job` once per shard, `generation_job` once per (shard, temperature), then `training_job` per
variant and `evaluation_job`, as a backfill would launch them. Each run is launched through the code
location of `workspace.yaml`, exactly as the UI launches one, so it belongs to the `sigma` location
(lineage, the Overview timeline and Re-execute treat it like any other run). While a run goes, a line
says which partition and stage is running, how many steps are done and the time elapsed; when it ends,
its headline figures; at the end, the accuracy table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import dagster as dg
from dagster._core.execution.api import execute_run_iterator
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_representation.external import RemoteJob
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._utils.hosted_user_process import recon_job_from_origin

from sigma_assets.definitions import defs, evaluation_job, generation_job, problems_job, training_job
from sigma_assets.defs.operations.pools import apply_pool_limits
from sigma_assets.evaluation.scoring import format_table

WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
LOCATION = "sigma"
JOBS = (problems_job.name, generation_job.name, training_job.name, evaluation_job.name)
# Per asset, the metadata worth a line in the terminal; the UI shows all of it.
SUMMARY = {
    "raw_problems": ("dagster/row_count", "skipped_rows"),
    "mcts_trees": ("solved", "trees", "nodes", "policy_completion_tokens"),
    "sibling_sets": ("problems_with_path", "sibling_mean_visits", "sibling_reached_share"),
    "critiques": ("generic_rate", "step_fallback_problems", "critic_requests"),
    "refined_paths": ("drift_rate", "regurgitation_rate", "calls_per_problem", "tokens_per_problem"),
    "sft_dataset": ("samples", "revised", "kept_original", "kept_original_share", "tokens"),
    "finetuned_model": ("steps", "final_loss", "tokens_per_s", "path"),
}
# The console stays quiet (the UI keeps every event); steps run in this process, one after another,
# instead of a process each that loads the definitions again.
RUN_CONFIG = {
    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    "execution": {"config": {"in_process": {}}},
}
HEARTBEAT_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __str__(self) -> str:
        return f"[{time.monotonic() - self.started:6.0f} s]"


def launch(
    instance: dg.DagsterInstance,
    context: WorkspaceRequestContext,
    remote_job: RemoteJob,
    key: str | None,
    run_config: Mapping[str, Any] = RUN_CONFIG,
) -> DagsterRun:
    """Create one run of `remote_job` for partition `key` from the code location's snapshot, as the
    UI's Materialize does, so the run belongs to the location."""
    tags: Mapping[str, str] = {}
    if key is not None:
        tags = defs.resolve_job_def(remote_job.name).get_tags_for_partition_key(key, selected_asset_keys=None)
    plan = context.get_code_location(LOCATION).get_execution_plan(
        remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
    )
    return instance.create_run(
        job_name=remote_job.name,
        run_id=None,
        run_config=dict(run_config),
        resolved_op_selection=None,
        step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags={**remote_job.tags, **tags},
        job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=plan.execution_plan_snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection=None,
        asset_check_selection=None,
        asset_graph=context.asset_graph,
    )


def execute(instance: dg.DagsterInstance, run: DagsterRun, label: str, clock: Clock) -> dg.DagsterRunStatus:
    """Execute the run here, as a run worker would (this process has the definitions loaded already),
    printing a line as each step starts or fails, and every `HEARTBEAT_S` while a step runs."""
    total = len(run.step_keys_to_execute or [])
    done = 0
    running: list[tuple[str, float]] = []  # the step in progress and when it started
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT_S):
            if running:
                step, since = running[-1]
                print(f"{clock}   {label}: {step} running for {time.monotonic() - since:.0f} s", flush=True)

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        job = recon_job_from_origin(cast(JobPythonOrigin, run.job_code_origin))
        for event in execute_run_iterator(job, run, instance):
            if event.event_type == dg.DagsterEventType.STEP_START:
                running.append((str(event.step_key), time.monotonic()))
                print(f"{clock}   {label}: {event.step_key} running ({done}/{total} steps done)", flush=True)
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                done += 1
            elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
                print(f"{clock}   {label}: {event.step_key} FAILED", flush=True)
    finally:
        stop.set()
        thread.join()
    finished = instance.get_run_by_id(run.run_id)
    assert finished is not None
    return finished.status


def summary(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    by_asset = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None:
            by_asset[materialization.asset_key.to_user_string()] = materialization.metadata
    parts = []
    for asset, names in SUMMARY.items():
        if asset in by_asset:
            metadata: dict[str, Any] = by_asset[asset]
            values = ", ".join(f"{n.split('/')[-1]}={metadata[n].value}" for n in names if n in metadata)
            parts.append(f"  {asset}: {values}")
    return "\n".join(parts)


def run_job(
    job_name: str, instance: dg.DagsterInstance, process: WorkspaceProcessContext, clock: Clock
) -> list[str]:
    """One run per partition of the job, one after another; returns the partitions that failed."""
    context = process.create_request_context()
    location = context.get_code_location(LOCATION)
    repository = next(iter(location.get_repositories().values()))
    remote_job = repository.get_full_job(job_name)
    job = defs.resolve_job_def(job_name)
    keys: list[str | None] = list(job.partitions_def.get_partition_keys()) if job.partitions_def else [None]
    failed = []
    for index, key in enumerate(keys, start=1):
        label = f"{job_name} {key or ''}".strip()
        print(f"{clock} {label} ({index}/{len(keys)}) launched", flush=True)
        t0 = time.monotonic()
        run = launch(instance, context, remote_job, key)
        run_id = run.run_id
        status = execute(instance, run, label, clock)
        ok = status == dg.DagsterRunStatus.SUCCESS
        print(
            f"{clock} {label}: {'ok' if ok else status.value} in {time.monotonic() - t0:.0f} s (run {run_id})"
        )
        lines = summary(instance, run_id)
        if lines:
            print(lines, flush=True)
        if not ok:
            failed.append(label)
    return failed


def quiet_libraries() -> None:
    """One line per step is the progress shown here: the libraries' own progress bars and INFO lines (here
    and in the trainer's process, which inherits the environment) would bury it; SIGMA_VERBOSE=1 keeps
    them."""
    for variable in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(variable, "1")  # TQDM_DISABLE: bars drawn with tqdm itself (GGUF conversion)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def load_quietly(asset: str, instance: dg.DagsterInstance, verbose: bool) -> Any:
    """The asset's stored value. Loading outside a run builds a context whose console logger prints the
    IO manager's DEBUG line, whatever the logging levels: its output is dropped unless verbose."""
    if verbose:
        return defs.load_asset_value(asset, instance=instance)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return defs.load_asset_value(asset, instance=instance)


def evaluation_notes(instance: dg.DagsterInstance) -> list[str]:
    """What the last evaluation says under its table: what the ablation compared, what was not scored."""
    event = instance.get_latest_materialization_event(dg.AssetKey("eval_scores"))
    materialization = event.asset_materialization if event else None
    notes = materialization.metadata.get("notes") if materialization else None
    return [str(note) for note in notes.value] if isinstance(notes, dg.JsonMetadataValue) else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the main jobs over every partition, watched.")
    parser.add_argument(
        "--jobs", nargs="+", choices=JOBS, default=list(JOBS), help="these jobs only, in the main order"
    )
    jobs = [job for job in JOBS if job in parser.parse_args(argv).jobs]
    verbose = os.environ.get("SIGMA_VERBOSE") == "1"
    if not verbose:
        quiet_libraries()
    instance = dg.DagsterInstance.get()
    apply_pool_limits(instance)
    clock = Clock()
    failed: list[str] = []
    target = WorkspaceFileTarget(paths=[str(WORKSPACE)])
    with WorkspaceProcessContext(
        instance, target, code_server_log_level="INFO" if verbose else "WARNING"
    ) as process:
        errors = process.create_request_context().get_code_location_error(LOCATION)
        if errors:
            print(f"the code location does not load:\n{errors.to_string()}", file=sys.stderr)
            return 1
        for job_name in jobs:
            failed += run_job(job_name, instance, process, clock)
            if failed:  # training on a partial data set would mislead; fix and rerun
                break
    if failed:
        print(f"failed: {', '.join(failed)}; see the runs in the UI", file=sys.stderr)
        return 1
    if evaluation_job.name in jobs:
        table = load_quietly("eval_scores", instance, verbose)
        print(format_table(table, evaluation_notes(instance)), flush=True)
    print(f"{clock} done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
