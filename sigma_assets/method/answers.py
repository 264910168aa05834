"""Explicit answers in model text: extraction for evaluation, and the strict final-answer rule.

`final_answer` is the rule for search, revision and training data: an explicit `\\boxed{}` or "The answer
is ..." that closes the text. `extract_answer` is evaluation's lenient reading, which falls back to the
last number. Plain Python with no Dagster imports; equality with the gold answer is in `grading`.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "answer is", optionally "final answer is" / "answer is:"; the last occurrence wins.
_ANSWER_PHRASE_RE = re.compile(r"\banswer\s+is\b\s*:?[ \t]*", re.IGNORECASE)
# A number: optional minus (not a binary minus as in `5-3`), thousands commas or plain digits, decimals,
# and a simple fraction `3/4`. The lookbehinds keep us from starting inside a word or another number.
_NUMBER_PATTERN = (
    r"(?:(?<![\w)\]}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
)
_NUMBER_RE = re.compile(_NUMBER_PATTERN)
_COMMA_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_THEN_WORDS_RE = re.compile(rf"({_NUMBER_PATTERN})\s+[A-Za-z]")
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


def _boxed_contents(text: str) -> list[str]:
    """Every non-empty `\\boxed{...}` (or `\\boxed 5`) content in order of appearance."""
    return [content for content, _, _ in _boxed_arguments(text) if content]


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


def _phrase_answers(text: str) -> list[str]:
    answers = []
    for m in _ANSWER_PHRASE_RE.finditer(text):
        line = text[m.end() :].split("\n", 1)[0]
        answer = _clean_phrase_answer(line)
        if answer:
            answers.append(answer)
    return answers


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: the last `\\boxed{}`, else "the answer is X", else the last number."""
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        return boxed[-1]
    phrases = _phrase_answers(text)
    if phrases:
        return phrases[-1]
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def extract_boxed(text: str) -> str | None:
    """The last non-empty `\\boxed{}` content (a MATH solution's answer), or None."""
    boxed = _boxed_contents(text)
    return boxed[-1] if boxed else None


def has_final_answer(text: str) -> bool:
    """Whether a reasoning step commits to an answer (`\\boxed{}` or "answer is"), i.e. is terminal."""
    return bool(text) and (bool(_boxed_contents(text)) or bool(_phrase_answers(text)))


# ---------------------------------------------------------------------------------------------------------
# Explicit final answers (the strict rule for model output in search, revision and training data)
# ---------------------------------------------------------------------------------------------------------

# What may follow the answer and still "close" the text: punctuation and markup, nothing with content.
_CLOSING_RE = re.compile(r"(?:\s|[.!$*_)\]]|\\\]|\\\))*")
# How often one line may appear in a text before the text counts as repeating itself.
REPEAT_LIMIT = 3


@dataclass(frozen=True)
class FinalAnswer:
    """The verdict on a model's text: its explicit final answer, or why it has none.

    `reason` is one of:
    - "answer": the text ends with an explicit answer (`answer` is set);
    - "no_answer": no `\\boxed{}` and no "The answer is ...";
    - "runs_on": an explicit answer, then more text with content after it;
    - "repetition": one line stated `REPEAT_LIMIT` times or more;
    - "false_arithmetic": the text states an equation between plain numbers that does not hold
      ("5 - 6 = 1"), whatever its answer: a right answer reached by false arithmetic is not correct.
    """

    answer: str | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.answer is not None


def _last_answer_span(text: str) -> tuple[str, int] | None:
    """The last explicit answer in `text` and the index where its statement ends."""
    best: tuple[str, int] | None = None
    for content, end, braced in _boxed_arguments(text):
        if braced and content:
            best = (content, end)
    for m in _ANSWER_PHRASE_RE.finditer(text):
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end < 0 else line_end
        answer = _clean_phrase_answer(text[m.end() : line_end])
        boxed = _boxed_contents(answer)
        answer = boxed[-1] if boxed else answer  # "the answer is $\\boxed{4}$"
        if not answer:
            continue
        # The statement runs to the end of its sentence: "The answer is 8 apples." closes the text.
        sentence = re.search(r"\.(?:\s|$)", text[m.end() : line_end])
        end = m.end() + sentence.end() if sentence else line_end
        if best is None or end > best[1]:
            best = (answer, end)
    return best


# An equation between plain numbers: "5 - 6 = 1", "3 * 4 = 12", "$12 / 4 = 3$". Numbers inside words,
# powers or comma-grouped numbers are not read, so only a claim that is certainly false is flagged.
_NUMBER = r"\d+(?:\.\d+)?"
_EQUATION_RE = re.compile(
    rf"(?<![\w.^/,])({_NUMBER}(?:\s*[-+*/×÷]\s*{_NUMBER})+)\s*=\s*(-?{_NUMBER})(?![\d,.]*\d)"
)
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError("not plain arithmetic")


def false_equation(text: str) -> str | None:
    """The first equation between plain numbers in `text` whose two sides differ, or None.

    The right side may be rounded to the decimals it shows ("10 / 3 = 3.33" holds).
    """
    for m in _EQUATION_RE.finditer(text):
        left, right = m.group(1), m.group(2)
        try:
            value = _arithmetic(ast.parse(left.replace("×", "*").replace("÷", "/"), mode="eval").body)
        except (ValueError, SyntaxError, ZeroDivisionError):
            continue
        decimals = len(right.partition(".")[2])
        if abs(value - float(right)) > 0.5 * 10**-decimals + 1e-9:
            return m.group(0)
    return None


def repeated_line(text: str, limit: int = REPEAT_LIMIT) -> str | None:
    """A non-empty line that occurs `limit` times or more in `text` (whitespace-normalised), else None."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        key = " ".join(line.split())
        if key:
            counts[key] = counts.get(key, 0) + 1
            if counts[key] >= limit:
                return key
    return None


def final_answer(text: str) -> FinalAnswer:
    """The explicit final answer that closes `text`, or why there is none. Never guesses a last number.

    Use it for anything a model wrote that may be marked correct (search steps, rollouts, revisions,
    training data); `extract_answer`'s last-number fallback is for evaluation only.
    """
    if repeated_line(text) is not None:
        return FinalAnswer(None, "repetition")
    if false_equation(text) is not None:
        return FinalAnswer(None, "false_arithmetic")
    span = _last_answer_span(text)
    if span is None:
        return FinalAnswer(None, "no_answer")
    answer, end = span
    if not _CLOSING_RE.fullmatch(text[end:]):
        return FinalAnswer(None, "runs_on")
    return FinalAnswer(plain_number(answer), "answer")
