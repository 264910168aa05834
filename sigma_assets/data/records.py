"""Records of a problem or benchmark file, whatever it is stored as: jsonl, a JSON array, one JSON object
(a MATH problem file), parquet, or a folder of JSON files (MATH's release: `<subject>/<n>.json`), local
or on S3. Each record comes with its row: the line or item number, or the file's path in a folder.

No Dagster imports.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import polars as pl
from upath import UPath


class RecordsError(ValueError):
    """The file as a whole cannot be read; the message names it, and the line where one is at fault."""


def read_records(source: str, storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, dict]]:
    """(row, record) for every record of `source`."""
    path = UPath(source, **(storage_options or {})) if "://" in source else UPath(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise RecordsError(f"{source}: a folder without .json files")
        records = []
        for file in files:
            rows = _json_records(str(file), file.read_bytes())
            name = str(file.relative_to(path)).removesuffix(".json")
            records += [(name if len(rows) == 1 else f"{name}#{i}", r) for i, (_, r) in enumerate(rows, 1)]
        return records
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordsError(f"{source}: file not found") from None
    except OSError as exc:
        raise RecordsError(f"{source}: cannot read ({type(exc).__name__}: {exc})") from exc
    if source.lower().endswith(".parquet"):
        try:
            frame = pl.read_parquet(io.BytesIO(data))
        except Exception as exc:
            raise RecordsError(f"{source}: not a parquet file ({exc})") from exc
        return [(str(i), row) for i, row in enumerate(frame.iter_rows(named=True), start=1)]
    return _json_records(source, data)


def _json_records(source: str, data: bytes) -> list[tuple[str, dict]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordsError(f"{source}: not UTF-8 text, so not jsonl or JSON ({exc})") from exc
    if text.lstrip().startswith("["):  # a JSON array (DART-Math's DeepMind Mathematics, TheoremQA)
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{source}: not a valid JSON array ({exc.msg}, line {exc.lineno})") from None
        if not all(isinstance(r, dict) for r in rows):
            raise RecordsError(f"{source}: a JSON array whose items are not all objects")
        return [(str(i), r) for i, r in enumerate(rows, start=1)]
    records: list[tuple[str, dict]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            whole = _one_object(text)
            if whole is not None and not records:  # one object over several lines: a MATH problem file
                return [("1", whole)]
            raise RecordsError(f"{source} line {line_number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise RecordsError(f"{source} line {line_number}: expected a JSON object per line")
        records.append((str(line_number), record))
    if not records:
        raise RecordsError(f"{source}: no records")
    return records


def _one_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
