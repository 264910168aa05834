"""Problem sources: bundled sets, jsonl/parquet files (local or S3), and Hugging Face datasets.

Every source becomes the same rows: `problem_id` (stable), `source`, `problem`, `answer`, `level`,
`subject`. Whole-file faults (unreadable, wrong format, missing column) raise `ProblemSourceError` naming
the file; row faults (empty text, duplicate, no answer, an answer that is not mathematics) skip the row
and are returned as `SkippedRow`s naming file, row, field, answer and reason, so the caller can report
them: nothing is dropped silently. Every answer goes through `gold_answers.normalize_gold`, whatever the
layout; `keep_gradeable` then runs the answer checker over the answers kept (bounded, in worker processes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl
from upath import UPath

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.data.records import RecordsError, read_records
from sigma_assets.data.tables import Column, Table, polars_schema
from sigma_assets.method.answers import extract_boxed
from sigma_assets.method.gold_answers import gradeable_golds, normalize_gold
from sigma_assets.method.grading import AnswerChecker

PROBLEM_COLUMNS = ("problem", "question")
ANSWER_COLUMNS = ("answer", "final_answer")
SOLUTION_COLUMNS = ("solution",)
ID_COLUMNS = ("problem_id", "id", "unique_id", "idx")
LEVEL_COLUMNS = ("level", "difficulty")
SUBJECT_COLUMNS = ("subject", "type", "category")

DEFAULT_ARITHMETIC_COUNT = 32
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


class ProblemSourceError(ValueError):
    """The problem source as a whole cannot be read; the message names the file and, if known, row/field."""


@dataclass(frozen=True)
class Problem:
    problem_id: str
    source: str
    problem: str
    answer: str
    level: str | None = None
    subject: str | None = None
    row: int | None = None  # where the problem is in its source, for reports


@dataclass(frozen=True)
class SkippedRow:
    source: str
    row: int
    field: str
    reason: str
    # The answer at fault: as the source wrote it, or as normalised when the answer checker refused it.
    answer: str | None = None
    problem_id: str | None = None  # None when the row has neither an id nor a problem text

    def __str__(self) -> str:
        answer = f" ({self.answer!r})" if self.answer is not None else ""
        return f"{self.source} row {self.row}, field {self.field!r}{answer}: {self.reason}"

    @property
    def placement_key(self) -> str:
        """What places the row in a shard: its problem id, else its place in the source."""
        return self.problem_id or f"{self.source} row {self.row}"


@dataclass
class LoadedProblems:
    source: str
    problems: list[Problem] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)


@dataclass(frozen=True)
class ColumnNames:
    """Column names to read; None means "recognise the usual layouts" (plain, MATH, GSM8K)."""

    problem: str | None = None
    answer: str | None = None
    problem_id: str | None = None


def load_problems(
    source: str,
    columns: ColumnNames = ColumnNames(),
    storage_options: Mapping[str, Any] | None = None,
    checker: AnswerChecker | None = None,
) -> LoadedProblems:
    """Every problem of `source`: `arithmetic[:N]`, `champ`, a .jsonl/.parquet path or URL, or `hf:NAME`.

    With a `checker`, only problems whose gold answer can grade a prediction are kept (the rest are
    skipped rows); without one the answers are normalised but not checked, so that a caller that needs
    a subset (one shard) checks only that subset with `keep_gradeable`."""
    loaded = _load_source(source, columns, storage_options)
    if checker is not None:
        loaded.problems, ungradeable = keep_gradeable(loaded.problems, checker)
        loaded.skipped += ungradeable
        if not loaded.problems:
            raise ProblemSourceError(
                f"{source}: no gradeable problems ({len(loaded.skipped)} rows skipped; "
                f"first skipped: {loaded.skipped[0]})"
            )
    return loaded


def keep_gradeable(problems: list[Problem], checker: AnswerChecker) -> tuple[list[Problem], list[SkippedRow]]:
    """The problems whose gold answer can grade a prediction (`gold_answers.gradeable_golds`), with the
    alternatives that cannot dropped, and a skipped row for each of the others."""
    verdicts = gradeable_golds([p.answer for p in problems], checker)
    kept: list[Problem] = []
    skipped: list[SkippedRow] = []
    for problem, verdict in zip(problems, verdicts, strict=True):
        if verdict.answer is None:
            skipped.append(
                SkippedRow(
                    problem.source,
                    problem.row or 0,
                    "answer",
                    verdict.reason,
                    problem.answer,
                    problem.problem_id,
                )
            )
        else:
            kept.append(replace(problem, answer=verdict.answer))
    return kept, skipped


def _load_source(
    source: str, columns: ColumnNames, storage_options: Mapping[str, Any] | None
) -> LoadedProblems:
    name, _, arg = source.partition(":")
    if name == "arithmetic" and "/" not in source:
        count = _count(arg, source) if arg else DEFAULT_ARITHMETIC_COUNT
        rows = [
            Problem(pid, "arithmetic", text, answer, row=row)
            for row, (pid, text, answer) in enumerate(arithmetic_problems(count), start=1)
        ]
        return LoadedProblems(source, rows)
    if source == "champ":
        return _load_champ()
    if source.startswith("hf:"):
        return _load_hf(source, columns)
    lowered = source.lower()
    if lowered.endswith((".jsonl", ".json", ".parquet")) or UPath(source, **(storage_options or {})).is_dir():
        return from_records(source, _read_file(source, storage_options or {}), columns)
    raise ProblemSourceError(
        f"SIGMA_PROBLEMS={source!r}: not a bundled set (arithmetic, arithmetic:N, champ), "
        "a .jsonl/.parquet file, or hf:DATASET[:CONFIG][@SPLIT]"
    )


def from_records(
    source: str, records: Iterable[tuple[int, Mapping[str, Any]]], columns: ColumnNames = ColumnNames()
) -> LoadedProblems:
    """Turn (row number, record) pairs into problems, recognising plain, MATH and GSM8K layouts."""
    loaded = LoadedProblems(source)
    first_row_of: dict[str, int] = {}
    layout: _Layout | None = None
    for row, record in records:
        if layout is None:
            layout = _Layout.detect(source, row, record, columns)
        text = _text(record.get(layout.problem))
        raw_id = _text(record.get(layout.problem_id)) if layout.problem_id else ""
        if not text:
            loaded.skipped.append(
                SkippedRow(source, row, layout.problem, "empty problem", None, raw_id or None)
            )
            continue
        problem_id = raw_id or "p-" + hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]
        written, reason = layout.answer_of(record)
        gold = normalize_gold(written) if written is not None else None
        if gold is None or gold.answer is None:
            reason = gold.reason if gold is not None else reason
            loaded.skipped.append(SkippedRow(source, row, layout.answer_field, reason, written, problem_id))
            continue
        answer = gold.answer
        if problem_id in first_row_of:
            what = "problem_id" if raw_id else layout.problem
            loaded.skipped.append(
                SkippedRow(
                    source,
                    row,
                    what,
                    f"duplicate of row {first_row_of[problem_id]} ({problem_id})",
                    problem_id=problem_id,
                )
            )
            continue
        first_row_of[problem_id] = row
        loaded.problems.append(
            Problem(
                problem_id=problem_id,
                source=source,
                problem=text,
                answer=answer,
                level=_optional(record, LEVEL_COLUMNS),
                subject=_optional(record, SUBJECT_COLUMNS),
                row=row,
            )
        )
    if not loaded.problems:
        detail = f"; first skipped: {loaded.skipped[0]}" if loaded.skipped else ""
        raise ProblemSourceError(f"{source}: no usable problems ({len(loaded.skipped)} rows skipped{detail})")
    return loaded


@dataclass(frozen=True)
class _Layout:
    problem: str
    answer_field: str
    answer_kind: str  # "plain" | "gsm8k" | "math-solution"
    problem_id: str | None

    @classmethod
    def detect(cls, source: str, row: int, record: Mapping[str, Any], columns: ColumnNames) -> _Layout:
        keys = list(record.keys())

        def pick(explicit: str | None, candidates: tuple[str, ...], what: str) -> str | None:
            if explicit is not None:
                if explicit not in record:
                    raise ProblemSourceError(
                        f"{source} row {row}: missing {what} field {explicit!r} (fields: {', '.join(keys)})"
                    )
                return explicit
            return next((c for c in candidates if c in record), None)

        problem = pick(columns.problem, PROBLEM_COLUMNS, "problem")
        if problem is None:
            raise ProblemSourceError(
                f"{source} row {row}: missing problem field (one of {', '.join(PROBLEM_COLUMNS)}; "
                f"fields: {', '.join(keys)})"
            )
        answer = pick(columns.answer, ANSWER_COLUMNS, "answer")
        problem_id = pick(columns.problem_id, ID_COLUMNS, "id")
        if answer is not None:
            # GSM8K keeps the worked solution and the final "#### n" in its `answer` field; a plain answer
            # column is still checked row by row for that marker.
            kind = "gsm8k" if "####" in _text(record.get(answer)) else "plain"
            return cls(problem, answer, kind, problem_id)
        solution = next((c for c in SOLUTION_COLUMNS if c in record), None)
        if solution is None:
            raise ProblemSourceError(
                f"{source} row {row}: missing answer field (one of {', '.join(ANSWER_COLUMNS)}, or a MATH "
                f"`solution` with \\boxed{{}}; fields: {', '.join(keys)})"
            )
        return cls(problem, solution, "math-solution", problem_id)

    def answer_of(self, record: Mapping[str, Any]) -> tuple[str | None, str]:
        """The answer as the row writes it (before normalisation), or None and why there is none."""
        raw = _text(record.get(self.answer_field))
        if not raw:
            return None, "empty answer"
        if self.answer_kind == "gsm8k" or (self.answer_kind == "plain" and "####" in raw):
            match = _GSM8K_ANSWER.search(raw)
            if not match:
                return None, "GSM8K answer without a final '#### n' line"
            return match.group(1).replace(",", "").strip(), ""
        if self.answer_kind == "math-solution":
            boxed = extract_boxed(raw)
            if not boxed:
                return None, "MATH solution without a \\boxed{} answer"
            return boxed, ""
        return raw, ""


def _read_file(source: str, storage_options: Mapping[str, Any]) -> Iterable[tuple[int, Mapping[str, Any]]]:
    """Records of a jsonl, JSON or parquet file or a folder of JSON files (`data.records`), numbered."""
    try:
        rows = read_records(source, storage_options)
    except RecordsError as exc:
        raise ProblemSourceError(str(exc)) from exc
    return [(int(row) if row.isdigit() else index, record) for index, (row, record) in enumerate(rows, 1)]


def _load_champ() -> LoadedProblems:
    try:
        import champ_dataset
    except ImportError:
        raise ProblemSourceError("champ: install the `champ-dataset` package") from None
    dataset = champ_dataset.load("v0")
    records = (
        (row, {"id": f"champ-{p.identifier}", "problem": p.text, "answer": p.answer, "subject": p.category})
        for row, p in enumerate(dataset.problems.values(), start=1)
    )
    return from_records("champ", records)


def _load_hf(source: str, columns: ColumnNames) -> LoadedProblems:
    spec, _, split = source[len("hf:") :].partition("@")
    name, _, config = spec.partition(":")
    try:
        import datasets

        dataset = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as exc:
        raise ProblemSourceError(
            f"{source}: cannot load Hugging Face dataset {name!r} ({type(exc).__name__}: {exc}); "
            "offline, export it to jsonl or parquet and point SIGMA_PROBLEMS at the file"
        ) from exc
    return from_records(source, enumerate(dataset, start=1), columns)


def _count(arg: str, source: str) -> int:
    if not arg.isdigit() or int(arg) < 1:
        raise ProblemSourceError(
            f"SIGMA_PROBLEMS={source!r}: expected arithmetic:N with N a positive integer"
        )
    return int(arg)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _optional(record: Mapping[str, Any], candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        value = _text(record.get(name))
        if value:
            return value
    return None


def problems_frame(problems: Iterable[Problem], shard_of: Any) -> pl.DataFrame:
    """The `raw_problems` table; `shard_of(problem_id)` names each row's shard."""
    rows = [
        {
            "problem_id": p.problem_id,
            "shard": shard_of(p.problem_id),
            "source": p.source,
            "problem": p.problem,
            "answer": p.answer,
            "level": p.level,
            "subject": p.subject,
        }
        for p in problems
    ]
    return pl.DataFrame(rows, schema=RAW_PROBLEMS_SCHEMA)


RAW_PROBLEMS_COLUMNS: Table = {
    "problem_id": Column(pl.String, "Stable id: the source's own, or the source name and row."),
    "shard": Column(pl.String, "The problem's shard: a stable hash of its id."),
    "source": Column(pl.String, "Where the problem came from (bundled set or file)."),
    "problem": Column(pl.String, "The problem statement."),
    "answer": Column(
        pl.String, "The gold answer, normalised and checked gradeable (alternatives: 'or equivalently')."
    ),
    "level": Column(pl.String, "Difficulty, where the source gives one."),
    "subject": Column(pl.String, "Subject, where the source gives one."),
}
RAW_PROBLEMS_SCHEMA = polars_schema(RAW_PROBLEMS_COLUMNS)
