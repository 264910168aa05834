"""The first five assets through Dagster, with the critic on the fault-injecting server (20% faults)."""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.refinement.assets import (
    critiques,
    drift_and_generic_rates_under_threshold,
    every_path_ends_correct,
    no_problem_lost,
    refined_paths,
)
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets
from sigma_assets.defs.shared.resources import OpenAIModelResource
from sigma_assets.llm.accounting import price_of
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.llm.retry import ATTEMPT_SEED_STRIDE
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
    drift_and_generic_rates_under_threshold,
    every_path_ends_correct,
]
UP_TO_CRITIQUES = [raw_problems, mcts_trees, sibling_sets, critiques]


def policy_of(server: FaultServer) -> OpenAIModelResource:
    return OpenAIModelResource(api_key="unused", model="scripted-policy", base_url=server.base_url)


def critic_of(server: FaultServer, **limits: Any) -> OpenAIModelResource:
    return OpenAIModelResource(api_key="unused", model="gpt-4o-mini", base_url=server.base_url, **limits)


def run(settings, policy, critic, key, instance=None, assets=FULL_SHARD, raise_on_error=True, selection=None):
    return materialize_shard(
        assets,
        key,
        selection=selection,
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
        critic = critic_of(critic_server, timeout_s=1.0, max_attempts=12)
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


def step_events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def test_a_permanent_500_costs_max_attempts_and_names_the_problem(tmp_path):
    """One retry budget: the failing request is sent `max_attempts` times in all, not once per layer
    (client attempts, per-job resend, step fallback, per-problem diagnosis, the step RetryPolicy)."""
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    doomed: list[str] = []

    def critic_failing_one_problem(request: dict, index: int) -> str:
        prompt = request["messages"][-1]["content"]
        if doomed and doomed[0] in prompt:
            raise RuntimeError("this problem always gets HTTP 500")
        return scripted_critic(request, index)

    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=critic_failing_one_problem) as critic_server,
    ):
        policy = policy_of(policy_server)
        search = run(settings, policy, None, key, assets=UP_TO_CRITIQUES[:3])
        problems = search.output_for_node("raw_problems")
        solved = sorted(set(search.output_for_node("sibling_sets")["problem_id"]))
        doomed.append(problems.filter(pl.col("problem_id") == solved[0])["problem"][0])
        critic = critic_of(critic_server, max_attempts=3)
        result = run(settings, policy, critic, key, assets=UP_TO_CRITIQUES, raise_on_error=False)
        requests = critic_server.stats()["requests"]["/v1/chat/completions"]
    assert not result.success
    # One request per solved problem; the doomed one sent 3 times in all, and the step not retried.
    assert requests == len(solved) - 1 + 3
    assert not step_events(result, "STEP_UP_FOR_RETRY") and not step_events(result, "STEP_RESTARTED")
    [failure] = step_events(result, "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert f"critique failed for 1 of {len(solved)} problems" in message and "HTTP 500" in message
    assert solved[0] in message and all(pid not in message for pid in solved[1:])


def test_a_critic_that_fails_everything_names_every_problem(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=scripted_critic, fault_rate=1.0, fault_kinds=("500",)) as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = critic_of(critic_server, max_attempts=2)
        result = run(settings, policy, critic, key, assets=UP_TO_CRITIQUES, raise_on_error=False)
        requests = critic_server.stats()["requests"]["/v1/chat/completions"]
    assert not result.success
    solved = pl.DataFrame(result.output_for_node("sibling_sets"))["problem_id"].unique().to_list()
    assert requests == 2 * len(solved)
    message = str(step_events(result, "STEP_FAILURE")[0].event_specific_data.error)
    assert "critique failed for" in message and "HTTP 500" in message
    assert all(pid in message for pid in solved)


def invalid_first_answers(request: dict, sample_index: int) -> str:
    """A critic whose first answer to every critique and revision is unusable: only a retry with another
    seed (the client's next attempt) gets a real answer."""
    if request.get("seed", 0) < ATTEMPT_SEED_STRIDE:
        return "I would rather not answer in the requested format."
    return scripted_critic(request, sample_index)


def test_rejected_answers_are_kept_and_a_rerun_sends_nothing(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    instance = dg.DagsterInstance.ephemeral()
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=invalid_first_answers) as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = critic_of(critic_server)
        first = run(settings, policy, critic, key, instance)
        assert first.success
        refined = first.output_for_node("refined_paths")
        problems = refined.height
        assert problems > 0 and (refined["critique_mode"] == "path").all()
        assert (refined["revision_mode"] == "path").all()
        # Each critique and each revision: one rejected answer, then an accepted one.
        sent = critic_server.stats()["requests"]["/v1/chat/completions"]
        assert sent == 2 * 2 * problems
        store = ResponseStore(UPath(tmp_path / "store"), f"critic/{key}/0.7").load()
        rejected = [s for s in store._records.values() if s.rejected]
        assert len(rejected) == 2 * problems and all("validation" not in s.text for s in rejected)

        first_meta = first.asset_materializations_for_node("critiques")[0].metadata
        assert first_meta["critic_projected_requests"].value == problems
        assert first_meta["critic_rejected"].value == problems

        again = run(settings, policy, critic, key, instance, selection=[critiques, refined_paths])
        assert again.success
        assert critic_server.stats()["requests"]["/v1/chat/completions"] == sent  # not one request more
        assert again.output_for_node("refined_paths").equals(refined)
        meta = again.asset_materializations_for_node("refined_paths")[0].metadata
        assert meta["critic_projected_requests"].value == 0 and meta["critic_projected_usd"].value == 0
        # Spend so far counts every paid answer of the shard, rejected ones included.
        paid = (
            sum(s.prompt_tokens for s in store.samples()),
            sum(s.completion_tokens for s in store.samples()),
        )
        prompt_price, completion_price = price_of("gpt-4o-mini")
        spent = (paid[0] * prompt_price + paid[1] * completion_price) / 1e6
        assert meta["critic_spent_usd_so_far"].value == pytest.approx(spent, abs=1e-6) and spent > 0


def test_the_budget_guard_refuses_before_any_request(tmp_path):
    settings = Settings.from_env(
        {"SIGMA_STORAGE_URL": str(tmp_path / "store"), "SIGMA_MAX_USD_PER_RUN": "0.00001"}
    )
    key = shard_with_problems(settings)
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=scripted_critic) as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = critic_of(critic_server, max_usd_per_run=settings.max_usd_per_run)
        assert critic.max_usd_per_run == 0.00001
        result = run(settings, policy, critic, key, assets=UP_TO_CRITIQUES, raise_on_error=False)
        assert critic_server.stats()["total"] == 0  # refused before sending anything
    assert not result.success and not step_events(result, "STEP_UP_FOR_RETRY")
    message = str(step_events(result, "STEP_FAILURE")[0].event_specific_data.error)
    assert "refusing to start" in message and "over the cap SIGMA_MAX_USD_PER_RUN=$1e-05" in message
    assert re.search(r"\$\d+\.\d{4} over the cap", message)


def test_batch_api_mode_sends_each_stage_as_one_batch(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=scripted_critic, model="gpt-4o-mini") as critic_server,
    ):
        policy = policy_of(policy_server)
        critic = critic_of(critic_server, use_batch_api=True, batch_poll_s=0.01)
        result = run(settings, policy, critic, key)
        assert result.success
        stats = critic_server.stats()
    refined = result.output_for_node("refined_paths")
    assert refined.height > 0 and refined["correct"].all() and (refined["revision_mode"] == "path").all()
    # One batch for the critiques, one for the revisions; nothing online.
    assert stats["batches_created"] == 2 and stats["batch_lines"] == 2 * refined.height
    assert stats["requests"]["/v1/chat/completions"] == 0
    metadata = result.asset_materializations_for_node("refined_paths")[0].metadata
    assert metadata["critic_batch_answered"].value == refined.height
    assert metadata["critic_batches_created"].value == 1 and metadata["critic_batch_still_missing"].value == 0
    assert metadata["critic_cost_usd"].value > 0  # the revision batch, billed at half price
    assert metadata["critic_spent_usd_so_far"].value > metadata["critic_cost_usd"].value  # + critiques


REPLAY_FAULTS = ("429", "500", "truncated", "closed", "empty_choices")


def unusable_critic(request: dict, sample_index: int) -> str:
    """Never a valid critique or revision: every path critique falls back to step mode, every revision
    is rejected and the original path kept."""
    return "I would rather not answer in the requested format."


def test_a_partition_that_survived_faults_replays_exactly_and_a_repair_resends_what_it_gave_up(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    key = shard_with_problems(settings)
    instance = dg.DagsterInstance.ephemeral()
    faults = {"fault_rate": 0.2, "fault_kinds": REPLAY_FAULTS, "seed": 7, "retry_after_s": 0.2}
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=unusable_critic, **faults) as critic_server,
    ):
        policy, critic = policy_of(policy_server), critic_of(critic_server)
        first = run(settings, policy, critic, key, instance)
        assert first.success
        sent = critic_server.stats()["total"]
        assert (
            critic_server.stats()["faults"]["closed"] + critic_server.stats()["faults"]["empty_choices"] > 0
        )
        rows = {name: first.output_for_node(name) for name in ("critiques", "refined_paths")}
        gave_up = sum(
            first.asset_materializations_for_node(name)[0].metadata["critic_calls_given_up"].value
            for name in ("critiques", "refined_paths")
        )
        assert gave_up > 0  # the run had to give up on calls, and took its fallbacks
        # Every path critique fell back to step critiques, whose generic feedback never reached a
        # revision: the original paths are kept.
        assert (rows["refined_paths"]["critique_mode"] == "step-fallback").all()
        assert rows["refined_paths"]["regurgitation"].all()

        for faults_on in (True, False):  # the same faults, then none: nothing is asked again
            critic_server.configure(fault_rate=0.2 if faults_on else 0.0)
            again = run(settings, policy, critic, key, instance, selection=[critiques, refined_paths])
            assert again.success
            assert critic_server.stats()["total"] == sent
            for name, frame in rows.items():
                assert again.output_for_node(name).equals(frame)

        # A deliberate repair resends exactly the calls the first run gave up on.
        repair = {"ops": {name: {"config": {"mode": "path", "retry_failed": True}} for name in rows}}
        repaired = materialize_shard(
            FULL_SHARD,
            key,
            selection=[critiques, refined_paths],
            resources=build_resources(settings) | {"policy": policy, "critic": critic},
            instance=instance,
            run_config={"ops": {"mcts_trees": {"config": SEARCH_CONFIG}, **repair["ops"]}},
        )
        assert repaired.success
        assert critic_server.stats()["total"] - sent >= gave_up
