"""End to end on the embedded defaults: the real SmolLM2-135M as policy and critic, in process."""

from __future__ import annotations

import collections

import dagster as dg
import polars as pl
import pytest

from sigma_assets.data.problems import load_problems
from sigma_assets.data.shards import shard_of
from sigma_assets.definitions import ASSETS, CHECKS, build_resources
from sigma_assets.method.answers import final_answer
from sigma_assets.settings import Settings
from sigma_assets_tests.support import materialize_shard


@pytest.mark.slow
def test_first_five_assets_on_a_bundled_shard(tmp_path):
    settings = Settings.from_env(
        {"SIGMA_STORAGE_URL": str(tmp_path / "store"), "SIGMA_PROBLEMS": "arithmetic:12"}
    )
    assert (settings.policy_backend, settings.critic_backend) == ("transformers", "transformers")
    shards = collections.Counter(
        shard_of(p.problem_id, settings.num_shards) for p in load_problems(settings.problems).problems
    )
    key = shards.most_common(1)[0][0]
    # The embedded budget (few-shot prompt, small search, step-mode critic) is every asset's default.
    first_five = {"raw_problems", "mcts_trees", "sibling_sets", "critiques", "refined_paths"}
    assets = [a for a in ASSETS if a.key.path[-1] in first_five]
    checks = [c for c in CHECKS if all(k.asset_key.path[-1] in first_five for k in c.check_keys)]
    result = materialize_shard(
        [*assets, *checks],
        key,
        "0.7",
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    problems = result.output_for_node("raw_problems")
    trees = result.output_for_node("mcts_trees")
    siblings = result.output_for_node("sibling_sets")
    critiques = result.output_for_node("critiques")
    refined = result.output_for_node("refined_paths")
    assert set(trees["problem_id"]) == set(problems["problem_id"])
    # Every problem with a correct leaf is critiqued at every depth and refined; none is lost.
    assert set(refined["problem_id"]) == set(siblings["problem_id"])
    assert (
        critiques.select("problem_id", "depth")
        .sort(pl.all())
        .equals(siblings.select("problem_id", "depth").sort(pl.all()))
    )
    assert refined["correct"].all()  # drifted revisions fall back to the (correct) original path
    # Correct means checkable: every refined path ends in an explicit answer equal to the gold one.
    gold = dict(zip(problems["problem_id"], problems["answer"], strict=True))
    for row in refined.iter_rows(named=True):
        verdict = final_answer("\n\n".join(row["refined_steps"]))
        assert verdict.ok and row["final_answer"] == verdict.answer, row
        assert row["final_answer"] == gold[row["problem_id"]], row
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert (
        checks["no_problem_lost"]
        and checks["every_path_ends_correct"]
        and checks["schema_ids_and_shards_valid"]
    )
    metadata = result.asset_materializations_for_node("refined_paths")[0].metadata
    assert metadata["dagster/row_count"].value == refined.height
    print(  # the figures the pipeline reports, shown with `pytest -s`
        {name: metadata[name].value for name in metadata if not name.startswith("preview")},
        result.asset_materializations_for_node("mcts_trees")[0].metadata["solved_share"].value,
    )
