"""critiques and refined_paths: sibling-guided critique, then revision by textual gradient descent."""

from collections.abc import Callable

import dagster as dg
import polars as pl

from sigma_assets.data.tables import polars_schema
from sigma_assets.defs.shared.config import config_from_settings, settings_from_config
from sigma_assets.defs.shared.metadata import column_schema
from sigma_assets.defs.shared.partitions import (
    SAME_SHARD,
    SETTINGS,
    SHARD_RETRY,
    SHARD_TEMPERATURE,
    search_asset,
    store_namespace,
)
from sigma_assets.defs.shared.resources import ModelResource, StorageResource
from sigma_assets.defs.shared.spend import guard_spend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest
from sigma_assets.llm.response_store import sample_key
from sigma_assets.llm.retry import RequestFailed
from sigma_assets.method.budgets import refinement_budget
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.method.previews import render_preview_markdown
from sigma_assets.method.refinement import critique, revise
from sigma_assets.method.refinement_records import (
    CRITIQUE_COLUMNS,
    REFINED_COLUMNS,
    CritiqueRow,
    ProblemPaths,
    RefinementSettings,
    problem_paths,
)
from sigma_assets.method.siblings import SiblingSet

# Every field of RefinementSettings, with the defaults of the budget that fits the configured critic.
RefinementConfig = config_from_settings(
    "RefinementConfig",
    refinement_budget(SETTINGS.critic_backend, SETTINGS.critic_model),
    doc="Critique and revision settings (DESIGN §1): `path` (one call each per problem) or `step` mode.",
    # A repair: resend the calls an earlier successful run gave up on (by default a replay takes the
    # branch that run took, with no request).
    extra={"retry_failed": (bool, False)},
)


def _problems(raw_problems: pl.DataFrame, sibling_sets: pl.DataFrame) -> list[ProblemPaths]:
    texts = {r["problem_id"]: (r["problem"], r["answer"]) for r in raw_problems.iter_rows(named=True)}
    return problem_paths((SiblingSet.from_row(r) for r in sibling_sets.iter_rows(named=True)), texts)


def _key_of(client: LLMClient) -> Callable[[GenerationRequest], str]:
    backend = client.backend
    return lambda request: sample_key(backend.name, backend.endpoint, backend.model, request, 0)


def _per_problem(
    problems: list[ProblemPaths], stage: Callable[[list[ProblemPaths]], list], what: str
) -> list:
    """Run `stage` on all problems; if calls fail for good, find which problems failed and why.

    The per-problem pass sends nothing that was already sent: answers come from the store and failed
    requests from the client's failure memory (one retry budget). Only a lost connection may heal, so
    only then may the step's RetryPolicy run the shard again.
    """
    try:
        return stage(problems)
    except RequestFailed:
        pass
    failures: dict[str, RequestFailed] = {}
    results: list = []
    for problem in problems:
        try:
            results += stage([problem])
        except RequestFailed as exc:
            failures[problem.problem_id] = exc
    if not failures:  # the failure was the batch's (e.g. a fallback it triggered), not any one problem's
        return results
    listing = "; ".join(f"{pid}: {exc.reason}" for pid, exc in failures.items())
    raise dg.Failure(
        description=f"{what} failed for {len(failures)} of {len(problems)} problems: {listing}",
        metadata={"failed_problems": dg.MetadataValue.json({p: e.reason for p, e in failures.items()})},
        allow_retries=all(exc.heals for exc in failures.values()),
    )


@search_asset(
    retry_policy=SHARD_RETRY,
    pool="llm_critic",
    ins={"raw_problems": dg.AssetIn(partition_mapping=SAME_SHARD), "sibling_sets": dg.AssetIn()},
    metadata=column_schema(CRITIQUE_COLUMNS),
    description="Per (problem, depth) of each selected path: the critic's feedback against the siblings.",
)
def critiques(
    context: dg.AssetExecutionContext,
    config: RefinementConfig,
    raw_problems: pl.DataFrame,
    sibling_sets: pl.DataFrame,
    critic: ModelResource,
    storage: StorageResource,
) -> pl.DataFrame:
    problems = _problems(raw_problems, sibling_sets)
    settings = settings_from_config(RefinementSettings, config)
    with critic.client(storage.root(), store_namespace("critic", context), config.retry_failed) as client:
        projected = guard_spend(context, client, lambda g: critique(problems, g, settings), critic, "critic_")
        rows: list[CritiqueRow] = _per_problem(
            problems, lambda ps: critique(ps, client.generate, settings, _key_of(client)), "critique"
        )
        usage, gave_up = client.usage, client.gave_up
    frame = pl.DataFrame(
        [row.to_row() | {"critic_model": critic.model} for row in rows],
        schema=polars_schema(CRITIQUE_COLUMNS),
    )
    fallback = frame.filter(pl.col("mode") == "step-fallback")["problem_id"].n_unique()
    context.add_output_metadata(
        {
            "dagster/row_count": frame.height,
            "problems": len(problems),
            "generic_rate": round(float(frame["generic"].mean() or 0.0), 4),
            "step_fallback_problems": fallback,
            "calls_per_problem": round(usage.requests / len(problems), 3) if problems else 0.0,
            **usage.as_metadata("critic_"),
            # Calls given up on after every retry, with the fallback taken; a replay takes it again.
            "critic_calls_given_up": gave_up,
            **projected,
            "mode": settings.mode,
        }
    )
    return frame


@search_asset(
    retry_policy=SHARD_RETRY,
    pool="llm_critic",
    ins={
        "raw_problems": dg.AssetIn(partition_mapping=SAME_SHARD),
        "sibling_sets": dg.AssetIn(),
        "critiques": dg.AssetIn(),
    },
    metadata=column_schema(REFINED_COLUMNS),
    description="Per problem: the selected path revised with its feedback, guarded against drift.",
)
def refined_paths(
    context: dg.AssetExecutionContext,
    config: RefinementConfig,
    raw_problems: pl.DataFrame,
    sibling_sets: pl.DataFrame,
    critiques: pl.DataFrame,
    critic: ModelResource,
    storage: StorageResource,
) -> pl.DataFrame:
    problems = _problems(raw_problems, sibling_sets)
    feedback = [CritiqueRow.from_row(r) for r in critiques.drop("critic_model").iter_rows(named=True)]
    settings = settings_from_config(RefinementSettings, config)
    with (
        critic.client(storage.root(), store_namespace("critic", context), config.retry_failed) as client,
        AnswerChecker() as checker,
    ):
        # Step mode revises depth by depth: only depth 1 can be planned, the rest is scaled from it.
        depths = sum(len(p.sibling_sets) for p in problems) if settings.mode == "step" else None
        projected = guard_spend(
            context,
            client,
            lambda g: revise(problems, feedback, g, checker.check_many, settings),
            critic,
            "critic_",
            scale_to=depths,
        )
        refined = _per_problem(
            problems,
            lambda ps: revise(ps, feedback, client.generate, checker.check_many, settings, _key_of(client)),
            "revision",
        )
        usage, gave_up = client.usage, client.gave_up
    frame = pl.DataFrame(
        [r.to_row() | {"critic_model": critic.model} for r in refined], schema=polars_schema(REFINED_COLUMNS)
    )
    rates = {
        f"{flag}_rate": round(float(frame[flag].mean() or 0.0), 4)
        for flag in ("drift", "regurgitation", "generic_feedback")
    }
    preview = "no problems with a selected path in this shard"
    if problems:
        first = problems[0]
        preview = render_preview_markdown(list(first.sibling_sets), feedback, refined[0])
    context.add_output_metadata(
        {
            "dagster/row_count": frame.height,
            **rates,
            "correct_share": round(float(frame["correct"].mean() or 0.0), 4),
            "calls_per_problem": round(float(frame["calls"].mean() or 0.0), 3),
            "tokens_per_problem": round(
                float((frame["prompt_tokens"] + frame["completion_tokens"]).mean() or 0.0), 1
            ),
            **usage.as_metadata("critic_"),
            # Calls given up on after every retry, with the fallback taken; a replay takes it again.
            "critic_calls_given_up": gave_up,
            **projected,
            "preview": dg.MetadataValue.md(preview),
        }
    )
    return frame


# -- checks ---------------------------------------------------------------------------------------------


class RateThresholds(dg.Config):
    max_drift_rate: float = 0.5
    max_generic_rate: float = 0.5


@dg.asset_check(
    asset=refined_paths,
    partitions_def=SHARD_TEMPERATURE,
    additional_ins={"sibling_sets": dg.AssetIn(), "critiques": dg.AssetIn()},
    description="No problem is lost between sibling_sets, critiques and refined_paths.",
)
def no_problem_lost(
    refined_paths: pl.DataFrame, sibling_sets: pl.DataFrame, critiques: pl.DataFrame
) -> dg.AssetCheckResult:
    expected = set(sibling_sets["problem_id"])
    depths = set(zip(sibling_sets["problem_id"], sibling_sets["depth"], strict=True))
    critiqued = set(zip(critiques["problem_id"], critiques["depth"], strict=True))
    missing_refined = sorted(expected - set(refined_paths["problem_id"]))
    missing_critiques = sorted(f"{p}@{d}" for p, d in depths - critiqued)
    return dg.AssetCheckResult(
        passed=not missing_refined and not missing_critiques,
        metadata={
            "problems": len(expected),
            "missing_refined": dg.MetadataValue.json(missing_refined),
            "missing_critiques": dg.MetadataValue.json(missing_critiques),
        },
    )


@dg.asset_check(
    asset=refined_paths,
    partitions_def=SHARD_TEMPERATURE,
    description="Drift and generic rates under thresholds.",
)
def drift_and_generic_rates_under_threshold(
    config: RateThresholds, refined_paths: pl.DataFrame
) -> dg.AssetCheckResult:
    # Both rates are shares of problems (a problem counts as generic if any of its depths was).
    drift = float(refined_paths["drift"].mean() or 0.0)
    generic = float(refined_paths["generic_feedback"].mean() or 0.0)
    return dg.AssetCheckResult(
        passed=drift <= config.max_drift_rate and generic <= config.max_generic_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"drift_rate": drift, "generic_problem_rate": generic, **config.model_dump()},
    )


@dg.asset_check(
    asset=refined_paths,
    partitions_def=SHARD_TEMPERATURE,
    description="Every refined path ends with an explicit answer the checker accepts.",
)
def every_path_ends_correct(refined_paths: pl.DataFrame) -> dg.AssetCheckResult:
    unchecked = refined_paths.filter(pl.col("final_answer").is_null() | ~pl.col("correct"))
    return dg.AssetCheckResult(
        passed=unchecked.is_empty(),
        metadata={"unchecked": dg.MetadataValue.json(unchecked["problem_id"].to_list())},
    )
