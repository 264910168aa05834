"""False arithmetic: an equation between closed arithmetic expressions, stated in model text, that does
not hold.

A right answer reached through "5 - 6 = 1" is not a correct solution, so the strict answer rule
(`answers.final_answer`) refuses any text that states such an equation. The reader takes every `=` of the
text and, on each side, the run of arithmetic next to it: numbers, brackets, unary signs and the
operators `+ - * / × · ÷` (`\\times`, `\\cdot`, `\\div`, `\\frac{a}{b}` of numbers). Before reading it
rewrites what is notation, not value: money (`$12`, `\\$12`, `€5`: the currency sign goes), thousands
separators (`1,200`, `10{,}000`), and calculator notes (`48/2 = <<48/2=24>>24`: the note is an equation
of its own). Each `=` of a chain is judged on its own, in exact rational arithmetic; a side that is one
number may be rounded or cut to the digits it shows (`10 / 3 = 3.33`, `7 / 2 = 3` as a whole count), and
nothing more.

Precision comes first: the reader claims a side only when it is complete, that is when nothing that could
extend it touches it. A side is not complete when a variable, a power, a factorial, a percent, a LaTeX
command or a further term stands against it (`4x + 7x + 6 - 9 = 11x - 3`, `3^2 + 1 = 10`,
`= 41 remainder 212`), when it starts or ends with an operator (`x - 5 = 3` holds no side `- 5`), when
it is a function's argument or a product (`f(3) = 7`, `2(3) = 6`), or when the word before it makes its
first number part of a larger expression in words ("20% of 50 + 5", "3 times 4 + 2", "the sum of 3 and
4 + 5"). What may stand beside a complete side: the start or end of a line, a math delimiter, an
alignment `&` or row break, punctuation, a relation (`=`, `<`, `≈`), a bracket around the whole remark,
a prose word, a unit. A `$` is a math delimiter or money by the rule Pandoc uses: an opening `$` has a
non-space character on its right, a closing one a non-space character on its left and no digit right
after it; a `$` that closes nothing is money.

An equation the text itself calls impossible is a step of a proof by contradiction, not a claim ("which
gives 100 = 4096 + 4. This is not possible").
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

# ---------------------------------------------------------------------------------------------------------
# Regions: prose and math spans, with money, notation and calculator notes rewritten
# ---------------------------------------------------------------------------------------------------------

MONEY = "¤"
_DISPLAY_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)
_CALCULATOR_RE = re.compile(r"<<([^<>\n]*)>>")


def _dollar_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each `$...$` math span by Pandoc's rule (module docstring); a `$` that opens
    nothing is money."""
    i = 0
    while (start := text.find("$", i)) >= 0:
        i = start + 1
        if text[start + 1 : start + 2].isspace() or text[start - 1 : start] == "\\":
            continue
        j = start + 1
        while (close := text.find("$", j)) >= 0 and "\n\n" not in text[start:close]:
            if not (text[close - 1] in "\\ \t\n" or text[close + 1 : close + 2].isdigit()):
                yield start, close + 1
                i = close + 1
                break
            j = close + 1


def regions(text: str) -> list[str]:
    """The text cut into prose and math regions (math delimiters removed), each calculator note a region
    of its own; only regions that hold an `=`. An equation never spans two regions."""
    notes: list[str] = []

    def note(m: re.Match[str]) -> str:
        notes.append(m.group(1))
        return " "

    text = _CALCULATOR_RE.sub(note, text)
    out = list(notes)
    pieces: list[str] = []
    last = 0
    for m in _DISPLAY_RE.finditer(text):
        pieces.append(text[last : m.start()])
        out.append(next(g for g in m.groups() if g is not None))
        last = m.end()
    pieces.append(text[last:])
    for piece in pieces:
        last = 0
        for start, end in _dollar_spans(piece):
            out += [piece[last:start], piece[start + 1 : end - 1]]
            last = end
        out.append(piece[last:])
    return [region for region in out if "=" in region]


_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([-+*/().\d\s]+)\}\s*\{([-+*/().\d\s]+)\}")
_REWRITES = (
    # Money: the sign becomes a mark the value ignores ("$12.48 - $0.48 = $12", "\$36", "€5"); the mark
    # tells a conversion from cents ("900 - 100 = $8") from a false claim.
    (re.compile(r"\\\$|\$|[€£¥]"), MONEY),
    # "20 x 2": a spaced x between numbers is the times sign of plain-text arithmetic.
    (re.compile(r"(?<=[\d)])[ \t]+x[ \t]+(?=[-\d(¤])"), " * "),
    (re.compile(r"\\(?:times|cdot|ast)(?![A-Za-z])|[×·∙⋅]"), " * "),
    (re.compile(r"\\div(?![A-Za-z])|÷"), " / "),
    (re.compile(r"[−–]"), "-"),
    (re.compile(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\[!,;:]|~"), ""),
    # Thousands separators: "1,200", "10{,}000" (a comma followed by exactly three digits).
    (re.compile(r"(?<=\d)(?:,|\{,\})(?=\d{3}(?!\d))"), ""),
)


def _fraction(m: re.Match[str]) -> str:
    numerator, denominator = (part.strip() for part in m.groups())
    if _NUMBER_RE.fullmatch(numerator) and _NUMBER_RE.fullmatch(denominator):
        return f"({numerator}/{denominator})"
    return f"(({numerator})/({denominator}))"


def normalized(region: str) -> str:
    """A region with money, operators and thousands separators written plainly."""
    region = _FRAC_RE.sub(_fraction, region)
    for pattern, replacement in _REWRITES:
        region = pattern.sub(replacement, region)
    return re.sub(r"[ \t]+", " ", region)


# ---------------------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------------------

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_PLAIN_CHARS_RE = re.compile(rf"[\d.+\-*/() \t{MONEY}]+")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def _value(expr: str) -> Fraction | None:
    try:
        return _evaluate(ast.parse(expr.replace(MONEY, "").strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return None


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not plain arithmetic")


def arithmetic_value(expr: str) -> Fraction | None:
    """The exact value of a closed arithmetic expression as the reader reads one (money, thousands
    separators, `\\times`, `\\frac{a}{b}` of numbers), or None when it is not one."""
    text = normalized(expr).strip()
    if not text or not _PLAIN_CHARS_RE.fullmatch(text) or not re.search(r"\d", text):
        return None
    return _value(text)


def _holds(left: str, right: str, a: Fraction | None = None, b: Fraction | None = None) -> bool:
    """Whether `left = right` (their values `a` and `b`, read with the usual precedence unless given),
    exactly; a side that is one number may be rounded or cut to the digits it shows (within one unit of
    its last digit)."""
    a = _value(left) if a is None else a
    b = _value(right) if b is None else b
    assert a is not None and b is not None
    if (MONEY in left) != (MONEY in right) and a and b and (a == 100 * b or b == 100 * a):
        return True  # cents on one side, dollars on the other: "900 - 100 = $8" converts
    shown = [s.replace(MONEY, "").strip("() ") for s in (left, right)]
    shown = [s for s in shown if _NUMBER_RE.fullmatch(s)]
    if not shown:
        return a == b
    decimals = max(len(s.partition(".")[2]) for s in shown)
    return abs(a - b) < Fraction(1, 10**decimals)


# ---------------------------------------------------------------------------------------------------------
# Sides
# ---------------------------------------------------------------------------------------------------------

_EQUALS_RE = re.compile(r"(?<![<>!=:])=(?![=>])")
# Words that make the number before them part of an expression in words: "20% of 50 + 5", "3 times 4",
# "divided by 4 + 2", "the sum of 3 and 4 + 5", "subtract 3 from 10 - 2".
_CONNECTORS = frozenset(
    ["of", "times", "by", "plus", "minus", "over", "per", "than", "and", "or", "x", "into", "from", "to"]
)
# What makes a connector join the number before it to the side: a number, a number word, or an operation
# ("a total of 65 * 170" starts a side; "20% of 50 + 5", "half of 10 + 2", "divided by 4 + 2" do not).
# fmt: off
_QUANTITY_WORDS = frozenset({
    "half", "third", "quarter", "twice", "thrice", "double", "triple", "one", "two", "three", "four",
    "five", "six", "seven", "eight", "nine", "ten", "dozen", "hundred", "thousand", "million", "divided",
    "multiplied", "increased", "decreased", "reduced", "raised", "added", "subtracted", "sum", "product",
    "difference", "quotient", "ratio", "more", "less", "fewer", "greater", "smaller", "larger",
})
# fmt: on
# Words that multiply the number after them: "twice 5 + 3".
_MULTIPLIER_WORDS = frozenset(
    ["twice", "thrice", "double", "triple", "half", "square", "cube", "root", "squared", "cubed"]
)
# LaTeX next to a complete side: spacing, text (a unit or a label), rows, environments and relations.
_NEUTRAL_COMMAND_RE = re.compile(
    r"\\(?:quad|qquad|text|textbf|textit|mbox|mathrm|hbox|end|begin|label|tag|implies|Rightarrow"
    r"|therefore|le|ge|leq|geq|approx|neq|ne|lt|gt)(?![A-Za-z])|\\\\"
)
_TEXT_GROUP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\{[^{}]*\}$")
_WORD_THEN_NUMBER_RE = re.compile(r"^[ \t]+[A-Za-z]+[ \t]*-?\d")  # "= 41 remainder 212": a further term
_ARITHMETIC_CHARS = frozenset("0123456789+-*/() \t" + MONEY)


def _is_run_char(text: str, i: int) -> bool:
    """Whether `text[i]` belongs to a run of arithmetic: a full stop only as a decimal point (`2.5`,
    `.20`), never as the end of a sentence or part of an ellipsis (`2222...222`)."""
    ch = text[i]
    if ch == ".":
        return text[i + 1 : i + 2].isdigit() and text[i - 1 : i] != "."
    return ch in _ARITHMETIC_CHARS


def _balanced(run: str, left: bool) -> str:
    """Drop unmatched brackets from the outer end of a run (the end away from the `=`); empty when a
    bracket is left open towards the `=` (the side is then not closed)."""
    while run.count("(") != run.count(")"):
        if left and run.count("(") > run.count(")"):
            run = run[run.index("(") + 1 :]
        elif not left and run.count(")") > run.count("("):
            run = run[: run.rindex(")")]
        else:
            return ""
    return run


def _before_ok(before: str, signed: bool) -> bool:
    """Whether a left side may start right after `before` (module docstring)."""
    stripped = before.rstrip(" \t")
    if not stripped:
        return True
    word = re.search(r"(\\?)([A-Za-z]+)$", stripped)
    if word is not None:
        if word.group(1):  # a LaTeX command
            return _NEUTRAL_COMMAND_RE.fullmatch(word.group(0)) is not None
        name = word.group(2)
        glued = re.search(r"[\d_^'.]" + name + "$", stripped) is not None  # "2x", "a_n"
        # A prose word apart from the side: not a one-letter variable, a multiplier, or a connector that
        # follows a quantity.
        if stripped == before or glued or len(name) < 2 or name.lower() in _MULTIPLIER_WORDS:
            return False
        return name.lower() not in _CONNECTORS or not _after_quantity(stripped[: -len(name)])
    if stripped.endswith("\\\\"):
        return True
    if stripped.endswith("}"):
        return _TEXT_GROUP_RE.search(stripped) is not None
    last = stripped[-1]
    if stripped.endswith("..") or stripped.endswith("…"):
        return False  # "2222...222": an ellipsis goes on with the number
    if last == "!" and re.search(r"[\w)}]!$", stripped):
        return False  # "10!(1 + 11)": a factorial, not the end of a sentence
    if signed and last in ")]":
        return False  # "(a) -5 + 3": a binary minus after a bracket
    if last in "([" and re.search(r"[\w)\]}]$", stripped[:-1]):
        return False  # "7(1 + 3", "f(2": the argument of a product or a function
    return last in ":;,&=<>≤≥≈([{.!?\n"


def _after_quantity(before: str) -> bool:
    """Whether the text before a connector ends with a quantity: a number, a percent, a number word or an
    operation word."""
    token = before.rstrip().rsplit(None, 1)[-1] if before.strip() else ""
    return bool(re.search(r"[\d%)]$", token)) or token.lower().strip(",") in _QUANTITY_WORDS


def _after_ok(after: str) -> bool:
    """Whether a right side may end right before `after` (module docstring)."""
    stripped = after.lstrip(" \t")
    if not stripped:
        return True
    if stripped.startswith("\\"):
        return _NEUTRAL_COMMAND_RE.match(stripped) is not None
    first = stripped[0]
    if first.isalpha():
        # A unit or a prose word apart from the side; not "5x" and not "41 remainder 212".
        return stripped != after and not _WORD_THEN_NUMBER_RE.match(after)
    if stripped.startswith("..") or first == "…":
        return False  # "1111...111": an ellipsis goes on with the number
    if first == "!" and stripped == after:
        return False  # "= 121 * 10!": a factorial
    if first in ".!?":
        return not stripped[1:2].isdigit()
    return first in ":;,&=<>≤≥≈)]}\n"


def _left_side(segment: str) -> str | None:
    start = len(segment)
    while start > 0 and _is_run_char(segment, start - 1):
        start -= 1
    side = _balanced(segment[start:], left=True).strip()
    if not side or side[0] in "+*/" or side[-1] in "+-*/" or not any(ch.isdigit() for ch in side):
        return None
    before = segment[: segment.rstrip(" \t").rfind(side)]
    if re.match(r"-[ \t]+\d", side) and before.rstrip(" \t")[-1:] in ("", "\n"):
        return side[1:].lstrip()  # a bullet, not a sign: "- 2 + 2 = 5"
    return side if _before_ok(before, side.startswith("-")) else None


def _right_side(segment: str) -> tuple[str, str] | None:
    end = 0
    while end < len(segment) and _is_run_char(segment, end):
        end += 1
    side = _balanced(segment[:end], left=False).strip()
    if not side or side[0] in "+*/" or side[-1] in "+-*/" or not any(ch.isdigit() for ch in side):
        return None
    after = segment[segment.find(side) + len(side) :]
    return (side, after) if _after_ok(after) else None


def _has_operator(side: str) -> bool:
    return re.search(rf"[\d)]\s*[-+*/]\s*[-(\d{MONEY}]", side) is not None


@dataclass(frozen=True)
class Equation:
    """An equation between complete closed arithmetic sides, with the text of its region around it."""

    left: str
    right: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.left} = {self.right}".replace(MONEY, "$")


def equations(text: str) -> Iterator[Equation]:
    """Every equation between complete closed arithmetic sides in `text`, at least one of them with an
    operator ("20 = 9" alone is more often a label than a claim)."""
    for region in regions(text):
        segments = _EQUALS_RE.split(normalized(region))
        for i in range(len(segments) - 1):
            left, right = _left_side(segments[i]), _right_side(segments[i + 1])
            if left is None or right is None or _value(left) is None or _value(right[0]) is None:
                continue
            if _has_operator(left) or _has_operator(right[0]):
                before = "=".join([*segments[:i], segments[i][: segments[i].rstrip().rfind(left)]])
                yield Equation(left, right[0], before, "=".join([right[1], *segments[i + 2 :]]))


_RETRACTION_RE = re.compile(
    r"\b(?:contradiction|contradicts|impossible|not possible|absurd|not true|false|incorrect|wrong"
    r"|mistake|error)\b",
    re.IGNORECASE,
)


def _next_sentences(after: str, limit: int = 400) -> str:
    """The rest of the equation's sentence and the next sentence of prose (lines of bare equations that
    carry the chain on are passed over: "8 = -32 + 12 - 8\n\n8 = -28\n\nSince this is not true")."""
    prose, start = 0, 0
    for m in re.finditer(r"[.!?](?:\s|$)|\n", after[:limit]):
        prose += bool(re.search(r"[A-Za-z]{2,}", after[start : m.end()]))
        start = m.end()
        if prose >= 2:
            return after[:start]
    return after[:limit]


# An equation put as a question to check is not claimed: "Let's verify that 4 * 18322 = 73228".
_HYPOTHESIS_RE = re.compile(
    r"(?:\b(?:verify|check|test|confirm|see)\s+(?:that|if|whether)|\bwhether|\bsuppose)\b[^.!?\n]*$",
    re.IGNORECASE,
)


def _spaced_reading(side: str) -> Fraction | None:
    """The value of a side read as its spacing groups it: in plain text "2/3 / 11/3" and
    "12*11*10 / 3*2*1" divide the tight groups, whatever the precedence of `/` and `*`."""
    tokens = side.split()
    grouped = [f"({t})" if re.search(r"\d[*/]", t) and t.count("(") == t.count(")") else t for t in tokens]
    return _value(" ".join(grouped)) if grouped != tokens else None


# Numerals of another base, and residues, are notation of another arithmetic: in base 2, "1 + 1 = 10"
# holds, and modulo 12 "13 + 11 = 2" does.
_OTHER_BASE_RE = re.compile(
    r"\b(?:in|to|into|from) base[- ]?(?!10\b)\d+\b"
    r"|\bbase[- ]?(?!10\b)\d+ (?:number|numeral|representation|digit|system|arithmetic|expansion)"
    r"|\b(?:binary|octal|hexadecimal)\b"
    r"|\bmod(?:ulo|ulus|ular)?\b|\\pmod|\\bmod|\\equiv|≡|\bremainders\b|\bremainder (?:when|of|upon)\b",
    re.IGNORECASE,
)


def false_equation(text: str) -> str | None:
    """The first equation between complete closed arithmetic sides in `text` that does not hold, and
    that the text does not itself call impossible, or None. A paragraph that works in another base than
    ten or in residues is not read."""
    paragraphs = text.split("\n\n")
    text = "\n\n".join("" if _OTHER_BASE_RE.search(p) else p for p in paragraphs)
    for equation in equations(text):
        if _holds(equation.left, equation.right) or _holds_as_spaced(equation):
            continue
        if _RETRACTION_RE.search(_next_sentences(equation.after)) or _HYPOTHESIS_RE.search(equation.before):
            continue
        return str(equation)
    return None


def _holds_as_spaced(equation: Equation) -> bool:
    """Whether the equation holds when either side is read as its spacing groups it (`_spaced_reading`):
    an ambiguous side is false only when false in every reading."""
    a, b = _spaced_reading(equation.left), _spaced_reading(equation.right)
    if a is None and b is None:
        return False
    return _holds(equation.left, equation.right, a, b)
