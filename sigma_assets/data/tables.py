"""Table schemas: each column's polars type and what it means, kept beside the code that builds the rows.

The Dagster shell publishes them (`dagster/column_schema`) so the UI explains every column, and
builds its frames with `polars_schema`, so the stored types are the documented ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Column:
    dtype: pl.DataType | type[pl.DataType]
    description: str


Table = dict[str, Column]


def polars_schema(table: Table) -> dict[str, pl.DataType | type[pl.DataType]]:
    return {name: column.dtype for name, column in table.items()}
