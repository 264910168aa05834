"""Explicit answers in model text: extraction for evaluation, and the strict final-answer rule.

`final_answer` is the rule for search, revision and training data: an explicit `\\boxed{}` or "The answer
is ..." that closes the text. `extract_answer` is evaluation's lenient reading, which falls back to the
last number. Plain Python with no Dagster imports; equality with the gold answer is in `grading`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from sigma_assets.method.arithmetic import arithmetic_value, false_equation
from sigma_assets.method.degeneration import garbage, loop, new_question, prose_words

# Names that are functions or constants, not variables, when an answer is written in plain text.
# fmt: off
FUNCTION_NAMES = frozenset({
    "sqrt", "cbrt", "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh",
    "cosh", "tanh", "log", "ln", "lg", "exp", "min", "max", "gcd", "lcm", "mod", "floor", "ceil",
    "sum", "prod", "lim", "pi", "inf", "infty", "infinity", "oo", "binom", "det", "deg", "abs",
    "sgn", "sign",
})
# fmt: on

# ---------------------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "answer is", optionally "final answer is" / "answer is:"; the last occurrence wins.
_ANSWER_PHRASE_RE = re.compile(r"\banswer(?:\s+is\b\s*:?|\s*:)[ \t]*", re.IGNORECASE)
# A number: optional minus (not a binary minus as in `5-3`), thousands commas or plain digits, decimals,
# and a simple fraction `3/4`. The lookbehinds keep us from starting inside a word or another number.
_NUMBER_PATTERN = (
    r"(?:(?<![\w)\]}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
)
_NUMBER_RE = re.compile(_NUMBER_PATTERN)
_COMMA_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# "42 apples", "8 apples in all", "3.5 km/h": a number, then words only (a first word of one letter may be
# a variable: "9 x" is 9x).
_NUMBER_THEN_WORDS_RE = re.compile(rf"({_NUMBER_PATTERN})\s+[A-Za-z]{{2,}}[A-Za-z/\s]*$")
_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")


def _balanced_group(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the `{...}` group opening at `text[start]` and the index after it; None if unclosed."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # `\{` and `\}` are literal braces, not grouping
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _boxed_arguments(text: str) -> Iterator[tuple[str, int, bool]]:
    """Each `\\boxed{...}` (or `\\boxed 5`): its stripped content, where it ends, and whether it is braced."""
    for m in _BOXED_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        if j < len(text) and text[j] == "{":
            group = _balanced_group(text, j)
            if group:
                yield group[0].strip(), group[1], True
        elif j > m.end():  # `\boxed 5`: the argument is the next whitespace-delimited token
            token = re.match(r"[^\s$]+", text[j:])
            if token:
                yield token.group(0).rstrip(".,;").strip(), j + token.end(), False


# What a box holds when it is a blank to fill, not an answer: a problem that writes
# `\\boxed{\\phantom{2}}` or `\\boxed{}` for "fill in this digit", and a solution that repeats it.
_BLANK_RE = re.compile(r"\\[hv]?phantom\{[^{}]*\}|\\q?quad\b|\\[,;:! ]|~|\\square\b|\\_|\\text\{\s*\}|[\s?_]")


def is_blank(content: str) -> bool:
    """Whether a box's content is a blank to fill (nothing, `\\phantom{2}`, `\\quad`, `?`), not an answer."""
    return not _BLANK_RE.sub("", content)


def _boxed_contents(text: str) -> list[str]:
    """Every `\\boxed{...}` (or `\\boxed 5`) content that states something, in order of appearance."""
    return [content for content, _, _ in _boxed_arguments(text) if not is_blank(content)]


def plain_number(s: str) -> str:
    """`1,234` -> `1234` for strings that are one comma-grouped number; anything else unchanged."""
    return s.replace(",", "") if _COMMA_NUMBER_RE.fullmatch(s) else s


def _clean_phrase_answer(tail: str) -> str:
    """The answer after "answer is": a leading math span, else the text up to the full stop."""
    tail = tail.strip().strip("*").strip()
    span = _MATH_SPAN_RE.match(tail)
    if span:
        answer = next(g for g in span.groups() if g is not None)
    else:
        answer = re.split(r"\.(?:\s|$)", tail, maxsplit=1)[0]
        # "42 apples" -> "42": trailing units would otherwise parse as a product of symbols.
        units = _NUMBER_THEN_WORDS_RE.match(answer)
        if units:
            answer = units.group(1)
    answer = answer.strip().strip("*").strip().rstrip(".").strip().strip("$").strip()
    return plain_number(answer)


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: the last `\\boxed{}`, else the last "the answer is X" or published
    answer marker ("#### 18"), else the last number."""
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        return boxed[-1]
    stated = sorted([*_marker_statements(text), *_phrase_statements(text)], key=lambda s: s[1])
    stated = [answer for answer, _ in stated if answer]
    if stated:
        return stated[-1]
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def extract_boxed(text: str) -> str | None:
    """The last non-empty `\\boxed{}` content (a MATH solution's answer), or None."""
    boxed = _boxed_contents(text)
    return boxed[-1] if boxed else None


# ---------------------------------------------------------------------------------------------------------
# Explicit final answers (the strict rule for model output in search, revision and training data)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalAnswer:
    """The verdict on a model's text: its explicit final answer, or why it has none.

    `reason` is one of:
    - "answer": the text states an explicit final answer (`answer` is set) and nothing after it goes wrong;
    - "no_answer": no `\\boxed{}` and no "The answer is ..." (a last number is never taken instead);
    - "repetition": the model loops (`degeneration.loop`); markup and restated formulas do not count;
    - "false_arithmetic": the text states an equation between plain numbers that does not hold ("5 - 6 =
      1", `arithmetic.false_equation`), whatever its answer: a right answer reached so is not correct;
    - "new_question": after the answer the text starts a new question, problem or turn;
    - "other_answer": the text states a different answer too, before the final one (a model that hedges or
      switches) or after it ("... in other cases it might be written as 0220");
    - "garbage": after the answer the text is not text (control characters, a soup of new scripts);
    - "unfinished": after the answer the text opens math it never closes: it was cut off.
    """

    answer: str | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class _Statement:
    answer: str
    end: int  # where the statement ends: after the box, or at the end of the phrase's sentence


# A phrase answer is prose when it runs longer than this ("the answer is considered as 220, in other
# cases it might be written as 0220, where ...") or opens with a judgement ("the answer is correct").
_MAX_PHRASE_ANSWER_WORDS = 8
_JUDGEMENT_RE = re.compile(
    r"(?:correct|right|wrong|reasonable|consistent|valid|not|the same|as follows|given|below|above|unique"
    r"|different|indeed|to be|that|this)\b",
    re.IGNORECASE,
)


def _answer_like(phrase: str) -> bool:
    if not phrase:
        return False
    words = re.findall(r"[A-Za-z]+", _MATH_SPAN_RE.sub(" ", phrase))
    return len(words) <= _MAX_PHRASE_ANSWER_WORDS and not _JUDGEMENT_RE.match(phrase)


def _phrase_statements(text: str) -> Iterator[tuple[str, int]]:
    """Each "answer is ..." in `text`: its cleaned answer and where its sentence ends."""
    for m in _ANSWER_PHRASE_RE.finditer(text):
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end < 0 else line_end
        answer = _clean_phrase_answer(text[m.end() : line_end])
        boxed = _boxed_contents(answer)
        answer = boxed[-1] if boxed else answer  # "the answer is $\\boxed{4}$"
        # The statement runs to the end of its sentence: "The answer is 8 apples." closes the text.
        sentence = re.search(r"\.(?:\s|$)", text[m.end() : line_end])
        yield answer, m.end() + sentence.end() if sentence else line_end


# The answer markers of published formats that models trained on them write: GSM8K's "#### 18" (also
# "Step 5: #### 18") and PRM800K's answer step "# Answer" with the answer on the next line. A markdown
# heading ("#### Step 2: Expand") is not one: a marker's answer holds no prose, a unit after a number aside.
_GSM8K_MARKER_RE = re.compile(r"(?<![#\w])####(?!#)[ \t]*(?P<answer>[^\n]*)")
_PRM800K_MARKER_RE = re.compile(r"(?im)^[ \t]*#[ \t]*answer[ \t]*:?[ \t]*(?:\n[ \t]*)*(?P<answer>[^\n]*)")


def _marker_statements(text: str) -> Iterator[tuple[str, int]]:
    """Each published answer marker in `text`: its answer and where it ends."""
    for pattern in (_GSM8K_MARKER_RE, _PRM800K_MARKER_RE):
        for m in pattern.finditer(text):
            answer = _clean_phrase_answer(m.group("answer"))
            words = [w for w in prose_words(answer) if w.lower() not in FUNCTION_NAMES]  # `12*pi` is math
            if answer and not words and not _JUDGEMENT_RE.match(answer):
                yield answer, m.end()


def _statements(text: str) -> list[_Statement]:
    """Every explicit answer in `text`, in order of where it ends: a braced `\\boxed{}`, or an "answer is"
    phrase that names one."""
    boxed = [
        _Statement(content, end)
        for content, end, braced in _boxed_arguments(text)
        if braced and not is_blank(content)
    ]
    phrases = [_Statement(answer, end) for answer, end in _phrase_statements(text) if _answer_like(answer)]
    markers = [_Statement(answer, end) for answer, end in _marker_statements(text)]
    return sorted(boxed + phrases + markers, key=lambda s: s.end)


_NUMBER_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?")


def _numbers(text: str) -> set[Fraction]:
    """The values of the numbers a text names ("0220" and "220.0" are both 220)."""
    return {Fraction(n) for n in _NUMBER_TOKEN_RE.findall(plain_number_text(text))}


def plain_number_text(text: str) -> str:
    """`text` with thousands separators removed from its numbers (`1,200` and `10{,}000`)."""
    return re.sub(r"(?<=\d)(?:,|\{,\})(?=\d{3}(?!\d))", "", text)


_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def _canonical(answer: str) -> str:
    """An answer as written, without what does not change it: spacing, delimiters, `\\text{}`, case,
    `\\dfrac` for `\\frac`, money signs, thousands separators."""
    text = _TEXT_WRAPPER_RE.sub(r"\1", answer)
    text = re.sub(r"\\(?:left|right|!|,|;|\s)|\{,\}|\\?\$", "", text).replace("\\dfrac", "\\frac")
    return re.sub(r"\s+", "", plain_number(text.strip().rstrip("."))).casefold()


def _last_side(answer: str) -> str:
    """What an answer states when it is an equation: its last side ("x = 5", "9 - (-2) + 1 = 12")."""
    return answer.rsplit("=", 1)[-1].strip() if "=" in answer else answer


def same_value(a: str, b: str) -> bool | None:
    """Whether two stated answers are the same value, decided without the checker: True when they are the
    same as written (`_canonical`) or both closed arithmetic of the same exact value ("9/2" and "4.5",
    "\\frac{16}{27}" and "16/27"; a decimal within the rounding its digits show); False when both are
    numbers of different values; None when only the checker can say."""
    a, b = _last_side(a), _last_side(b)
    if _canonical(a) == _canonical(b):
        return True
    x, y = arithmetic_value(a), arithmetic_value(b)
    if x is None or y is None:
        return None
    shown = [s for s in (a, b) if _DECIMAL_RE.fullmatch(plain_number(s.strip().strip("$")))]
    decimals = max((len(s.partition(".")[2]) for s in shown), default=0)
    return x == y if decimals == 0 else abs(x - y) < Fraction(1, 10**decimals)


_DECIMAL_RE = re.compile(r"-?\d+\.\d+")


def _same_answer(a: str, b: str) -> bool:
    """Whether two statements name the same answer, as values: `same_value`, else the answer checker
    (math-verify, the first as gold), which also knows `\\frac{\\sqrt{3}}{2}` from `\\sqrt{3}/2`."""
    same = same_value(a, b)
    if same is not None:
        return same
    from sigma_assets.method.grading import answers_match  # grading reads answers: import when needed

    return answers_match(_last_side(a), _last_side(b))


def _other_answer(text: str, statements: list[_Statement]) -> str | None:
    """Another answer the text states: an explicit one that differs from the final answer (a model
    that hedges or switches), or, after it, an "answer is ..." that names a value the final does not
    ("considered as 220, in other cases it might be written as 0220" names 220 twice)."""
    final = statements[-1]
    for statement in statements:
        if not _same_answer(statement.answer, final.answer):
            return statement.answer
    for phrase, _ in _phrase_statements(text[final.end :]):
        if _numbers(phrase) - _numbers(final.answer):
            return phrase
    return None


def _result(answer: str) -> str:
    """The answer a calculation states: "9 - (-2) + 1 = 12" states 12. An equation with anything but
    arithmetic on its sides ("y = 2x + 1") is the answer itself."""
    sides = answer.split("=")
    if len(sides) > 1 and all(arithmetic_value(side) is not None for side in sides):
        return sides[-1].strip()
    return answer


def _opens_math(tail: str) -> bool:
    """Whether the text after the answer opens a display or environment it never closes: it was cut off
    ("The answer is $14$:\\n\\[" with the box that followed lost)."""
    pairs = (("\\[", "\\]"), ("\\(", "\\)"), ("\\begin{", "\\end{"))
    return any(tail.count(open_) > tail.count(close) for open_, close in pairs) or tail.count("$$") % 2 == 1


def final_answer(text: str) -> FinalAnswer:
    """The explicit final answer of `text`, or why there is none. Never guesses a last number.

    Use it for anything a model wrote that may be marked correct (search steps, rollouts, revisions,
    training data); `extract_answer`'s last-number fallback is for evaluation only. The answer may be
    followed by the rest of its sentence and by remarks; not by a new question, another answer or
    garbage (`degeneration`).
    """
    if loop(text) is not None:
        return FinalAnswer(None, "repetition")
    if false_equation(text) is not None:
        return FinalAnswer(None, "false_arithmetic")
    statements = _statements(text)
    if not statements:
        return FinalAnswer(None, "no_answer")
    statement = statements[-1]
    tail = text[statement.end :]
    if _opens_math(tail):
        return FinalAnswer(None, "unfinished")
    if garbage(tail, text[: statement.end]) is not None:
        return FinalAnswer(None, "garbage")
    # A new question is looked for after the first answer the text states: the question the model runs
    # on into may itself hold "answer is" ("... Return the answer as a list.").
    if new_question(text[statements[0].end :]) is not None:
        return FinalAnswer(None, "new_question")
    if _other_answer(text, statements) is not None:
        return FinalAnswer(None, "other_answer")
    return FinalAnswer(plain_number(_result(statement.answer)), "answer")
