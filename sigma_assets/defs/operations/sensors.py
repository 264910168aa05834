"""Sensors that bring training and evaluation up to date once new generation data has landed.

`train_on_new_shards` requests training_job for both variants when every generation partition is
healthy and a `refined_paths` partition landed after the last request (its cursor: the newest
`refined_paths` materialisation it has acted on). `evaluate_new_models` requests evaluation_job once
both fine-tunes are materialised and one of them is newer than the last evaluation, so evaluation always
scores the new models, never a half-trained pair.
"""

from __future__ import annotations

import dagster as dg

from sigma_assets.defs.evaluation.assets import eval_scores
from sigma_assets.defs.operations.status import IN_PROGRESS, MATERIALIZED, generation_state, statuses
from sigma_assets.defs.refinement.assets import refined_paths
from sigma_assets.defs.training.assets import VARIANTS, finetuned_model, sft_dataset

TRAINING_JOB = "training_job"
EVALUATION_JOB = "evaluation_job"
TRIGGER_TAG = "sigma/trigger"
# The newest materialisation the request acted on (a storage id of the event log).
AFTER_TAG = "sigma/after_storage_id"


def latest_storage_id(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> int | None:
    """The storage id of the newest materialisation of `key` (of one partition, if given)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0].storage_id if records else None


@dg.sensor(
    name="train_on_new_shards",
    job_name=TRAINING_JOB,
    minimum_interval_seconds=60,
    # Off until switched on: a training run is the most expensive run of the project (GPU hours).
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Once every generation partition is materialised and refined_paths has new data, "
    "training_job for both variants (sigma, mcts).",
)
def train_on_new_shards(context: dg.SensorEvaluationContext):
    instance = context.instance
    newest = latest_storage_id(instance, refined_paths.key)
    if newest is None:
        return dg.SkipReason("no partition of refined_paths is materialised yet")
    consumed = int(context.cursor) if context.cursor else None
    if consumed is not None and newest <= consumed:
        return dg.SkipReason("no refined_paths materialisation since the last training request")
    # The cursor stays put while waiting, so the data that landed meanwhile still counts as new.
    state = generation_state(instance)
    if not state.complete:
        pending = {r.partition for r in state.repairs} | set(state.waiting) | set(state.shards_not_landed)
        return dg.SkipReason(f"not training on a partial set; waiting for {sorted(pending)}")
    if any(IN_PROGRESS in statuses(instance, asset).values() for asset in (sft_dataset, finetuned_model)):
        return dg.SkipReason("a training run is in progress")
    requests = []
    for variant in VARIANTS.get_partition_keys():
        # Without a cursor (the sensor just switched on): a variant trained after the newest data is current.
        since = consumed
        if since is None:
            since = latest_storage_id(instance, finetuned_model.key, variant)
        if since is None or newest > since:
            requests.append(
                dg.RunRequest(
                    run_key=f"train:{variant}:{newest}",
                    partition_key=variant,
                    tags={TRIGGER_TAG: "new_refined_paths", AFTER_TAG: str(newest)},
                )
            )
    context.update_cursor(str(newest))
    return requests or dg.SkipReason("both variants were trained after the newest refined_paths")


@dg.sensor(
    name="evaluate_new_models",
    job_name=EVALUATION_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Once both fine-tunes are materialised and one is newer than the last evaluation, "
    "evaluation_job (base, sigma and mcts on every benchmark).",
)
def evaluate_new_models(context: dg.SensorEvaluationContext):
    instance = context.instance
    models = statuses(instance, finetuned_model)
    if any(status != MATERIALIZED for status in models.values()):
        found = {v: status.value if status else "missing" for v, status in models.items()}
        return dg.SkipReason(f"waiting for both fine-tunes: {found}")
    if IN_PROGRESS in statuses(instance, sft_dataset).values():
        return dg.SkipReason("a training run is in progress")
    newest = max(latest_storage_id(instance, finetuned_model.key, v) or 0 for v in models)
    # Without a cursor (the sensor just switched on), models older than the last evaluation count as scored.
    since = int(context.cursor) if context.cursor else latest_storage_id(instance, eval_scores.key)
    if since is not None and newest <= since:
        return dg.SkipReason("no fine-tune newer than the last evaluation")
    context.update_cursor(str(newest))
    return dg.RunRequest(
        run_key=f"evaluate:{newest}", tags={TRIGGER_TAG: "new_finetuned_model", AFTER_TAG: str(newest)}
    )


SENSORS = [train_on_new_shards, evaluate_new_models]
