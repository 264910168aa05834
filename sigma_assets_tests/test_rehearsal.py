"""The rehearsal of the paper's run (`bench/bench_rehearsal.py`) at a small size: two dozen problems through
the whole graph, launched from the code location on a real S3 server, the policy and the critic played by
the simulated server; what a user reads in its report is there and adds up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import bench_rehearsal  # noqa: E402

PROBLEMS = 24
ASSETS = {
    "raw_problems",
    "mcts_trees",
    "sibling_sets",
    "critiques",
    "refined_paths",
    "sft_dataset",
    "finetuned_model",
    "eval_scores",
}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    folder = tmp_path_factory.mktemp("rehearsal")
    settings = folder / "my.env"  # a user's settings, as `--env` reads them
    settings.write_text(
        "# the run to rehearse\nexport SIGMA_NUM_SHARDS=1\nSIGMA_CRITIC_MODEL='gpt-4o-mini'\n"
    )
    figures, markdown = folder / "figures.json", folder / "benchmarks.md"
    markdown.write_text(
        "# Benchmarks\n\n## Rehearsal at paper scale\n\nold figures\n\n### What the rehearsal found\n\n"
        "notes\n\n## Another section\n\nkept\n"
    )
    argv = ["--problems", str(PROBLEMS), "--env", str(settings), "--base-model", "tiny", "--train-steps", "1"]
    argv += ["--eval-max-tokens", "64", "--json", str(figures), "--write", str(markdown)]
    assert bench_rehearsal.main(argv) == 0
    return json.loads(figures.read_text()), markdown.read_text()


def test_every_stage_is_materialised_for_every_partition(rehearsal):
    data, _ = rehearsal
    (size,) = data["sizes"]
    assert size["failed"] == []
    assert all(run["ok"] for run in size["runs"]), [r for r in size["runs"] if not r["ok"]]
    assert [r["job"] for r in size["runs"]] == ["problems_job"] + ["generation_job"] * 2 + [
        "training_job"
    ] * 2 + ["evaluation_job"]
    assert all(step["ok"] for step in size["steps"])
    done = {(asset, key) for _, key, asset, _ in size["metadata"]}
    assert {asset for asset, _ in done} == ASSETS
    for asset in ("mcts_trees", "sibling_sets", "critiques", "refined_paths"):
        assert {key for a, key in done if a == asset} == {"shard-000|0.4", "shard-000|0.7"}
    assert {key for a, key in done if a in ("sft_dataset", "finetuned_model")} == {"sigma", "mcts"}
    # Every stage left objects on the storage root; the models are the bulk of it.
    stages = data["summary"]["stages"][0]
    for stage in ("problems", "search", "sibling sets", "critique", "revision", "SFT build", "training"):
        assert stages[stage]["objects"] > 0, stage
    assert size["storage_bytes"] == sum(size["storage_by_top"][top][1] for top in size["storage_by_top"])


def test_what_the_server_counted_is_what_the_project_reports(rehearsal):
    data, _ = rehearsal
    (models,) = data["summary"]["models"]
    assert models["problems_kept"] == PROBLEMS
    assert models["trees"] == 2 * PROBLEMS
    assert models["policy_requests"] == models["project_policy_requests"] > 10 * models["trees"]
    assert models["policy_completion_tokens"] == models["project_policy_completion_tokens"] > 0
    assert models["critic_requests"] == models["project_critic_requests"] > 0
    critic_tokens = models["critic_prompt_tokens"] + models["critic_completion_tokens"]
    assert critic_tokens == models["project_critic_tokens"]
    assert models["critic_usd"] == pytest.approx(models["project_critic_usd"], rel=0.01, abs=1e-5)
    # One path critique and one path revision per solved tree (a drifted revision may be retried).
    assert models["solved"] > 0
    assert models["critic_requests"] >= 2 * models["solved"]
    assert models["refined_paths"] <= models["solved"]
    assert 0 < models["sigma_samples"] <= models["refined_paths"]
    assert models["eval_requests"] > 0
    assert data["sizes"][0]["server"]["errors"] == 0


def test_the_report_projects_the_full_run(rehearsal):
    data, text = rehearsal
    summary = data["summary"]
    # The section's figures are rewritten; its notes and the other sections are kept.
    assert "old figures" not in text and text.endswith("\n\n## Another section\n\nkept\n")
    section = text[text.index(bench_rehearsal.HEADING) : text.index("## Another section")]
    assert section.endswith("### What the rehearsal found\n\nnotes\n\n")
    assert f"| {PROBLEMS} problems |" in section
    assert "**The full run: 7,500 problems × 2 temperatures** (not run: projected" in section
    for figure in (
        "search hours at the project's policy concurrency",
        "critic spend, this run",
        "storage root",
    ):
        assert f"| {figure}" in section
    assert "per 15K refined samples (the paper: $11.7)" in section
    scale = 7_500 / PROBLEMS  # one size: every figure grows in proportion
    models = summary["models"][0]
    assert summary["policy_requests"] == pytest.approx(models["policy_requests"] * scale)
    assert summary["critic_usd_full"] == pytest.approx(models["critic_usd"] * scale)
    assert summary["policy_hours"] >= summary["policy_hours_full_batch"] > 0
    assert summary["policy_concurrency"] == 16  # the policy resource's, as the code location set it
    assert summary["critic_usd_per_15k"] > 0
    assert 0 < summary["cpu_s_per_policy_request_search"] < summary["cpu_s_per_policy_request_graph"]
    assert summary["storage_bytes_full"] > 0
