"""mcts_trees and sibling_sets: MCTS with the policy model, every tree on its own, then the siblings."""

from collections import Counter
from dataclasses import asdict, replace

import dagster as dg
import polars as pl

from sigma_assets.data.tables import polars_schema
from sigma_assets.defs.shared.config import config_from_settings, settings_from_config
from sigma_assets.defs.shared.k8s import k8s_op_tags
from sigma_assets.defs.shared.metadata import column_schema
from sigma_assets.defs.shared.partitions import (
    SAME_SHARD,
    SETTINGS,
    SHARD_RETRY,
    search_asset,
    shard_and_temperature,
    store_namespace,
)
from sigma_assets.defs.shared.resources import ModelResource, StorageResource
from sigma_assets.method.budgets import search_budget
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.method.mcts import MCTSSettings, search
from sigma_assets.method.policy_prompt import policy_prompt, resolve_policy_prompt
from sigma_assets.method.previews import (
    render_sibling_sets_markdown,
    render_text_markdown,
    render_tree_markdown,
)
from sigma_assets.method.search_tree import SELECTION_RULE, selected_path
from sigma_assets.method.siblings import SIBLING_COLUMNS, SiblingSet, exploration_stats
from sigma_assets.method.siblings import sibling_sets as siblings_of
from sigma_assets.method.tree_table import TREE_COLUMNS, tree_rows, trees_from_rows

# The Launchpad's search settings: every field of MCTSSettings but the temperature (the partition's),
# with the defaults of the budget that fits the configured policy model, however a run starts.
SearchConfig = config_from_settings(
    "SearchConfig",
    search_budget(SETTINGS.policy_model),
    exclude=("temperature",),
    extra={"answer_timeout_s": (float, 5.0)},
    doc="MCTS settings (DESIGN §1); the temperature is the partition's.",
)


@search_asset(
    retry_policy=SHARD_RETRY,
    pool="llm_policy",
    op_tags=k8s_op_tags("mcts_trees"),
    ins={"raw_problems": dg.AssetIn(partition_mapping=SAME_SHARD)},
    metadata=column_schema(TREE_COLUMNS),
    description="One row per MCTS node: every problem of the shard searched at the partition's temperature.",
)
def mcts_trees(
    context: dg.AssetExecutionContext,
    config: SearchConfig,
    raw_problems: pl.DataFrame,
    policy: ModelResource,
    storage: StorageResource,
) -> pl.DataFrame:
    _, temperature = shard_and_temperature(context)
    settings: MCTSSettings = settings_from_config(MCTSSettings, config, temperature=float(temperature))
    # The prompt in config, else the policy model's own chat template (loaded only when it is needed).
    tokenizer, tokenizer_name = (None, "") if settings.prompt_template else policy.load_tokenizer()
    prompt = resolve_policy_prompt(settings.prompt_template, tokenizer, tokenizer_name)
    settings = replace(settings, prompt_template=prompt.template)
    problems = [(r["problem_id"], r["problem"], r["answer"]) for r in raw_problems.iter_rows(named=True)]
    with (
        policy.client(storage.root(), store_namespace("policy", context)) as client,
        AnswerChecker(timeout_s=config.answer_timeout_s) as checker,
    ):
        result = client.run_coroutine(search(problems, client.agenerate, checker.acheck_many, settings))
        usage, timeouts = client.usage, checker.timeouts
    frame = pl.DataFrame(
        [row for tree in result.trees for row in tree_rows(tree)], schema=polars_schema(TREE_COLUMNS)
    )
    solved = [tree for tree in result.trees if selected_path(tree) is not None]
    preview_tree = solved[0] if solved else (result.trees[0] if result.trees else None)
    steps = frame.filter(pl.col("depth") > 0)
    reasons = Counter(frame.filter(pl.col("terminal"))["terminal_reason"].to_list())
    context.add_output_metadata(
        {
            "dagster/row_count": frame.height,
            "trees": len(result.trees),
            "nodes": frame.height,
            "solved": len(solved),
            "solved_share": round(len(solved) / len(result.trees), 4) if result.trees else 0.0,
            "mean_depth": round(float(steps["depth"].mean() or 0.0), 3),
            "generate_calls": result.generate_calls,
            "peak_requests_in_flight": result.peak_requests_in_flight,
            "simulations_in_flight_per_tree": settings.parallel_simulations,
            "virtual_loss": settings.virtual_loss if settings.parallel_simulations > 1 else "off",
            "merged_duplicate_steps": int((steps["samples"] - 1).sum()),
            "context_overflows": reasons["context_overflow"]
            + result.rollout_outcomes.get("context_overflow", 0),
            "terminal_reasons": dg.MetadataValue.json(dict(reasons)),
            "rollout_outcomes": dg.MetadataValue.json(result.rollout_outcomes),
            "answer_check_timeouts": timeouts,
            **usage.as_metadata("policy_"),
            "policy_backend": policy.kind,
            "temperature": temperature,
            "selection_rule": SELECTION_RULE,
            "settings": dg.MetadataValue.json(
                {k: v for k, v in asdict(settings).items() if k != "prompt_template"}
            ),
            "prompt_template": dg.MetadataValue.md(render_text_markdown(prompt.template)),
            "prompt_template_source": prompt.source,
            # What the policy was sent for the first problem's root, as sent.
            "prompt_example": dg.MetadataValue.md(
                render_text_markdown(policy_prompt(problems[0][1], [], prompt.template) if problems else "")
            ),
            "preview": dg.MetadataValue.md(
                render_tree_markdown(preview_tree) if preview_tree else "no trees"
            ),
        }
    )
    return frame


@search_asset(
    metadata=column_schema(SIBLING_COLUMNS),
    description="Per depth of each selected path: the shared history, the selected step and its siblings.",
)
def sibling_sets(context: dg.AssetExecutionContext, mcts_trees: pl.DataFrame) -> pl.DataFrame:
    trees = trees_from_rows(mcts_trees.to_dicts())
    records = [s for tree in trees for s in siblings_of(tree)]
    frame = pl.DataFrame([s.to_row() for s in records], schema=polars_schema(SIBLING_COLUMNS))
    unsolved = sorted({tree.problem_id for tree in trees} - set(frame["problem_id"].to_list()))
    if unsolved:
        context.log.info(f"{len(unsolved)} problems reached no correct leaf and yield no sample: {unsolved}")
    explored = exploration_stats(records)
    context.add_output_metadata(
        {
            "dagster/row_count": frame.height,
            "problems_with_path": frame["problem_id"].n_unique(),
            "problems_without_correct_leaf": len(unsolved),
            "without_correct_leaf": dg.MetadataValue.json(unsolved),
            "mean_siblings": round(float(frame["siblings"].list.len().mean() or 0.0), 3),
            "siblings": explored.siblings,
            "sibling_mean_visits": round(explored.mean_visits, 3),
            "sibling_reached_share": round(explored.reached_share, 4),
            "selection_rule": SELECTION_RULE,
            "preview": dg.MetadataValue.md(_sibling_preview(frame)),
        }
    )
    return frame


def _sibling_preview(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "no selected paths in this shard"
    first = frame.filter(pl.col("problem_id") == frame["problem_id"][0])
    return render_sibling_sets_markdown([SiblingSet.from_row(row) for row in first.iter_rows(named=True)])
