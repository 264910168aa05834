"""The parquet IO manager on a real local root: a lone partition still reaches a mapping-typed input."""

from __future__ import annotations

import dagster as dg
import polars as pl

from sigma_assets.defs.shared.io_manager import AtomicParquetIOManager
from sigma_assets.defs.shared.resources import StorageResource

ONE_SHARD = dg.StaticPartitionsDefinition(["shard-000"])


@dg.asset(partitions_def=ONE_SHARD)
def shard_table() -> pl.DataFrame:
    return pl.DataFrame({"problem_id": ["p1"]})


@dg.asset(ins={"shard_table": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
def every_shard(shard_table: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(shard_table.values()).with_columns(shards=pl.lit(",".join(shard_table)))


def test_one_partition_reaches_a_mapping_input_as_a_mapping(tmp_path):
    # SIGMA_NUM_SHARDS=1 with one temperature: `sft_dataset` and `eval_scores` read one partition.
    resources = {"io_manager": AtomicParquetIOManager(storage=StorageResource(url=str(tmp_path)))}
    instance = dg.DagsterInstance.ephemeral()
    assets = [shard_table, every_shard]
    dg.materialize(
        assets, selection=[shard_table], partition_key="shard-000", resources=resources, instance=instance
    )
    result = dg.materialize(assets, selection=[every_shard], resources=resources, instance=instance)
    assert result.output_for_node("every_shard").to_dicts() == [{"problem_id": "p1", "shards": "shard-000"}]
    assert (tmp_path / "assets" / "shard_table" / "shard-000.parquet").is_file()
