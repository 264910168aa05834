"""False arithmetic: an equation between plain numbers, stated in model text, that does not hold.

A right answer reached through "5 - 6 = 1" is not a correct solution, so the strict answer rule
(`answers.final_answer`) refuses any text that states such an equation. The difficulty is reading only
what is certainly a claim about plain numbers. Real solutions are full of equations that merely contain
plain arithmetic: `4x + 7x + 6 - 9 = 11x - 3`, `2 \\cdot 3 \\cdot 4 \\cdot 5 + 1 = 121`, `7 + 21 = 7(1 + 3)`,
`-b/a = -2/1 = -2`, `10236 ÷ 244 = 41 remainder 212`. Reading a piece of one of those ("6 - 9 = 11",
"5 + 1 = 121", "2/1 = -2") flagged correct Qwen2.5-Math and GPT-4 solutions by the dozen.

So a side of an equation is read only when it is complete: a run of numbers joined by `+ - * / × ÷`,
with its signs (`-1 + 3 = 2` is read whole), and nothing that could extend it touching either end: no
variable, LaTeX command (`\\cdot`, `\\frac`), power, bracket, comma-grouped or decimal continuation,
percent, factorial, or a word followed by another number ("41 remainder 212", "3 times 4"). What may
stand beside a complete side: the start or end of a line, a math delimiter (`$`, `\\(`, `\\)`, `\\[`,
`\\]`), an alignment `&` or row break `\\\\`, sentence punctuation, another `=` of the same chain, a word
of prose, or a pair of brackets around the whole equation. In a chain `X = 120 + 1 = 121` each `=` is
judged on its own, so the plain pair `120 + 1 = 121` is read even when `X` is not plain.

Measured on the shared fixtures (Qwen2.5-Math-7B-Instruct and NeMo-Skills on MATH, GPT-4 on TheoremQA):
every equation this flags is false as written (`29 - 10 - 1 = 19`, `8/8 = 4/3`, `2.110 * 1.1309 = 2.3859`).
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

_NUMBER = r"\d+(?:\.\d+)?"
# A side: signed numbers joined by arithmetic operators. The lookbehind keeps a side from starting inside a
# number or right after a minus sign, which belongs to the side (`-2/1` is never read as `2/1`).
_SIDE = rf"-?{_NUMBER}(?:[ \t]*[-+*/×÷][ \t]*-?{_NUMBER})*"
_EQUATION_RE = re.compile(rf"(?<![\d.\-+*/×÷])(?P<left>{_SIDE})[ \t]*&?=(?![=>])(?=[ \t]*(?P<right>{_SIDE}))")
_OPERATOR_RE = re.compile(r"\d[ \t]*[-+*/×÷]")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

# What may precede a complete left side (the text before it, spaces and tabs stripped, ends with one).
_OPEN_BOUNDARY_RE = re.compile(r"(?:^|\n|\$|\\\(|\\\[|&|\\\\|[:;]|\*\*|(?<![=<>!:])=)$")
_SENTENCE_END_RE = re.compile(r"(?<!\d)[.!?,]$")  # "items. 5 + 3 = 8", but not "1." or "1,"
_BULLET_RE = re.compile(r"(?:^|\n)[ \t]*[-*•]$")
_WORD_BEFORE_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}$")
_NUMBER_WORD_BEFORE_RE = re.compile(r"\d[ \t]*[A-Za-z]+$")  # "3 times" 4 = 12: the word is an operator

# What may follow a complete right side (the text after it, spaces and tabs stripped, starts with one).
_CLOSE_BOUNDARY_RE = re.compile(r"^(?:$|\n|\$|\\\)|\\\]|&|\\\\(?![A-Za-z])|\*\*|=|[.,;:?](?=\s|$|\$|\\))")
_WORD_AFTER_RE = re.compile(r"^[A-Za-z]+")
_WORD_THEN_NUMBER_RE = re.compile(r"^[A-Za-z]+[ \t]*-?\d")  # "41 remainder 212": a further term


def _opens(before: str, signed: bool) -> bool:
    """Whether a side may start after `before`: nothing that could extend it touches it."""
    stripped = before.rstrip(" \t")
    if _OPEN_BOUNDARY_RE.search(stripped) or _SENTENCE_END_RE.search(stripped) or _BULLET_RE.search(stripped):
        return True
    # Prose before a side: "we get 5 - 6 = 1". Not before a sign ("x -5" may be a difference), not a
    # LaTeX command, and not a word between two numbers ("3 times 4").
    return (
        not signed
        and stripped != before  # separated by a space
        and bool(_WORD_BEFORE_RE.search(stripped))
        and not _NUMBER_WORD_BEFORE_RE.search(stripped)
    )


def _closes(after: str) -> bool:
    """Whether a side may end before `after`."""
    stripped = after.lstrip(" \t")
    if _CLOSE_BOUNDARY_RE.match(stripped):
        return True
    # Prose after a side: "= 19 integers", but not "= 5x" and not "= 41 remainder 212".
    return (
        stripped != after
        and bool(_WORD_AFTER_RE.match(stripped))
        and not _WORD_THEN_NUMBER_RE.match(stripped)
    )


def _bracketed(before: str, after: str) -> bool:
    """The equation ends a parenthetical remark: "(since 3 + 4 = 7)" or "(3 + 4 = 7)", but not the argument
    of a product or function, "7(1 + 3 = 4)"."""
    if not after.lstrip(" \t").startswith(")"):
        return False
    line = before.rsplit("\n", 1)[-1]
    depth = 0
    for i in range(len(line) - 1, -1, -1):  # the bracket this one closes, and what stands before it
        if line[i] == ")":
            depth += 1
        elif line[i] == "(":
            if depth == 0:
                return i == 0 or line[i - 1] in " \t:;,"
            depth -= 1
    return False


def _value(side: str) -> Fraction:
    """The exact value of a side (fractions, so `0.1 + 0.2 = 0.3` holds)."""
    return _evaluate(ast.parse(side.replace("×", "*").replace("÷", "/"), mode="eval").body)


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not plain arithmetic")


def _holds(left: str, right: str) -> bool:
    """Whether `left = right`. A side that is one number may be rounded or cut to the decimals it shows
    (`10 / 3 = 3.33`, `2 / 3 = 0.66`, `7 / 2 = 3` as a whole count): it must be within one unit of its last
    digit. Between two expressions, or for a whole-number value, equality is exact."""
    a, b = _value(left), _value(right)
    shown = [s for s in (left, right) if re.fullmatch(rf"-?{_NUMBER}", s.strip())]
    if not shown:
        return a == b
    decimals = max(len(s.partition(".")[2]) for s in shown)
    return abs(a - b) < Fraction(1, 10**decimals)


# A false equation the text itself calls impossible is a step of a proof by contradiction, not a claim:
# "which gives 100 = 4096 + 4. This is not possible" (GPT-4 on TheoremQA).
_RETRACTION_RE = re.compile(
    r"\b(?:contradiction|contradicts|impossible|not possible|absurd|not true|false|incorrect|wrong"
    r"|mistake)\b",
    re.IGNORECASE,
)


def _next_sentences(after: str, limit: int = 200) -> str:
    """The rest of the equation's sentence and the next one."""
    ends = [m.end() for m in re.finditer(r"[.!?](?:\s|$)|\n\n", after[:limit])]
    return after[: ends[1] if len(ends) > 1 else limit]


def false_equation(text: str) -> str | None:
    """The first equation between complete plain-arithmetic sides in `text` that does not hold, or None.

    At least one side has an operator ("5 - 6 = 1"; a bare "20 = 9" is more often a label than a claim).
    """
    for m in _EQUATION_RE.finditer(text):
        left, right = m.group("left"), m.group("right")
        if not (_OPERATOR_RE.search(left) or _OPERATOR_RE.search(right)):
            continue
        before, after = text[: m.start("left")], text[m.end("right") :]
        opens = _opens(before, left.startswith("-")) or before.rstrip(" \t").endswith("(")
        if not (opens and (_closes(after) or _bracketed(before, after))):
            continue
        try:
            if _holds(left, right):
                continue
        except (ValueError, SyntaxError, ZeroDivisionError):
            continue
        if not _RETRACTION_RE.search(_next_sentences(after)):
            return f"{left} = {right}"
    return None
