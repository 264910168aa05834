"""A prediction against a benchmark's gold answer, by the gold's kind (`benchmarks.EvalProblem.kind`).

- `bool`: true/false or yes/no, in any case and wrapping (`\\text{True}`);
- `option`: the multiple-choice letter, as `(a)`, `A` or `\\text{(A)}`;
- `number`: both read as numbers (thousands separators, `%`, `^\\circ`, `\\frac{a}{b}`,
  `3.83 \\times 10^{35}`, a unit or `x =` around it) and equal within the benchmark's relative
  tolerance, a percentage written as a whole number counting where the benchmark's harness counts it;
  otherwise math-verify decides;
- `math`: a number within a relative 1e-4 when both sides are numbers (Qwen2.5-Math's harness),
  otherwise math-verify, gold first (`AnswerChecker`).

A unit that the benchmark names apart from its answer (OlympiadBench's `unit`) or that a prediction
appends (`12 \\text{ cm}`, `5 meters`) is not part of the value. Plain Python with no Dagster imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from sigma_assets.evaluation.benchmarks import EvalProblem, canonical_bool, undelimited, unwrapped
from sigma_assets.method.gold_answers import normalize_gold

CheckMany = Callable[[Sequence[tuple[str, str | None]]], list[bool]]

_FRACTION_RE = re.compile(r"^(-?)\\[dt]?frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}$")
_SLASH_RE = re.compile(r"^(-?[\d.]+)\s*/\s*(-?[\d.]+)$")
_SCIENTIFIC_RE = re.compile(r"^(-?[\d.]+)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*(-?\d+)\s*\}?$")
_PLAIN_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
# Words after a number, "/" between them and a square or cube: "years old", "m/s", "cm^2"; not "e^{2t}".
_UNIT_RE = re.compile(r"(?<=[\d}])\s+[A-Za-z]+(?:\s*/\s*[A-Za-z]+)*(?:\^\{?[23]\}?)?(?:\s+[A-Za-z]+)*$")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_OPTION_RES = (
    re.compile(r"^\(?([a-eA-E])\)?(?:[.:)]|\s|$)"),
    re.compile(r"\(([a-eA-E])\)"),
    re.compile(r"\b([A-E])\b"),
)


def numeric_value(text: str) -> float | None:
    """The number `text` states, or None when it is not plainly one number."""
    t = text.strip()
    t = re.split(r"≈|\\approx", t)[-1]  # "√2 ≈ 1.41": the value is the approximation
    t = re.sub(r"\\[!,;: ]|\{,\}|\\\$|\$", lambda m: "," if m.group(0) == "{,}" else "", t)
    t = unwrapped(t)
    t = re.sub(r"^[A-Za-z]\w*\s*=\s*", "", t)  # "x = 5"
    factor = 1.0
    if re.search(r"\\?%\s*$", t):
        factor, t = 0.01, re.sub(r"\\?%\s*$", "", t).strip()
    t = _THOUSANDS_RE.sub("", re.sub(r"\^\s*\{?\\circ\}?|°", "", t).strip())
    value = _number(t)
    if value is None:  # a unit after the number: "109 years old", "5 m/s"
        value = _number(_UNIT_RE.sub("", t).strip())
    return None if value is None else value * factor


def _number(t: str) -> float | None:
    if _PLAIN_RE.match(t):
        return float(t)
    if m := _FRACTION_RE.match(t):
        return _ratio(m.group(2), m.group(3), negative=m.group(1) == "-")
    if m := _SLASH_RE.match(t):
        return _ratio(m.group(1), m.group(2))
    if m := _SCIENTIFIC_RE.match(t):
        return float(m.group(1)) * 10 ** int(m.group(2))
    return None


def _ratio(numerator: str, denominator: str, negative: bool = False) -> float | None:
    try:
        value = float(numerator) / float(denominator)
    except (ValueError, ZeroDivisionError):
        return None
    return -value if negative else value


def _close(predicted: float, gold: float, tolerance: float) -> bool:
    """Within `tolerance` of the gold, relative to the gold (TheoremQA's and the harness's rule); a whole
    number is matched exactly (9999 is not 10000, however close)."""
    if float(gold).is_integer():
        return predicted == gold
    return abs(predicted - gold) <= tolerance * abs(gold) + 1e-12


def option_letter(text: str) -> str | None:
    t = unwrapped(text)
    for pattern in _OPTION_RES:
        found = pattern.findall(t)
        if found:
            return found[-1].lower() if pattern is _OPTION_RES[2] else found[0].lower()
    return None


def clean_prediction(prediction: str, unit: str | None) -> str:
    """The prediction without its delimiters, the benchmark's unit and any unit it appends."""
    text = prediction.strip().strip("$").strip()
    if unit:
        for form in {unit, undelimited(unit)}:
            if form:
                text = text.replace(form, " ")
        text = " ".join(text.split()).rstrip(",").strip()
    normalized = normalize_gold(text).answer
    return normalized if normalized else text


def grade(
    problems: Sequence[EvalProblem], predictions: Sequence[str | None], check_many: CheckMany
) -> list[bool]:
    """Whether each prediction is right for its problem, in order (see the module docstring)."""
    if len(problems) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(problems)} problems")
    verdicts: list[bool | None] = []
    for problem, prediction in zip(problems, predictions, strict=True):
        verdicts.append(_grade_here(problem, prediction))
    pending = [i for i, v in enumerate(verdicts) if v is None]
    if pending:
        pairs = [
            (problems[i].answer, clean_prediction(predictions[i] or "", problems[i].unit)) for i in pending
        ]
        for i, ok in zip(pending, check_many(pairs), strict=True):
            verdicts[i] = ok
    return [bool(v) for v in verdicts]


def _grade_here(problem: EvalProblem, prediction: str | None) -> bool | None:
    """The verdict where no math-verify is needed; None to ask the answer checker."""
    if not prediction or not prediction.strip():
        return False
    if problem.kind == "bool":
        return canonical_bool(prediction) == problem.answer
    if problem.kind == "option":
        return option_letter(prediction) == problem.answer
    cleaned = clean_prediction(prediction, problem.unit)
    predicted, gold = numeric_value(cleaned), numeric_value(problem.answer)
    if predicted is None or gold is None:
        return None
    scaled = (gold * 100, gold / 100) if problem.percent_scaled else ()
    return any(_close(predicted, value, problem.tolerance) for value in (gold, *scaled))
