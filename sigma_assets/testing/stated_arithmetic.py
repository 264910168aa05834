"""A liberal reading of the arithmetic a text states, to measure the project's reader against.

`method.arithmetic.false_equation` reads equations carefully: it must never call a true text false. To say
how many false claims it *misses*, something else must find the claims. This module is that something: a
short, deliberately liberal reader written apart from the project's. For every `=` it takes the longest
run of arithmetic characters on either side (digits, `.`, spaces, `+ - * / ( )`, after `$`, `\\$`,
thousands commas, `\\times`, `\\cdot`, `\\div`, `\\frac{a}{b}` and calculator notes `<<a=b>>` are
rewritten), and keeps the pair when neither run is touched by a letter, a power, a factorial, a percent or
a LaTeX command and neither starts or ends with an operator. A kept pair is false when its two sides differ,
a side that is one number being allowed the rounding its last digit shows.

It reads too much on purpose (a number after "of" or "times" is taken as a side), so its false claims are
an upper bound, read by hand before they count (`real_text.NOT_FALSE_AS_WRITTEN`).
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
from dataclasses import dataclass
from fractions import Fraction

_CALCULATOR_RE = re.compile(r"<<([^<>]*)>>")
_FRAC_RE = re.compile(r"\\[dt]?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}")
_REWRITES = (
    (re.compile(r"\\(?:times|cdot)(?![A-Za-z])|[×·∙]"), " * "),
    (re.compile(r"\\div(?![A-Za-z])|÷"), " / "),
    (re.compile(r"[−–]"), "-"),
    (re.compile(r"\\left|\\right|\\!|\\,|\\;|\{,\}"), ""),
    (re.compile(r"\\\$|\$|\\\(|\\\)|\\\[|\\\]"), " "),
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),
    (re.compile(r"(?<=[\d)])[ \t]+x[ \t]+(?=[-\d(])"), " * "),
)
_RUN_CHARS = r"[\d.\s+\-*/()]"
_SUFFIX_RE = re.compile(rf"{_RUN_CHARS}*$")
_PREFIX_RE = re.compile(rf"^{_RUN_CHARS}*")
_TOUCHING = re.compile(r"[A-Za-z\\^_!%'\d]")
_EQUALS_RE = re.compile(r"(?<![<>!=])=(?![=>])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class Claim:
    left: str
    right: str
    holds: bool


def normalized(text: str) -> str:
    """The text with calculator notes set apart on lines of their own, notation as plain operators."""
    text = _CALCULATOR_RE.sub(lambda m: f"\n{m.group(1)}\n", text)
    text = _FRAC_RE.sub(r"(\1)/(\2)", text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def _value(expr: str) -> Fraction | None:
    try:
        return _evaluate(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _evaluate(node: ast.AST) -> Fraction:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not plain arithmetic")


def _balanced(run: str, from_left: bool) -> str:
    """Trim the run from its outer end until its brackets balance."""
    while run.count("(") != run.count(")") and run:
        run = run[1:] if from_left else run[:-1]
    return run


def _side(segment: str, left: bool) -> str | None:
    """The arithmetic run of `segment` next to the `=` (its end if `left`, else its start), if plain."""
    match = (_SUFFIX_RE if left else _PREFIX_RE).search(segment)
    assert match is not None
    run = match.group(0)
    if not left:  # a full stop after the right side ends its sentence: "= 41."
        run = re.sub(r"\.(?!\d).*$", "", run, flags=re.S)
    run = _balanced(run, from_left=left).strip()
    if not run or not any(ch.isdigit() for ch in run):
        return None
    if left:
        outside = segment[: segment.rstrip().rfind(run)]
        touching = outside[-1:]
        # "x - 5 = 3": a leading minus right after a word or number is a binary minus, the side goes on.
        if run[0] == "-" and outside.rstrip()[-1:].isalnum():
            return None
    else:
        outside = segment[segment.find(run) + len(run) :]
        touching = outside[:1]
    if (touching and _TOUCHING.match(touching)) or run[0] in "+*/" or run[-1] in "+-*/":
        return None
    return run if _value(run) is not None else None


def _has_operator(side: str) -> bool:
    return bool(re.search(r"[\d)]\s*[-+*/]", side))


def _holds(left: str, right: str) -> bool:
    a, b = _value(left), _value(right)
    assert a is not None and b is not None
    shown = [s for s in (left, right) if _NUMBER_RE.fullmatch(s.strip())]
    if not shown:
        return a == b
    decimals = max(len(s.partition(".")[2]) for s in shown)
    return abs(a - b) < Fraction(1, 10**decimals)


def stated_claims(text: str) -> list[Claim]:
    """Every arithmetic equation the text states, read liberally (module docstring), with whether it holds."""
    claims = []
    for line in normalized(text).split("\n"):
        segments = _EQUALS_RE.split(line)
        for before, after in itertools.pairwise(segments):
            left, right = _side(before, left=True), _side(after, left=False)
            if left is None or right is None or not (_has_operator(left) or _has_operator(right)):
                continue
            claims.append(Claim(left, right, _holds(left, right)))
    return claims


def false_claims(text: str) -> list[Claim]:
    return [claim for claim in stated_claims(text) if not claim.holds]
