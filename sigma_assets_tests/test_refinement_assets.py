"""The first five assets through Dagster, with the critic on the fault-injecting server (20% faults)."""

from __future__ import annotations

import dagster as dg
import polars as pl

from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.refinement.assets import (
    critiques,
    guard_rates,
    no_problem_lost,
    refined_answers_checked,
    refined_paths,
)
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets
from sigma_assets.defs.shared.resources import LLMResource
from sigma_assets.settings import Settings
from sigma_assets.testing.fault_server import FaultServer
from sigma_assets_tests.support import (
    PATH_MODE,
    SEARCH_CONFIG,
    arithmetic_policy,
    materialize_shard,
    scripted_critic,
    shard_with_problems,
)

ALL_FAULTS = ("429", "500", "timeout", "truncated", "invalid_json", "length")


FULL_SHARD = [
    raw_problems,
    mcts_trees,
    sibling_sets,
    critiques,
    refined_paths,
    no_problem_lost,
    guard_rates,
    refined_answers_checked,
]
UP_TO_CRITIQUES = [raw_problems, mcts_trees, sibling_sets, critiques]


def policy_of(server: FaultServer) -> LLMResource:
    return LLMResource(backend="openai", model="scripted-policy", base_url=server.base_url)


def run(settings, policy, critic, key, instance=None, assets=FULL_SHARD, raise_on_error=True):
    return materialize_shard(
        assets,
        key,
        resources=build_resources(settings) | {"policy": policy, "critic": critic},
        instance=instance or dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"mcts_trees": {"config": SEARCH_CONFIG}, **PATH_MODE}},
        raise_on_error=raise_on_error,
    )


def test_refinement_through_faults_then_replay(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    instance = dg.DagsterInstance.ephemeral()
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(
            responder=scripted_critic,
            fault_rate=0.2,
            fault_kinds=ALL_FAULTS,
            timeout_sleep_s=3.0,
            seed=7,
            retry_after_s=0.05,
        ) as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = LLMResource(
            backend="openai",
            model="gpt-4o-mini",
            base_url=critic_server.base_url,
            timeout_s=1.0,
            max_attempts=12,
        )
        first = run(settings, policy, critic, key, instance)
        assert first.success
        siblings = first.output_for_node("sibling_sets")
        refined = first.output_for_node("refined_paths")
        feedback = first.output_for_node("critiques")
        problems = set(siblings["problem_id"])
        assert problems and set(refined["problem_id"]) == problems
        assert feedback.height == siblings.height  # one feedback per (problem, depth)
        assert (
            refined["correct"].all() and not refined["drift"].any() and not refined["generic_feedback"].any()
        )
        assert refined["refined_steps"].list.first().str.starts_with("Adding the numbers carefully").all()
        assert all(c.passed for c in first.get_asset_check_evaluations())
        stats = critic_server.stats()
        assert stats["faults_total"] > 0  # the faults really happened, and were retried through
        metadata = first.asset_materializations_for_node("critiques")[0].metadata
        assert metadata["critic_cost_usd"].value > 0 and metadata["critic_retries"].value > 0

        second = run(settings, policy, critic, key, instance)
        assert second.success
        assert critic_server.stats()["total"] == stats["total"]  # a second materialisation makes no new calls
        assert second.output_for_node("refined_paths").equals(refined)


def test_failed_critic_names_the_problems(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=scripted_critic, fault_rate=1.0, fault_kinds=("500",)) as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = LLMResource(
            backend="openai", model="gpt-4o-mini", base_url=critic_server.base_url, max_attempts=2
        )
        result = run(settings, policy, critic, key, assets=UP_TO_CRITIQUES, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    solved = pl.DataFrame(result.output_for_node("sibling_sets"))["problem_id"].unique().to_list()
    assert "critique failed for" in message and "HTTP 500" in message
    assert all(pid in message for pid in solved)


def test_a_passing_failure_loses_nothing(tmp_path):
    """A call that fails for good once (then works) is retried per problem; the step still succeeds."""
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=scripted_critic, fail_requests={1: "500", 2: "500"}) as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = LLMResource(
            backend="openai",
            model="gpt-4o-mini",
            base_url=critic_server.base_url,
            max_attempts=2,
            concurrency=1,
        )
        result = run(settings, policy, critic, key, assets=UP_TO_CRITIQUES)
        assert result.success
        siblings = result.output_for_node("sibling_sets")
        assert result.output_for_node("critiques").height == siblings.height
        # One problem paid three calls (two failures, one success); every other problem one.
        assert critic_server.stats()["total"] == siblings["problem_id"].n_unique() + 2
