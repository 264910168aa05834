"""The parquet IO manager: dagster-polars, on the storage resource's root, with atomic writes."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, get_origin

import dagster as dg
import polars as pl
from dagster_polars import PolarsParquetIOManager

from sigma_assets.data.storage import write_atomic
from sigma_assets.defs.shared.resources import StorageResource

if TYPE_CHECKING:
    from upath import UPath


class AtomicParquetIOManager(PolarsParquetIOManager):
    """One parquet file per asset and partition (`<root>/assets/<asset>/<partition>.parquet`).

    The nested storage resource owns the root's endpoint and credentials, so tables, the response store
    and models are always written to the same place with the same keys.

    dagster-polars streams into the destination file; a crash mid-write would leave a truncated file
    that later runs read as data. We encode in memory and publish the finished bytes in one step.
    """

    storage: StorageResource

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        root = self.storage.location()
        root.allow_plain_http()
        self._base_path = root.path("assets")

    def load_partitions(self, context: dg.InputContext) -> Any:
        # Dagster hands over a lone partition bare; an input typed as a mapping of partitions (e.g. every
        # shard's problems) must get a mapping however many partitions there are.
        loaded = super().load_partitions(context)
        typing_type = context.dagster_type.typing_type
        wants_mapping = typing_type is dict or get_origin(typing_type) in (dict, Mapping)
        if wants_mapping and len(context.asset_partition_keys) == 1:
            return {context.asset_partition_keys[0]: loaded}
        return loaded

    def write_df_to_path(self, context: dg.OutputContext, df: pl.DataFrame, path: UPath) -> None:
        buffer = io.BytesIO()
        df.write_parquet(buffer, compression="zstd")
        write_atomic(path, buffer.getvalue())
