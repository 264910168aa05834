"""mcts_trees and sibling_sets through Dagster: a scripted policy server on S3, and the tiny local model."""

from __future__ import annotations

import dagster as dg
import polars as pl
from transformers import AutoTokenizer

from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets
from sigma_assets.defs.shared.resources import ModelResource, OpenAIModelResource, TransformersModelResource
from sigma_assets.method.policy_prompt import chat_template_prompt, policy_prompt
from sigma_assets.method.previews import render_text_markdown
from sigma_assets.settings import Settings
from sigma_assets.testing.fault_server import FaultServer
from sigma_assets_tests.support import (
    SEARCH_CONFIG,
    ShardRun,
    arithmetic_policy,
    materialize_shard,
    shard_with_problems,
)


def materialize(
    settings: Settings,
    policy: ModelResource,
    key: str,
    instance: dg.DagsterInstance,
    temperature: str = "0.7",
) -> ShardRun:
    return materialize_shard(
        [raw_problems, mcts_trees, sibling_sets],
        key,
        temperature,
        resources=build_resources(settings) | {"policy": policy},
        instance=instance,
        run_config={"ops": {"mcts_trees": {"config": SEARCH_CONFIG}}},
    )


def test_search_on_s3_with_a_policy_server_replays_from_the_store(s3_env):
    settings = Settings.from_env()
    key = shard_with_problems(settings)
    instance = dg.DagsterInstance.ephemeral()
    with FaultServer(responder=arithmetic_policy) as server:
        policy = OpenAIModelResource(api_key="unused", model="scripted-policy", base_url=server.base_url)
        first = materialize(settings, policy, key, instance)
        assert first.success
        calls = server.stats()["total"]
        assert calls > 0
        trees = first.output_for_node("mcts_trees")
        siblings = first.output_for_node("sibling_sets")
        metadata = first.asset_materializations_for_node("mcts_trees")[0].metadata
        assert metadata["trees"].value == first.output_for_node("raw_problems").height
        assert metadata["policy_requests"].value == calls
        # "What is a + b?" problems are solved by sample 0; their paths have siblings.
        assert metadata["solved_share"].value > 0
        assert siblings.height > 0 and siblings["siblings"].list.len().max() <= 2
        assert trees.filter(pl.col("on_selected_path") & pl.col("terminal"))["correct"].all()

        second = materialize(settings, policy, key, instance)
        assert second.success
        assert server.stats()["total"] == calls  # every call replayed from the response store on S3
        assert second.output_for_node("mcts_trees").equals(trees)
        replay = second.asset_materializations_for_node("mcts_trees")[0].metadata
        assert replay["policy_store_hits"].value > 0 and replay["policy_requests"].value == 0


def test_search_with_the_tiny_local_model(tmp_path, tiny_model_dir):
    settings = Settings.from_env(
        {"SIGMA_STORAGE_URL": str(tmp_path / "store"), "SIGMA_PROBLEMS": "arithmetic:8"}
    )
    key = shard_with_problems(settings)
    policy = TransformersModelResource(model=str(tiny_model_dir), device="cpu")
    result = materialize(settings, policy, key, dg.DagsterInstance.ephemeral())
    assert result.success
    trees = result.output_for_node("mcts_trees")
    problems = result.output_for_node("raw_problems")
    assert set(trees["problem_id"]) == set(problems["problem_id"])
    # Every expanded node holds n = 3 samples (identical ones merged); depth stays within the limit.
    children = trees.filter(pl.col("parent_id").is_not_null()).group_by("problem_id", "parent_id")
    assert children.agg(pl.col("samples").sum())["samples"].unique().to_list() == [3]
    assert trees["depth"].max() <= SEARCH_CONFIG["max_depth"]
    assert (trees["q"].abs() <= 1).all()
    metadata = result.asset_materializations_for_node("sibling_sets")[0].metadata
    unsolved = metadata["problems_without_correct_leaf"].value
    assert unsolved + metadata["problems_with_path"].value == problems.height


def test_the_policy_prompt_is_the_policy_models_chat_template_and_the_metadata_shows_it(
    tmp_path, tiny_model_dir
):
    key = shard_with_problems(Settings.from_env())
    sent: list[str] = []

    def recording_policy(request: dict, sample_index: int) -> str:
        sent.append(request.get("prompt", ""))
        return arithmetic_policy(request, sample_index)

    def search(base_url: str, store: str, tokenizer: str | None) -> tuple[dict, pl.DataFrame]:
        settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / store)})
        policy = OpenAIModelResource(
            api_key="unused", model="scripted", base_url=base_url, tokenizer=tokenizer
        )
        result = materialize_shard(
            [raw_problems, mcts_trees],
            key,
            "0.7",
            resources=build_resources(settings) | {"policy": policy},
            instance=dg.DagsterInstance.ephemeral(),
            # No template in config: the policy model's own chat template, or ChatML without a tokenizer.
            run_config={"ops": {"mcts_trees": {"config": {**SEARCH_CONFIG, "prompt_template": None}}}},
        )
        assert result.success
        return result.asset_materializations_for_node("mcts_trees")[0].metadata, result.output_for_node(
            "raw_problems"
        )

    with FaultServer(responder=recording_policy) as server:
        plain, _ = search(server.base_url, "a", None)
        sent.clear()
        templated, problems = search(server.base_url, "b", str(tiny_model_dir))
    assert plain["prompt_template_source"].value.startswith("ChatML (no tokenizer for a server model")
    assert templated["prompt_template_source"].value == f"chat template of {tiny_model_dir}"
    template = chat_template_prompt(AutoTokenizer.from_pretrained(tiny_model_dir))
    # The metadata shows the template and the first problem's prompt as the server received it.
    first = policy_prompt(problems["problem"][0], [], template)
    assert first in sent
    assert templated["prompt_example"].value == render_text_markdown(first)
    assert templated["prompt_template"].value == render_text_markdown(template)
