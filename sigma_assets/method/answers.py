"""Explicit answers in model text: extraction for evaluation, and the strict final-answer rule.

`final_answer` is the rule for search, revision and training data: an explicit `\\boxed{}` or "The answer
is ..." that closes the text. `extract_answer` is evaluation's lenient reading, which falls back to the
last number. Plain Python with no Dagster imports; equality with the gold answer is in `grading`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from sigma_assets.method.arithmetic import false_equation
from sigma_assets.method.degeneration import garbage, loop, new_question

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


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: the last `\\boxed{}`, else "the answer is X", else the last number."""
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        return boxed[-1]
    phrases = [answer for answer, _ in _phrase_statements(text) if answer]
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


def _statements(text: str) -> list[_Statement]:
    """Every explicit answer in `text`, in order of where it ends: a braced `\\boxed{}`, or an "answer is"
    phrase that names one."""
    boxed = [
        _Statement(content, end) for content, end, braced in _boxed_arguments(text) if braced and content
    ]
    phrases = [_Statement(answer, end) for answer, end in _phrase_statements(text) if _answer_like(answer)]
    return sorted(boxed + phrases, key=lambda s: s.end)


_NUMBER_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?")


def _numbers(text: str) -> set[str]:
    return {re.sub(r"\.0+$", "", n) for n in _NUMBER_TOKEN_RE.findall(text.replace(",", ""))}


def _same_answer(a: str, b: str) -> bool:
    """Whether two statements name the same answer: the same text, or the same numbers
    ("\\dfrac{16}{27}" and "\\frac{16}{27}", "x = 5" and "5")."""
    return _canonical(a) == _canonical(b) or (bool(_numbers(a)) and _numbers(a) == _numbers(b))


def _canonical(answer: str) -> str:
    text = re.sub(r"\\(?:left|right|!|,|;|\s)|\{,\}|\$", "", answer).replace("\\dfrac", "\\frac")
    return re.sub(r"\s+", "", plain_number(text.strip().rstrip(".")))


def _other_answer(text: str, statements: list[_Statement]) -> str | None:
    """Another answer the text states: an explicit one that differs from the final answer (a model
    that hedges or switches), or, after it, an "answer is ..." that names a number the final does not."""
    final = statements[-1]
    for statement in statements:
        if not _same_answer(statement.answer, final.answer):
            return statement.answer
    for phrase, _ in _phrase_statements(text[final.end :]):
        if _numbers(phrase) - _numbers(final.answer):
            return phrase
    return None


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
    return FinalAnswer(plain_number(statement.answer), "answer")
