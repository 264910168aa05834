"""raw_problems: the problems of one shard, loaded from SIGMA_PROBLEMS, each with a gradeable gold answer."""

from collections import Counter
from collections.abc import Iterator

import dagster as dg
import polars as pl

from sigma_assets.data.problems import (
    RAW_PROBLEMS_COLUMNS,
    RAW_PROBLEMS_SCHEMA,
    SkippedRow,
    keep_gradeable,
    problems_frame,
)
from sigma_assets.data.shards import shard_of
from sigma_assets.defs.shared.metadata import column_schema
from sigma_assets.defs.shared.partitions import SHARDS, shard_asset
from sigma_assets.defs.shared.resources import ProblemsResource, StorageResource
from sigma_assets.method.gold_answers import reason_category
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.method.previews import render_problems_markdown

SKIPPED_SHARE_CHECK = "skipped_share_under_threshold"
MAX_LISTED = 200


class RawProblemsConfig(dg.Config):
    """How gold answers are vetted: the share of a shard's rows that may be skipped before the
    `skipped_share_under_threshold` check warns, and the answer checker's bound per answer."""

    # CHAMP loses about a quarter of each shard to yes/no and "no such value" answers; half a shard
    # lost usually means a wrong answer column or layout.
    max_skipped_share: float = 0.5
    answer_timeout_s: float = 5.0


@shard_asset(
    description="Math problems whose gold answers can grade a prediction, one shard per partition.",
    metadata=column_schema(RAW_PROBLEMS_COLUMNS),
    check_specs=[
        dg.AssetCheckSpec(
            SKIPPED_SHARE_CHECK,
            asset="raw_problems",
            partitions_def=SHARDS,
            description="At most `max_skipped_share` of the shard's source rows were skipped as unusable.",
        )
    ],
)
def raw_problems(
    context: dg.AssetExecutionContext,
    config: RawProblemsConfig,
    problems: ProblemsResource,
    storage: StorageResource,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    key = context.partition_key
    loaded = problems.load(storage.root())

    def in_shard(placement_key: str) -> bool:
        return shard_of(placement_key, problems.num_shards) == key

    candidates = [p for p in loaded.problems if in_shard(p.problem_id)]
    # Only this shard's answers go to the checker: each shard pays for its own rows.
    with AnswerChecker(timeout_s=config.answer_timeout_s) as checker:
        kept, ungradeable = keep_gradeable(candidates, checker)
    skipped = [s for s in loaded.skipped if in_shard(s.placement_key)] + ungradeable
    for row in skipped:
        context.log.warning(f"skipped {row}")
    frame = problems_frame(kept, lambda pid: shard_of(pid, problems.num_shards))
    rows = len(kept) + len(skipped)
    share = len(skipped) / rows if rows else 0.0
    by_reason = dict(Counter(reason_category(s.reason) for s in skipped).most_common())
    check = dg.AssetCheckResult(
        check_name=SKIPPED_SHARE_CHECK,
        passed=share <= config.max_skipped_share,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "skipped_share": round(share, 4),
            "max_skipped_share": config.max_skipped_share,
            "skipped_rows": len(skipped),
            "source_rows_in_shard": rows,
            "skipped_by_reason": dg.MetadataValue.json(by_reason),
        },
    )
    yield dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "source": loaded.source,
            "problems_in_source": len(loaded.problems),
            "skipped_rows": len(skipped),
            "skipped_share": round(share, 4),
            "skipped_by_reason": dg.MetadataValue.json(by_reason),
            "skipped": dg.MetadataValue.md(_skipped_table(skipped)),
            "preview": dg.MetadataValue.md(render_problems_markdown(frame.head(5).iter_rows(named=True))),
        },
    )
    yield check


def _cell(text: object, limit: int = 120) -> str:
    value = "" if text is None else str(text)
    value = value.replace("|", "\\|").replace("\n", " ")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _skipped_table(skipped: list[SkippedRow]) -> str:
    if not skipped:
        return "none"
    lines = ["| file | row | field | answer | reason |", "|---|---|---|---|---|"]
    for s in sorted(skipped, key=lambda s: s.row)[:MAX_LISTED]:
        lines.append(f"| {_cell(s.source)} | {s.row} | {s.field} | {_cell(s.answer)} | {_cell(s.reason)} |")
    if len(skipped) > MAX_LISTED:
        lines.append(f"\n{len(skipped) - MAX_LISTED} more in the run's log")
    return "\n".join(lines)


@dg.asset_check(
    asset=raw_problems,
    partitions_def=SHARDS,
    description="Schema, unique ids, and every row in its own shard.",
)
def schema_ids_and_shards_valid(
    context: dg.AssetCheckExecutionContext, raw_problems: pl.DataFrame
) -> dg.AssetCheckResult:
    problems: list[str] = []
    if dict(raw_problems.schema) != RAW_PROBLEMS_SCHEMA:
        problems.append(f"schema {dict(raw_problems.schema)}")
    duplicates = raw_problems["problem_id"].is_duplicated().sum()
    if duplicates:
        problems.append(f"{duplicates} duplicate problem_id")
    misplaced = (
        raw_problems.filter(pl.col("shard") != context.partition_key).height if raw_problems.height else 0
    )
    if misplaced:
        problems.append(f"{misplaced} rows of another shard")
    return dg.AssetCheckResult(passed=not problems, metadata={"issues": ", ".join(problems) or "none"})
