"""raw_problems: the problems of one shard, loaded from SIGMA_PROBLEMS."""

import dagster as dg
import polars as pl

from sigma_assets.assets.partitions import SHARDS, shard_asset
from sigma_assets.problems import RAW_PROBLEMS_SCHEMA, problems_frame
from sigma_assets.resources import ProblemsResource, StorageResource
from sigma_assets.shards import shard_of


@shard_asset(
    description="Math problems with ground-truth answers, one shard per partition.",
)
def raw_problems(
    context: dg.AssetExecutionContext, problems: ProblemsResource, storage: StorageResource
) -> pl.DataFrame:
    loaded = problems.load(storage.root())
    for skipped in loaded.skipped:
        context.log.warning(f"skipped {skipped}")
    everything = problems_frame(loaded.problems, lambda pid: shard_of(pid, problems.num_shards))
    frame = everything.filter(pl.col("shard") == context.partition_key)
    skipped_table = "\n".join(
        f"| {s.source} | {s.row} | {s.field} | {s.reason} |" for s in loaded.skipped[:50]
    )
    context.add_output_metadata(
        {
            "dagster/row_count": len(frame),
            "source": loaded.source,
            "problems_in_source": len(loaded.problems),
            "skipped_rows": len(loaded.skipped),
            "skipped": dg.MetadataValue.md(
                "| file | row | field | reason |\n|---|---|---|---|\n" + skipped_table
                if loaded.skipped
                else "none"
            ),
            "preview": dg.MetadataValue.md(_preview(frame)),
        }
    )
    return frame


def _preview(frame: pl.DataFrame, rows: int = 5) -> str:
    lines = ["| problem_id | problem | answer |", "|---|---|---|"]
    for row in frame.head(rows).iter_rows(named=True):
        problem = row["problem"].replace("|", "\\|").replace("\n", " ")[:120]
        lines.append(f"| {row['problem_id']} | {problem} | {row['answer']} |")
    return "\n".join(lines)


@dg.asset_check(
    asset=raw_problems,
    partitions_def=SHARDS,
    description="Schema, unique ids, and every row in its own shard.",
)
def raw_problems_valid(
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
