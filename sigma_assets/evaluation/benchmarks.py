"""Benchmark files in their published layouts: read, recognised without configuration, gold answers typed.

The paper's table is MATH and GSM8K in domain, CollegeMath, DeepMind Mathematics, OlympiadBench-Math and
TheoremQA out of domain; AIME and AMC files are the usual extras. Each is shipped in its own layout, as
jsonl, a JSON array, parquet or (MATH's original release) a folder of one JSON file per problem:

| layout | fields (case-insensitive) | gold answer |
| --- | --- | --- |
| `theoremqa` | `Question`, `Answer`, `Answer_type` | integer/float: a number; bool; option: a letter; list |
| `olympiadbench` | `question`, `final_answer` (a list), `is_multiple_answer`, `unit` | the list's answers |
| `gsm8k` | `question`, `answer` ending "#### N" | N |
| `math` | `problem` and `solution` (with `\\boxed{}`) or `answer` (MATH, MATH-500, Minerva, AIME) | the box |
| `college_math` | `question`, `answer`, `data_source`/`data_topic` | the answer, units dropped |
| `question_answer` | `question` or `problem`, `answer` (DeepMind Mathematics, AMC, plain) | the answer |

A gold answer has a kind, which says how a prediction is compared with it (`evaluation.answer_check`):
`math` (math-verify, a number within a relative 1e-4), `number` (a number within the benchmark's
tolerance), `bool` (true/false, yes/no) or `option` (a multiple-choice letter). A file whose layout is not
recognised is an error naming the file and the fields it holds; a row whose answer cannot grade a
prediction is skipped and listed with its reason.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sigma_assets.data import records
from sigma_assets.method.answers import extract_boxed
from sigma_assets.method.gold_answers import YES_NO, gradeable_golds, normalize_gold
from sigma_assets.method.grading import AnswerChecker

# TheoremQA's own evaluator accepts a float within 4 % of the gold; Qwen2.5-Math's harness (MATH, GSM8K,
# CollegeMath, OlympiadBench, ...) within a relative 1e-4.
THEOREMQA_TOLERANCE = 0.04
DEFAULT_TOLERANCE = 1e-4


class EvalSetError(ValueError):
    """An evaluation set cannot be used; the message names the set, the file and what is wrong."""


@dataclass(frozen=True)
class EvalProblem:
    problem_id: str
    problem: str
    answer: str  # the stored gold: normalised for `math`, canonical for the other kinds
    kind: str = "math"  # math | number | bool | option
    # The answer as the benchmark publishes it, math delimiters removed: what a perfect model states.
    published: str = ""
    unit: str | None = None  # a unit the benchmark names apart from the answer (OlympiadBench)
    tolerance: float = DEFAULT_TOLERANCE  # relative, for numbers
    # Qwen2.5-Math's harness also accepts a number 100 times the gold or a hundredth of it (a percentage
    # written as a whole number); TheoremQA's evaluator does not.
    percent_scaled: bool = True


@dataclass(frozen=True)
class SkippedProblem:
    row: int
    problem_id: str
    answer: str
    reason: str


@dataclass(frozen=True)
class EvalSet:
    name: str
    problems: tuple[EvalProblem, ...]
    skipped: tuple[SkippedProblem, ...] = ()
    source: str = ""
    layout: str = ""


def read_records(source: str, storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, dict]]:
    """(row, record) for every record of a benchmark file or folder (`data.records`)."""
    try:
        return records.read_records(source, storage_options)
    except records.RecordsError as exc:
        raise EvalSetError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gold:
    """A row's gold answer as published (delimiters removed) and how predictions compare with it."""

    published: str
    kind: str = "math"
    unit: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    percent_scaled: bool = True


class RowSkipped(ValueError):
    """This row's answer cannot grade a prediction; the message is the reason."""


@dataclass(frozen=True)
class Layout:
    name: str
    required: tuple[str, ...]  # lower-case field names the layout needs
    problem: Callable[[dict], str]
    gold: Callable[[dict], Gold]
    accepts: Callable[[dict], bool] = lambda record: True


def _field(record: dict, *names: str) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def undelimited(answer: str) -> str:
    """The answer without its math delimiters: `$-\\frac{3}{2}$` -> `-\\frac{3}{2}`."""
    return re.sub(r"\$|\\\(|\\\)|\\\[|\\\]", "", answer).strip()


def unwrapped(text: str) -> str:
    """`\\text{...}` (and `\\mathrm`, `\\textbf`, `\\mbox`) replaced by its words, spaced apart."""
    return re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r" \1 ", text).strip()


def _theoremqa_gold(record: dict) -> Gold:
    answer, kind = record["answer"], _text(record["answer_type"]).lower()
    strict = {"percent_scaled": False}
    if kind == "bool":
        return Gold(str(answer), "bool", **strict)
    if kind == "option":
        return Gold(_text(answer), "option", **strict)
    if kind == "integer":
        return Gold(_text(answer), "number", tolerance=0.0, **strict)
    if kind == "float":
        return Gold(_text(answer), "number", tolerance=THEOREMQA_TOLERANCE, **strict)
    if kind.startswith("list"):
        values = answer if isinstance(answer, list) else ast.literal_eval(_text(answer))
        return Gold("[" + ", ".join(str(v) for v in values) + "]", "math", **strict)
    raise RowSkipped(f"Answer_type {kind!r} is not one this project grades")


def _olympiad_answers(record: dict) -> list[str]:
    answers = record["final_answer"]
    if isinstance(answers, str):  # stored as the text of a list: "['-5,7']"
        try:
            answers = ast.literal_eval(answers) if answers.strip().startswith("[") else [answers]
        except (ValueError, SyntaxError):
            answers = [answers]
    return [_text(a) for a in answers if _text(a)]


def _olympiad_gold(record: dict) -> Gold:
    answers = _olympiad_answers(record)
    if not answers:
        raise RowSkipped("empty final_answer")
    unit = _text(record.get("unit")) or None
    return Gold(", ".join(undelimited(a) for a in answers), unit=unit)


def _gsm8k_gold(record: dict) -> Gold:
    match = re.search(r"####\s*(.+?)\s*$", _text(record["answer"]), re.S)
    if not match:
        raise RowSkipped("GSM8K answer without a final '#### N' line")
    return Gold(match.group(1).replace(",", ""), "number")


def _math_gold(record: dict) -> Gold:
    answer = _text(record.get("answer"))
    if answer:
        return Gold(undelimited(answer))
    boxed = extract_boxed(_text(record.get("solution")))
    if not boxed:
        raise RowSkipped("MATH solution without a \\boxed{} answer")
    return Gold(boxed)


def _plain_gold(record: dict) -> Gold:
    answer = _field(record, "answer")
    if isinstance(answer, bool):
        return Gold(str(answer), "bool")
    if isinstance(answer, int | float):  # AMC's 27.0, AIME's 204
        return Gold(_text(answer), "number")
    return Gold(undelimited(_text(answer)))


def _problem(record: dict) -> str:
    return _text(_field(record, "problem", "question"))


def _olympiad_problem(record: dict) -> str:
    context = _text(record.get("context"))
    return f"{context}\n\n{_text(record['question'])}" if context else _text(record["question"])


LAYOUTS = (
    Layout("theoremqa", ("question", "answer", "answer_type"), _problem, _theoremqa_gold),
    Layout("olympiadbench", ("question", "final_answer"), _olympiad_problem, _olympiad_gold),
    Layout(
        "gsm8k", ("question", "answer"), _problem, _gsm8k_gold, lambda r: "####" in _text(r.get("answer"))
    ),
    Layout("math", ("problem", "solution"), _problem, _math_gold),
    Layout(
        "college_math",
        ("question", "answer"),
        _problem,
        _plain_gold,
        lambda r: "data_source" in r or "data_topic" in r,
    ),
    Layout("question_answer", ("problem", "answer"), _problem, _plain_gold),
    Layout("question_answer", ("question", "answer"), _problem, _plain_gold),
)


def detect_layout(source: str, record: dict) -> Layout:
    fields = set(record)
    for layout in LAYOUTS:
        if set(layout.required) <= fields and layout.accepts(record):
            return layout
    expected = "; ".join(f"{layout.name}: {', '.join(layout.required)}" for layout in LAYOUTS)
    raise EvalSetError(
        f"{source}: layout not recognised from its fields ({', '.join(sorted(fields))}); expected one of "
        f"{expected}"
    )


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_OPTION_RE = re.compile(r"^\(?([a-eA-E])\)?\.?$")
_BOOL_VALUES = {"true": "True", "yes": "True", "false": "False", "no": "False"}


def canonical_number(text: str) -> str | None:
    """`016` -> `16`, `27.0` -> `27`, `1,000` -> `1000`; None for what is not one plain number."""
    plain = text.replace(",", "").strip()
    if not _NUMBER_RE.fullmatch(plain):
        return None
    value = float(plain)
    return str(int(value)) if value.is_integer() and "e" not in plain.lower() else plain.lstrip("+")


def canonical_bool(text: str) -> str | None:
    """`True`, `\\text{yes}`, `No.` -> "True" / "False"; None for anything else."""
    return _BOOL_VALUES.get(re.sub(r"[^a-z]", "", unwrapped(text).lower()))


def _typed(gold: Gold) -> tuple[Gold, str | None]:
    """The gold with a kind its answer has (a yes/no `math` answer is a `bool`), and its stored form for
    the kinds checked here (None: a `math` answer, vetted by the answer checker)."""
    if (
        gold.kind == "math"
        and canonical_bool(gold.published)
        and normalize_gold(gold.published).reason == YES_NO
    ):
        gold = Gold(gold.published, "bool", gold.unit, gold.tolerance, gold.percent_scaled)
    if gold.kind == "bool":
        value = canonical_bool(gold.published)
        if value is None:
            raise RowSkipped(f"not a true/false answer: {gold.published!r}")
        return replace(gold, published=value), value
    if gold.kind == "option":
        match = _OPTION_RE.match(gold.published.strip())
        if not match:
            raise RowSkipped(f"not a multiple-choice letter: {gold.published!r}")
        return gold, match.group(1).lower()
    if gold.kind == "number":
        value = canonical_number(gold.published)
        if value is None:
            raise RowSkipped(f"not a number: {gold.published!r}")
        return gold, value
    return gold, None


def theoremqa_problem(problem_id: str, question: str, answer: Any, answer_type: str) -> EvalProblem:
    """One TheoremQA problem typed as its layout types it (for graded outputs stored apart from the file)."""
    gold, stored = _typed(_theoremqa_gold({"answer": answer, "answer_type": answer_type}))
    return EvalProblem(
        problem_id,
        question,
        stored if stored is not None else normalize_gold(gold.published).answer or gold.published,
        gold.kind,
        gold.published,
        gold.unit,
        gold.tolerance,
        gold.percent_scaled,
    )


def load_benchmark(
    name: str, source: str, checker: AnswerChecker, storage_options: Mapping[str, Any] | None = None
) -> EvalSet:
    """Every problem of a benchmark file whose gold answer can grade a prediction; the rest listed."""
    records = [
        (row, {k.lower(): v for k, v in r.items()}) for row, r in read_records(source, storage_options)
    ]
    layout = detect_layout(source, records[0][1])
    kept: list[tuple[int, EvalProblem]] = []
    skipped: list[SkippedProblem] = []
    seen: set[str] = set()
    for index, (row, record) in enumerate(records, start=1):
        text = layout.problem(record)
        problem_id = _problem_id(name, record, row, text)
        published = ""
        try:
            if not text:
                raise RowSkipped("empty problem")
            if problem_id in seen:
                raise RowSkipped(f"duplicate id {problem_id}")
            gold = layout.gold(record)
            published = gold.published
            gold, stored = _typed(gold)
            if stored is None:
                normalized = normalize_gold(gold.published)
                if normalized.answer is None:
                    raise RowSkipped(normalized.reason)
                stored = normalized.answer
        except (RowSkipped, KeyError, ValueError, SyntaxError) as exc:
            reason = str(exc) if isinstance(exc, RowSkipped) else f"unreadable answer ({exc!r})"
            skipped.append(SkippedProblem(index, problem_id, published, reason))
            continue
        seen.add(problem_id)
        kept.append(
            (
                index,
                EvalProblem(
                    problem_id,
                    text,
                    stored,
                    gold.kind,
                    gold.published,
                    gold.unit,
                    gold.tolerance,
                    gold.percent_scaled,
                ),
            )
        )
    # `math` answers must parse to what they say (the answer checker, bounded, in worker processes).
    math = [(i, p) for i, p in kept if p.kind == "math"]
    verdicts = dict(
        zip((i for i, _ in math), gradeable_golds([p.answer for _, p in math], checker), strict=True)
    )
    problems = []
    for index, problem in kept:
        verdict = verdicts.get(index)
        if verdict is not None and verdict.answer is None:
            skipped.append(SkippedProblem(index, problem.problem_id, problem.published, verdict.reason))
        else:
            problems.append(replace(problem, answer=verdict.answer) if verdict is not None else problem)
    skipped.sort(key=lambda s: s.row)
    if not problems:
        first = f"; first skipped: row {skipped[0].row}: {skipped[0].reason}" if skipped else ""
        raise EvalSetError(f"{source}: no gradeable problems ({len(skipped)} rows skipped{first})")
    return EvalSet(name, tuple(problems), tuple(skipped), source, layout.name)


def _problem_id(name: str, record: dict, row: str, text: str) -> str:
    own = _text(_field(record, "problem_id", "unique_id", "id", "idx", "question_number"))
    if own:
        return f"{name}-{own}"
    if not row.isdigit():  # a MATH folder's file path
        return f"{name}-{row}"
    return f"{name}-" + hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:12]
