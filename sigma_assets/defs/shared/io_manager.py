"""The parquet IO manager: dagster-polars, on the storage resource's root, with atomic writes."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

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

    def write_df_to_path(self, context: dg.OutputContext, df: pl.DataFrame, path: UPath) -> None:
        buffer = io.BytesIO()
        df.write_parquet(buffer, compression="zstd")
        write_atomic(path, buffer.getvalue())
