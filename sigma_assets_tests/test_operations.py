"""Backfill schedules, the training and evaluation sensors, run retries and pools, on real instances.

State is set up the way it arises: `raw_problems` materialised (or failed) by real runs, failures of the
generation stages by real runs that fail (their inputs are not in storage), and materialisations of the
(shard, temperature) stages reported to the instance, which is what their runs record.
"""

from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from sigma_assets.definitions import ASSETS, build_resources, defs
from sigma_assets.defs.evaluation.assets import eval_scores
from sigma_assets.defs.operations.pools import POOL_LIMITS, apply_pool_limits
from sigma_assets.defs.operations.schedules import (
    ASSETS_TAG,
    REASON_TAG,
    backfill_generation,
    backfill_problems,
)
from sigma_assets.defs.operations.sensors import evaluate_new_models, train_on_new_shards
from sigma_assets.defs.operations.status import GENERATION_CHAIN
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.refinement.assets import critiques, refined_paths
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets
from sigma_assets.defs.shared.partitions import SHARD_RETRY, SHARD_TEMPERATURE, SHARDS, TEMPERATURES
from sigma_assets.defs.shared.resources import ProblemsResource
from sigma_assets.defs.training.assets import VARIANTS, finetuned_model
from sigma_assets.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SHARD_KEYS = SHARDS.get_partition_keys()
S0, S1 = SHARD_KEYS[0], SHARD_KEYS[1]
T_LOW, T_HIGH = TEMPERATURES.get_partition_keys()[:2]
ALL_FOUR = tuple(asset.key for asset in GENERATION_CHAIN)
NOON = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)


def key(shard: str, temperature: str) -> str:
    return f"{shard}|{temperature}"


@pytest.fixture
def resources(tmp_path: Path) -> dict:
    return build_resources(Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")}))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


# -- setting up state -------------------------------------------------------------------------------


def land_problems(instance: dg.DagsterInstance, resources: dict, shard: str) -> None:
    result = dg.materialize([raw_problems], partition_key=shard, resources=resources, instance=instance)
    assert result.success


def fail_problems(instance: dg.DagsterInstance, resources: dict, shard: str, tmp_path: Path) -> None:
    absent = ProblemsResource(source=str(tmp_path / "absent.jsonl"))
    result = dg.materialize(
        [raw_problems],
        partition_key=shard,
        resources={**resources, "problems": absent},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success


def land(instance: dg.DagsterInstance, partition: str, *assets: dg.AssetsDefinition) -> None:
    for asset in assets:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset.key, partition=partition))


def fail_generation(
    instance: dg.DagsterInstance, resources: dict, partition: str, *selection: dg.AssetsDefinition
) -> None:
    """A real generation run that fails: the stages' inputs are not in storage. `sibling_sets` fails
    at once (the model stages' RetryPolicy would try again after 10 s and 20 s), the rest are skipped."""
    result = dg.materialize(
        [raw_problems, *GENERATION_CHAIN],
        selection=list(selection),
        partition_key=partition,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success


def queue_generation(instance: dg.DagsterInstance, partition: str) -> dg.DagsterRun:
    """A generation run created and not yet started (queued): its partitions are in progress."""
    shard, temperature = partition.split("|")
    tags = {
        "dagster/partition": partition,
        "dagster/partition/shard": shard,
        "dagster/partition/temperature": temperature,
    }
    job = defs.resolve_job_def("generation_job")
    return instance.create_run_for_job(job, tags=tags, asset_selection=frozenset(ALL_FOUR))


# -- evaluating ticks -------------------------------------------------------------------------------


def schedule_tick(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, when=NOON):
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    return schedule.evaluate_tick(context)


def requested(data) -> dict[str, tuple]:
    """partition -> (assets selected, why); the run keys and tags are checked apart."""
    found = {}
    for request in data.run_requests or []:
        selection = tuple(request.asset_selection) if request.asset_selection else None
        assert request.tags[ASSETS_TAG] == ",".join(
            k.to_user_string() for k in selection or [raw_problems.key]
        )
        found[request.partition_key] = (selection, request.tags[REASON_TAG])
    assert len(found) == len(data.run_requests or [])
    return found


def sensor_tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
    )
    return sensor.evaluate_tick(context)


# -- the backfill schedules -------------------------------------------------------------------------


def test_backfill_schedules_request_exactly_the_missing_and_failed_partitions(instance, resources, tmp_path):
    others = {shard: (None, "missing") for shard in SHARD_KEYS[2:]}  # only with SIGMA_NUM_SHARDS > 2

    # Nothing yet: every shard of problems is missing, and no generation run before its problems.
    assert requested(schedule_tick(backfill_problems, instance)) == {s: (None, "missing") for s in SHARD_KEYS}
    generation = schedule_tick(backfill_generation, instance)
    assert not generation.run_requests and "no (shard, temperature) to repair" in generation.skip_message

    land_problems(instance, resources, S0)
    fail_problems(instance, resources, S1, tmp_path)
    # S0|low is healthy; S0|high searched, then the run of the stages after the search failed.
    land(instance, key(S0, T_LOW), *GENERATION_CHAIN)
    land(instance, key(S0, T_HIGH), mcts_trees)
    fail_generation(instance, resources, key(S0, T_HIGH), sibling_sets, critiques, refined_paths)

    problems = schedule_tick(backfill_problems, instance)
    assert requested(problems) == {S1: (None, "failed"), **others}
    assert {r.run_key for r in problems.run_requests} >= {f"{S1}@{NOON.isoformat()}"}
    # S1's generation waits for its problems; S0|high re-runs from the failed stage on, not the search.
    assert requested(schedule_tick(backfill_generation, instance)) == {
        key(S0, T_HIGH): (ALL_FOUR[1:], "failed")
    }

    # The same tick evaluated again gives the same run keys (the scheduler submits them once); the
    # next tick gives new ones.
    again = schedule_tick(backfill_generation, instance)
    assert [r.run_key for r in again.run_requests] == [f"{key(S0, T_HIGH)}@{NOON.isoformat()}"]
    next_tick = NOON + datetime.timedelta(hours=1)
    later = schedule_tick(backfill_generation, instance, next_tick)
    assert [r.run_key for r in later.run_requests] == [f"{key(S0, T_HIGH)}@{next_tick.isoformat()}"]

    # S1's problems land (a real run): its generation partitions are now missing; one of them has a
    # run queued, which is left to it.
    land_problems(instance, resources, S1)
    queue_generation(instance, key(S1, T_LOW))
    land(instance, key(S0, T_HIGH), sibling_sets, critiques, refined_paths)
    problems = schedule_tick(backfill_problems, instance)
    assert requested(problems) == others
    if not others:
        assert "every shard of raw_problems" in problems.skip_message
    assert requested(schedule_tick(backfill_generation, instance)) == {key(S1, T_HIGH): (ALL_FOUR, "missing")}


def test_a_stage_that_failed_after_landing_is_repaired_with_everything_after_it(instance, resources):
    land(instance, S0, raw_problems)  # recorded, not in storage: the search below fails on reading it
    land(instance, key(S0, T_LOW), *GENERATION_CHAIN)
    # A later run of the stages after the search failed: they run again, the search (healthy) does not.
    fail_generation(instance, resources, key(S0, T_LOW), sibling_sets, critiques, refined_paths)
    found = requested(schedule_tick(backfill_generation, instance))
    assert found[key(S0, T_LOW)] == (ALL_FOUR[1:], "failed")
    assert set(found) == {key(S0, T_LOW), key(S0, T_HIGH)}
    assert found[key(S0, T_HIGH)] == (ALL_FOUR, "missing")


def test_requests_resolve_to_runs_of_their_jobs(instance):
    problems = schedule_tick(backfill_problems, instance).run_requests[0]
    assert backfill_problems.job_name == "problems_job" and backfill_generation.job_name == "generation_job"
    # Resolved against the job: the partition's tags are on the request, as on a launched run.
    assert problems.tags["dagster/partition"] == S0
    assert problems.tags["dagster/schedule_name"] == "backfill_problems"


# -- the sensors ------------------------------------------------------------------------------------


def training_requests(data) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in data.run_requests or []}


def newest_refined(instance: dg.DagsterInstance) -> int:
    return instance.fetch_materializations(refined_paths.key, limit=1).records[0].storage_id


def test_training_waits_for_every_generation_partition_then_trains_both_variants(instance, resources):
    assert "no partition of refined_paths" in sensor_tick(train_on_new_shards, instance, None).skip_message
    partitions = [str(k) for k in SHARD_TEMPERATURE.get_partition_keys()]
    for shard in SHARD_KEYS:
        land(instance, shard, raw_problems)
    for partition in partitions[:-1]:
        land(instance, partition, *GENERATION_CHAIN)
    # The last partition: searched, then the run of the stages after the search failed.
    land(instance, partitions[-1], mcts_trees)
    fail_generation(instance, resources, partitions[-1], sibling_sets, critiques, refined_paths)
    waiting = sensor_tick(train_on_new_shards, instance, None)
    assert not waiting.run_requests and partitions[-1] in waiting.skip_message
    assert waiting.cursor is None  # what landed meanwhile still counts as new next time

    land(instance, partitions[-1], sibling_sets, critiques, refined_paths)
    newest = newest_refined(instance)
    first = sensor_tick(train_on_new_shards, instance, None)
    assert training_requests(first) == {v: f"train:{v}:{newest}" for v in VARIANTS.get_partition_keys()}
    assert all(r.tags["sigma/after_storage_id"] == str(newest) for r in first.run_requests)
    assert first.cursor == str(newest)

    # Nothing new since: no request.
    assert not sensor_tick(train_on_new_shards, instance, first.cursor).run_requests

    # A shard lands again (a repaired or re-run partition): both variants train on the new set.
    land(instance, partitions[0], *GENERATION_CHAIN)
    second = sensor_tick(train_on_new_shards, instance, first.cursor)
    assert training_requests(second) == {
        v: f"train:{v}:{newest_refined(instance)}" for v in VARIANTS.get_partition_keys()
    }
    # A partition being regenerated holds training back until its run ends.
    land(instance, partitions[1], refined_paths)
    queue_generation(instance, partitions[0])
    held = sensor_tick(train_on_new_shards, instance, second.cursor)
    assert not held.run_requests and partitions[0] in held.skip_message


def test_training_without_a_cursor_skips_variants_trained_after_the_newest_data(instance):
    for shard in SHARD_KEYS:
        land(instance, shard, raw_problems)
    for partition in SHARD_TEMPERATURE.get_partition_keys():
        land(instance, str(partition), *GENERATION_CHAIN)
    land(instance, "sigma", finetuned_model)  # trained after the data landed; mcts never was
    data = sensor_tick(train_on_new_shards, instance, None)
    assert training_requests(data) == {"mcts": f"train:mcts:{newest_refined(instance)}"}
    land(instance, "mcts", finetuned_model)
    assert not sensor_tick(train_on_new_shards, instance, None).run_requests


def test_evaluation_follows_both_new_models(instance):
    land(instance, "sigma", finetuned_model)
    assert "waiting for both fine-tunes" in sensor_tick(evaluate_new_models, instance, None).skip_message
    land(instance, "mcts", finetuned_model)
    first = sensor_tick(evaluate_new_models, instance, None)
    newest = instance.fetch_materializations(finetuned_model.key, limit=1).records[0].storage_id
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [(None, f"evaluate:{newest}")]
    assert first.cursor == str(newest)
    assert not sensor_tick(evaluate_new_models, instance, first.cursor).run_requests
    # Without a cursor, an evaluation newer than both models means they are scored already.
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=eval_scores.key))
    assert not sensor_tick(evaluate_new_models, instance, None).run_requests
    land(instance, "sigma", finetuned_model)
    assert len(sensor_tick(evaluate_new_models, instance, first.cursor).run_requests) == 1


def test_schedules_and_sensors_are_in_the_code_location_and_off_by_default():
    for name, job in (("backfill_problems", "problems_job"), ("backfill_generation", "generation_job")):
        schedule = defs.resolve_schedule_def(name)
        assert schedule.job_name == job
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    for name, job in (("train_on_new_shards", "training_job"), ("evaluate_new_models", "evaluation_job")):
        sensor = defs.resolve_sensor_def(name)
        assert [t.job_name for t in sensor.targets] == [job]
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    names = {s.name for s in defs.get_repository_def().schedule_defs}
    assert names == {"backfill_problems", "backfill_generation"}


# -- retries and pools ------------------------------------------------------------------------------


def documented_pool_limits() -> dict[str, int]:
    section = (REPO / "docs" / "operations.md").read_text().split("## Retries and pools", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| `(\w+)` \| (\d+) \|", section, re.MULTILINE)}


def test_the_instance_retries_crashed_runs_and_limits_pools_as_documented(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure  # crashed runs only
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert pools.pool_granularity is not None and pools.pool_granularity.value == "op"
        assert documented_pool_limits() == POOL_LIMITS
        assert apply_pool_limits(instance) == POOL_LIMITS
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert limits == POOL_LIMITS
        # A limit someone set (UI, `dagster instance concurrency set`) is theirs to keep.
        instance.event_log_storage.set_concurrency_slots("llm_critic", 8)
        assert apply_pool_limits(instance)["llm_critic"] == 8


def test_model_stages_carry_their_pool_and_retry_policy():
    expected_pools = {
        mcts_trees.key: "llm_policy",
        critiques.key: "llm_critic",
        refined_paths.key: "llm_critic",
        finetuned_model.key: "gpu",
        eval_scores.key: "gpu",
    }
    by_key = {asset.key: asset for asset in ASSETS}
    for asset_key, pool in expected_pools.items():
        assert by_key[asset_key].op.pool == pool, asset_key
    for asset in (mcts_trees, critiques, refined_paths):
        assert asset.op.retry_policy == SHARD_RETRY
        assert asset.op.retry_policy.max_retries >= 1
    # sibling_sets calls no model (it reads the trees): no pool to wait on.
    assert sibling_sets.op.pool is None
    # Every pool a step names has its limit.
    assert {a.op.pool for a in ASSETS if a.op.pool} == set(POOL_LIMITS)
