"""Definition metadata the UI reads: every table's columns, typed and described."""

from __future__ import annotations

import dagster as dg

from sigma_assets.data.tables import Table


def column_schema(table: Table) -> dict[str, dg.TableSchema]:
    """`dagster/column_schema` for an asset definition, from a plain table description."""
    columns = [
        dg.TableColumn(name, str(column.dtype), description=column.description)
        for name, column in table.items()
    ]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}
