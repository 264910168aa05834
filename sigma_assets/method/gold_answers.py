"""Gold answers a grader can use: one normalisation for every problem source, then a bounded check.

Sources write answers for people: "C(10, 5), or equivalently 252", "2 inequalities", "No". math-verify
reads the first as the set {E·q·u·i·v·a·l·e·n·t·l·y·252, C(10, 5)}, so a correct `\\boxed{252}` would be
graded wrong, and a search over such a problem spends its budget on a wrong label. `normalize_gold`
keeps the mathematical part(s) where the meaning is clear and names a reason where there is none;
`gradeable_golds` then asks the answer checker (worker processes, each answer time-bounded) whether each
kept form parses to an expression that verifies against itself and keeps every variable it names.

Rules, in order, per alternative:
- wrappers: `$…$`, `\\(…\\)`, `\\[…\\]`, `\\boxed{}` and a whole-answer `\\text{}` are unwrapped;
- alternatives: "X, or equivalently Y" and "X, or an equivalent form such as Y" keep both (a prediction
  may match either, see `grading.GOLD_ALTERNATIVES_JOINER`); "X, or approximately Y" keeps X only;
- a trailing remark "(i.e., …)" or a parenthesis of prose is dropped: "100 (i.e., all values)" -> 100;
- yes/no answers, "no such value" answers (none, no solutions, does not exist, not possible) and bounds
  ("at least 1") are not values math-verify can compare: skipped with that reason. A yes/no rule would
  let a policy that guesses be right half the time, so those problems never enter the search;
- lead-ins with one value: "X is the only possible value", "The limit exists and is equal to X";
- lists: "376 and 625" -> "376, 625"; "x=0, y=2 and x=9, y=11" -> "(x=0, y=2), (x=9, y=11)";
- units and counted nouns after a number: "2 inequalities" -> 2, "18\\text{ cm}^2" -> 18, "\\$32" -> 32;
- plain-text notation: C(n, k) -> \\binom{n}{k}, floor(x) -> \\lfloor x \\rfloor,
  sum_(i=1)^n -> \\sum_{i=1}^{n};
- thousands separators: "1,000", "1{,}000", "10,\\!000" -> the number;
- whatever still holds an English word is prose, and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sigma_assets.method.answers import FUNCTION_NAMES, extract_boxed
from sigma_assets.method.grading import (
    GOLD_ALTERNATIVES_JOINER,
    AnswerChecker,
    gold_alternatives,
)

EMPTY = "empty answer"
YES_NO = "yes/no answer"
NO_SUCH_VALUE = "no such value"
BOUND = "a bound, not a value"
PROSE = "prose, not a mathematical answer"


@dataclass(frozen=True)
class GoldAnswer:
    """A gold answer as stored (alternatives joined), or None with the reason it cannot grade."""

    answer: str | None
    reason: str = ""


def reason_category(reason: str) -> str:
    """A skip reason without its detail ("prose, not a mathematical answer: 'values'" -> the part before)."""
    return reason.split(": ", 1)[0]


# -- normalisation (pure string rules) -------------------------------------------------------------------

_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "≤": "\\le ", "≥": "\\ge ", "±": "\\pm "}
_UNICODE.update({"π": "\\pi ", "∞": "\\infty ", "√": "\\sqrt"})
_MATH_SPAN_RE = re.compile(
    r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S
)
_WHOLE_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf)\{([^{}]*)\}")
_ALTERNATIVE_RE = re.compile(
    r",?\s*\bor\s+(?:equivalently|an\s+equivalent\s+form(?:\s+such\s+as)?|in\s+an\s+equivalent\s+form)\b:?\s*"
    r"|,\s*equivalently\b:?\s*",
    re.I,
)
# After an exact value only: an answer that is nothing but an approximation stays, and reads as prose.
_APPROXIMATION_RE = re.compile(r"(?<=\S)(?:,?\s*\bor\s+(?:approximately|about)\b|\s*≈).*$", re.I | re.S)
_REMARK_START_RE = re.compile(r"(?:i\.\s*e\.|e\.\s*g\.|that is\b|namely\b)", re.I)
_YES_NO_RE = re.compile(r"(?:yes|no|true|false)\s*(?:$|[,.;:!(])", re.I)
_NO_SUCH_RE = re.compile(
    r"^(?:no|none)\b|\bno such\b|\bdoes not exist\b|\bdo not exist\b|\bnot possible\b|\bimpossible\b"
    r"|^there (?:is|are|exists?) no\b",
    re.I,
)
_BOUND_RE = re.compile(
    r"^(?:at least|at most|always (?:greater|less|more|at least|at most)|more than|less than|fewer than"
    r"|greater than|no more than|no less than|strictly)\b",
    re.I,
)
_LEAD_IN_RES = [
    re.compile(r"^(?P<x>.+?)\s+is the only (?:possible )?(?:value|answer|solution)s?$", re.I | re.S),
    re.compile(
        r"^the only (?:possible )?(?:value|answer|solution)"
        r"(?:\s+(?:for|of)\s+(?:the\s+)?\w+)?\s+is\s+(?P<x>.+)$",
        re.I | re.S,
    ),
    re.compile(r"^the \w+ exists and (?:is )?(?:equal to|equals) (?P<x>.+)$", re.I | re.S),
    re.compile(r"^the (?:\w+ )?\w+ (?:is|equals) (?:equal to )?(?P<x>.+)$", re.I | re.S),
]
_LIST_WORD_RE = re.compile(r",?\s+(?:and|or)\s+", re.I)
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?"
# "2 inequalities", "18 cm^2", "2,365,200,000 beats/lifetime"
_COUNTED_RE = re.compile(rf"^(?P<x>{_NUMBER})\s*(?P<words>[A-Za-z][A-Za-z\s/-]*?)(?:\^\{{?[23]\}}?)?$")
# Words after a number that change its value rather than name what it counts.
# fmt: off
_OPERATOR_WORDS = frozenset({
    "squared", "cubed", "factorial", "choose", "mod", "modulo", "to", "over", "plus", "minus",
    "times", "divided", "and", "or", "of", "percent",
})
# fmt: on
_LATEX_UNIT_RE = re.compile(
    r"^(?P<x>.+?)\s*\\(?:text|mbox|mathrm|textrm)\{\s*[A-Za-z][A-Za-z\s.]*\}(?:\s*\^\s*\{?[23]\}?)?$", re.S
)
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\q?quad\b|~")
_LIST_TEXT_RE = re.compile(r"\\text\{\s*(?:or|and)\s*\}")
_BINOM_C_RE = re.compile(r"(?<![A-Za-z\\])C\(")
_FLOOR_CEIL_RE = re.compile(r"(?<![A-Za-z\\])(floor|ceil)\(")
_SUM_RE = re.compile(r"(?<![A-Za-z\\])(sum|prod)_\((?P<lo>[^()]*)\)\^(?P<hi>\([^()]*\)|[A-Za-z0-9]+)\s*")
# fmt: off
_ENGLISH_TWO_LETTER = frozenset({
    "no", "or", "is", "of", "if", "to", "as", "at", "in", "by", "an", "it", "be", "on", "so", "we",
    "do", "up",
})
# fmt: on
_VOWEL_RE = re.compile(r"[aeiou]", re.I)


def normalize_gold(raw: str) -> GoldAnswer:
    """The stored form of a source's gold answer, or the reason it is not a mathematical answer."""
    text = _unwrap(" ".join(str(raw).split()))
    if not text:
        return GoldAnswer(None, EMPTY)
    text = _APPROXIMATION_RE.sub("", text)
    kept: list[str] = []
    reasons: list[str] = []
    for form in _top_level_split(text, _ALTERNATIVE_RE):
        answer, reason = _normalize_form(form)
        if answer:
            kept.append(answer)
        else:
            reasons.append(reason)
    if not kept:
        return GoldAnswer(None, reasons[0] if reasons else EMPTY)
    return GoldAnswer(GOLD_ALTERNATIVES_JOINER.join(dict.fromkeys(kept)))


def _normalize_form(form: str) -> tuple[str, str]:
    """One alternative: (kept answer, "") or ("", reason)."""
    form = _drop_trailing_remark(form.strip().rstrip(".;").strip())
    if not form:
        return "", EMPTY
    if _YES_NO_RE.match(form):
        return "", YES_NO
    if _NO_SUCH_RE.search(form):
        return "", f"{NO_SUCH_VALUE}: {form!r}"
    if _BOUND_RE.match(form):
        return "", f"{BOUND}: {form!r}"
    for lead_in in _LEAD_IN_RES:
        match = lead_in.match(form)
        if match:
            form = match.group("x").strip().rstrip(".").strip()
            break
    form = _join_listed(form)
    form = _drop_units(form)
    form = _ascii_to_latex(form)
    if _THOUSANDS_RE.fullmatch(form):
        form = form.replace(",", "")
    word = prose_word(form)
    if word:
        return "", f"{PROSE}: {word!r} in {form!r}"
    return form, ""


def _unwrap(text: str) -> str:
    for old, new in _UNICODE.items():
        text = text.replace(old, new)
    if "\\boxed" in text or "\\fbox" in text:
        text = extract_boxed(text) or text
    text = _MATH_SPAN_RE.sub(lambda m: next(g for g in m.groups() if g is not None), text)
    text = _LIST_TEXT_RE.sub(", ", text)
    text = _SPACING_RE.sub(lambda m: "" if m.group(0) == "\\!" else " ", text)
    text = text.replace("{,}", ",")
    whole = _WHOLE_TEXT_RE.fullmatch(text.strip())
    if whole:
        text = whole.group(1)
    return " ".join(text.split()).strip()


def _drop_trailing_remark(form: str) -> str:
    """`X (i.e., …)` or `X (words)` -> X; a parenthesis of mathematics, such as `(x=2, y=8)`, stays."""
    if not form.endswith(")"):
        return form
    start = _matching_open(form, len(form) - 1)
    if start is None or start == 0 or not form[start - 1].isspace():
        return form
    inside = form[start + 1 : -1]
    if _REMARK_START_RE.match(inside.strip()) or prose_word(inside):
        return form[:start].strip().rstrip(",").strip()
    return form


def _matching_open(text: str, close: int) -> int | None:
    depth = 0
    for i in range(close, -1, -1):
        if text[i] == ")":
            depth += 1
        elif text[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    return None


def _top_level_split(text: str, separator: re.Pattern[str]) -> list[str]:
    """Split at matches of `separator` that sit outside every bracket and brace."""
    parts, start = [], 0
    for match in separator.finditer(text):
        if _depth(text, match.start()) == 0:
            parts.append(text[start : match.start()])
            start = match.end()
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _depth(text: str, end: int) -> int:
    depth = 0
    for ch in text[:end]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth


def _join_listed(form: str) -> str:
    """ "1, 4 and 9" -> "1, 4, 9"; solutions of several variables keep their grouping in parentheses."""
    parts = _top_level_split(form, _LIST_WORD_RE)
    if len(parts) < 2 or any(prose_word(part) for part in parts):
        return form
    grouped = [
        f"({part})" if "=" in part and _top_level_split(part, re.compile(",")) != [part] else part
        for part in parts
    ]
    return ", ".join(grouped)


def _drop_units(form: str) -> str:
    """Units after each value of a list too: "10 / 49 meters, 20 / 49 seconds" -> "10 / 49, 20 / 49"."""
    parts = _top_level_split(form, re.compile(r",\s+"))
    return ", ".join(_drop_unit(part) for part in parts) if len(parts) > 1 else _drop_unit(form)


def _drop_unit(form: str) -> str:
    form = re.sub(r"^\\?\$\s*(?=\d)", "", form)  # a currency sign before the amount
    unit = _LATEX_UNIT_RE.match(form)
    if unit and not prose_word(unit.group("x")):
        form = unit.group("x").strip()
    counted = _COUNTED_RE.match(form)
    if counted:
        words = re.split(r"[\s/]+", counted.group("words").lower().strip())
        # A one-letter word may be a variable ("3 times x", "5 m"): then the meaning is not clear.
        if words and words[0] not in _OPERATOR_WORDS and all(len(w) >= 2 for w in words):
            form = counted.group("x")
    return form


def _ascii_to_latex(form: str) -> str:
    """Plain-text notation math-verify misreads: C(n, k), floor(x), ceil(x), sum_(i=1)^n."""
    form = _SUM_RE.sub(lambda m: f"\\{m.group(1)}_{{{m.group('lo')}}}^{{{m.group('hi').strip('()')}}} ", form)
    for pattern, render in (
        (_FLOOR_CEIL_RE, _render_floor_ceil),
        (_BINOM_C_RE, _render_binom),
    ):
        while True:
            replaced = _replace_call(form, pattern, render)
            if replaced == form:
                break
            form = replaced
    return form


def _replace_call(
    form: str, pattern: re.Pattern[str], render: Callable[[re.Match[str], str], str | None]
) -> str:
    for match in pattern.finditer(form):
        open_at = match.end() - 1
        close_at = _matching_close(form, open_at)
        if close_at is None:
            continue
        rendered = render(match, form[open_at + 1 : close_at])
        if rendered is None:
            continue
        before = form[: match.start()]
        # `2C(10, 5)`: a number right before \binom reads as a mixed number (254), so multiply explicitly.
        if rendered.startswith("\\binom") and before.rstrip()[-1:].isalnum():
            rendered = "\\cdot " + rendered
        return before + rendered + form[close_at + 1 :]
    return form


def _matching_close(text: str, open_at: int) -> int | None:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _render_floor_ceil(match: re.Match[str], inner: str) -> str:
    left, right = ("\\lfloor", "\\rfloor") if match.group(1) == "floor" else ("\\lceil", "\\rceil")
    return f"{{{left} {inner} {right}}}"  # braced, so `2^floor(n/2)` stays one exponent


def _render_binom(match: re.Match[str], inner: str) -> str | None:
    args = _top_level_split(inner, re.compile(","))
    if len(args) != 2:
        return None  # C(x) or C(a, b, c) is some other function
    return f"\\binom{{{args[0]}}}{{{args[1]}}}"


def prose_word(text: str) -> str | None:
    """The first English word in an answer, or None. LaTeX commands and function names are not words;
    a short run of letters without a vowel (`xy`, `xyz`) is a product of variables."""
    text = re.sub(r"\\(?:begin|end)\{[^}]*\}", " ", text)
    text = re.sub(r"\\[A-Za-z]+", " ", text)
    for run in re.findall(r"[A-Za-z]+", text):
        lowered = run.lower()
        if lowered in FUNCTION_NAMES:
            continue
        if (len(run) >= 3 and _VOWEL_RE.search(run)) or lowered in _ENGLISH_TWO_LETTER:
            return run
    return None


# -- validation (bounded, through the answer checker) -----------------------------------------------------

_PLAIN_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def gradeable_golds(answers: Sequence[str], checker: AnswerChecker) -> list[GoldAnswer]:
    """Per normalised gold answer, the forms that can grade a prediction, or the reason none can.

    A form that fails is dropped when another form of the same answer passes. Plain numbers pass
    without a round trip to the checker, so a source of integers never starts its worker."""
    forms = [gold_alternatives(answer) for answer in answers]
    to_check = sorted({f for fs in forms for f in fs if not _PLAIN_NUMBER_RE.fullmatch(f)})
    reasons = dict(zip(to_check, checker.ungradeable_reasons(to_check), strict=True))
    out = []
    for fs in forms:
        kept = [f for f in fs if reasons.get(f) is None]
        out.append(
            GoldAnswer(GOLD_ALTERNATIVES_JOINER.join(kept)) if kept else GoldAnswer(None, reasons[fs[0]])
        )
    return out
