"""The parquet IO manager: dagster-polars, with writes made atomic on every storage root."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
from dagster_polars import PolarsParquetIOManager

from sigma_assets.data.storage import write_atomic

if TYPE_CHECKING:
    from upath import UPath


class AtomicParquetIOManager(PolarsParquetIOManager):
    """One parquet file per asset and partition (`<root>/assets/<asset>/<partition>.parquet`).

    dagster-polars streams into the destination file; a crash mid-write would leave a truncated file
    that later runs read as data. We encode in memory and publish the finished bytes in one step.
    """

    def write_df_to_path(self, context: dg.OutputContext, df: pl.DataFrame, path: UPath) -> None:
        buffer = io.BytesIO()
        df.write_parquet(buffer, compression="zstd")
        write_atomic(path, buffer.getvalue())
