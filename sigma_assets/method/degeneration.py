"""Degenerate model text: a model stuck in a loop, or text that goes wrong after its final answer.

These rules were decided on real model text (the shared fixtures: Qwen2.5-Math-7B-Instruct and a
NeMo-Skills model on MATH, GPT-4 on TheoremQA), not on the bundled toy model, and each says why it is
what it is. Plain Python with no Dagster imports; `answers.final_answer` applies them.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------------------------------------
#
# What a looping model writes is the same passage again and again with nothing new in between: once
# a model repeats itself, each copy makes the next more likely, and the copies become exact (the
# self-reinforcing repetition of the text degeneration literature). Real solutions repeat a lot that is
# not that: the display opener `\[` on its own line a dozen times, `\begin{align*}`, bullets, a restated
# `x = 5`, matrix rows, and template sentences of a case analysis ("This does not match the volume during
# the filling time." once per graph of a multiple choice, "To find how many they need in 2 months, we
# multiply ..." once per animal). A case analysis repeats its template around new content; a loop adds
# nothing. So the text is cut into units (lines and sentences), markup-only units are dropped, and:
#   - a loop is a passage that comes three times, where the second and third copies, and everything
#     between them, are units the text has said before: nothing new is said from the second copy on
#     (the first copy is the passage's own first saying). Copies in a row are the plain case; a model
#     circling with a varying lead-in ("Let's reconsider the problem again.") loops once the lead-in too
#     comes back;
#   - a passage of formulas only counts with `FORMULA_LOOP_COPIES` copies: formulas repeat as notation
#     (a product written out, `\frac{2}{3} \times \frac{2}{3} \times ...`, a chain that restates a
#     product); rows of bare numbers are a table, never a loop;
#   - within a line, the same run of up to 40 words back to back three times when it holds two prose
#     words or more ("we we we we": four times for one word, since English doubles and triples a word
#     for emphasis; eight for a formula, as above).

LOOP_COPIES = 3
FORMULA_LOOP_COPIES = 8
WORD_LOOP_COPIES = 4

_UNIT_SPLIT_RE = re.compile(r"\n|(?<=[.!?;])\s+")
_MATH_RE = re.compile(r"\\\(.*?\\\)|\\\[.*?\\\]|\$\$.*?\$\$|\$[^$]*\$", re.DOTALL)
_COMMAND_RE = re.compile(r"\\[A-Za-z]+\*?(?:\{[^{}]*\})?")
_PROSE_WORD_RE = re.compile(r"[A-Za-z]{2,}")
# A unit with nothing but delimiters, environments, alignment, bullets, enumerators and punctuation.
_MARKUP_ONLY_RE = re.compile(r"(?:\\(?:begin|end)\{[^}]*\}|[0-9a-zA-Z]{1,2}[.)]|\W)*")
_NUMBER_ROW_RE = re.compile(r"[-+\d\s/.,&\\]*")
MAX_LOOP_WORDS = 40


def _units(text: str) -> list[str]:
    units = (" ".join(part.split()) for part in _UNIT_SPLIT_RE.split(text))
    return [unit for unit in units if unit and not _MARKUP_ONLY_RE.fullmatch(unit)]


def prose_words(unit: str) -> list[str]:
    """The words of a unit outside its math and LaTeX commands."""
    return _PROSE_WORD_RE.findall(_COMMAND_RE.sub(" ", _MATH_RE.sub(" ", unit)))


def _is_formula(text: str) -> bool:
    return not _NUMBER_ROW_RE.fullmatch(text) and len(text.replace(" ", "")) >= 12


def _passage_said_again(units: list[str]) -> str | None:
    """A passage that comes `LOOP_COPIES` times with nothing new from its second copy on (see above)."""
    first: dict[str, int] = {}
    positions: dict[str, list[int]] = {}
    new_before = [0]  # new_before[i]: how many of units[:i] are first sayings
    for i, unit in enumerate(units):
        is_new = unit not in first
        first.setdefault(unit, i)
        positions.setdefault(unit, []).append(i)
        new_before.append(new_before[-1] + is_new)
    found: tuple[int, int] | None = None  # (start, end) of the first copy of the earliest loop
    for unit, where in positions.items():
        copies = LOOP_COPIES if prose_words(unit) else FORMULA_LOOP_COPIES
        if len(where) < copies or (copies == FORMULA_LOOP_COPIES and not _is_formula(unit)):
            continue
        for k in range(len(where) - copies + 1):
            second, last = where[k + 1], where[k + copies - 1]
            if new_before[last + 1] == new_before[second]:  # nothing new from the second copy on
                if found is None or where[k] < found[0]:
                    found = (where[k], second)
                break
    return " ".join(units[found[0] : found[1]]) if found else None


def loop(text: str) -> str | None:
    """The passage a looping model repeats in `text` (see the rules above), or None."""
    passage = _passage_said_again(_units(text))
    return passage if passage is not None else _repeated_words(text.split())


def _repeated_words(words: list[str]) -> str | None:
    """A run of up to `MAX_LOOP_WORDS` words repeated back to back (see the rules above), or None."""
    if len(words) < 2 * LOOP_COPIES:
        return None
    ids = {word: i for i, word in enumerate(dict.fromkeys(words))}
    tokens = np.fromiter((ids[word] for word in words), dtype=np.int64, count=len(words))
    for size in range(1, min(MAX_LOOP_WORDS, len(words) // LOOP_COPIES) + 1):
        same = np.concatenate(([False], tokens[size:] == tokens[:-size], [False]))
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))  # starts and ends of runs of matches
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            copies = 1 + (end - start) // size
            if copies < LOOP_COPIES:
                continue
            chunk = " ".join(words[start : start + size])
            prose = len(prose_words(chunk))
            formula = _is_formula(chunk)
            if (
                prose >= 2
                or (prose == 1 and copies >= WORD_LOOP_COPIES)
                or (formula and copies >= FORMULA_LOOP_COPIES)
            ):
                return chunk
    return None


# ---------------------------------------------------------------------------------------------------------
# Text after the final answer
# ---------------------------------------------------------------------------------------------------------
#
# A final answer need not be the last character. Real solutions close the answer's sentence
# (`is \(\boxed{10}\) meters.`), and some add remarks that restate it (NeMo-Skills' "Note: ..." paragraphs,
# "(Remember to express the answer using interval notation.)", "Equality occurs when a = b = c = 1/2.").
# Length alone is not degeneration: those notes run to several sentences after a right answer. What the
# fixtures show going wrong after an answer is one of three things, and each is rejected:
#   - a new question or turn: the model continues a few-shot pattern ("Now solve the question.\n\nQuestion:
#     ..."), or a new problem statement (a question, or a sentence that gives an instruction: "Find ...");
#   - another answer: "the answer is considered as 220, in other cases it might be written as 0220";
#   - garbage: control characters, or letters of two or more scripts the solution never used (token soup
#     such as "permissible LOCATION mikpoCas\x1b Bo司Ո Stake insurerれ 권 ...").

_TURN_RE = re.compile(
    r"(?im)^[\s#*>]*(?:question|problem|exercise|example|task|q|human|user|assistant|instruction|input|query)"
    r"\s*\d*\s*\**\s*[:.)]"
    r"|<\|[a-z_]+\|>|<｜|\[/?INST\]|</?s>|<(?:start|end)_of_turn>|\[asy\]"
    r"|\b(?:now solve|solve the following|next (?:question|problem)"
    r"|(?:another|new|practice) (?:question|problem)|try (?:this|the following)"
    r"|(?:here is|here's) (?:the |your |a |another )?(?:next )?(?:question|problem)"
    r"|your (?:question|problem))\b|\b(?:question|problem)\s*\d*\s*:"
)
# A sentence that sets a task or asks: how problem statements (MATH, GSM8K, TheoremQA) ask what they ask.
# After a final answer a remark states or notes ("Note: ...", "Here are ...", "Alternatively, ..."); it
# does not tell the reader to find, compute or enter something, nor ask.
_TASK_RE = re.compile(
    r"(?:^|[.!?:][$)]*\s+|\n\s*)(?i:find|compute|evaluate|simplify|solve|determine|calculate|express|prove"
    r"|show|enter|convert|give|estimate|approximate|obtain|write|rationalize|factor|expand|round|list|sort"
    r"|represent|provide|return|use|what|what's|how|which|who|does|do|is|are|can|suppose|consider|assume"
    r"|true or false|let(?!'s| us| me)"
    r"|please (?:solve|find|compute|calculate|determine|evaluate|give|provide|show|prove|use|estimate))\b"
    r"|,\s+(?:find|compute|determine|calculate|evaluate|estimate|express|give|show|prove|use|what|what's"
    r"|how)\b"
    r"|\(Unit:"
)
_QUESTION_RE = re.compile(r"[A-Za-z][^.!?\n]*\?")
# An open equation asks for its value: a line that ends in "=" with nothing after it ("((5 + 2) * 3) =",
# how BIG-Bench's arithmetic problems are written).
_OPEN_EQUATION_RE = re.compile(r"(?m)^[^\n=]*[\w)\]}][ \t]*=[ \t]*$")
# Words a script is named by that are not a writing system of their own (math letters, Latin, Greek).
_NOT_A_SCRIPT = frozenset({"LATIN", "GREEK", "MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER"})


def new_question(tail: str) -> str | None:
    """The start of a new question, problem or turn in the text after an answer, or None."""
    for pattern in (_TURN_RE, _TASK_RE, _QUESTION_RE, _OPEN_EQUATION_RE):
        m = pattern.search(tail)
        if m:
            return m.group(0).strip()
    return None


def _scripts(text: str) -> set[str]:
    names = (unicodedata.name(ch, "").split(" ", 1)[0] for ch in text if ch.isalpha() and not ch.isascii())
    return {name for name in names if name and name not in _NOT_A_SCRIPT}


def garbage(tail: str, before: str) -> str | None:
    """Why the text after an answer is not text (control characters, a soup of new scripts), or None."""
    control = next((ch for ch in tail if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t"), None)
    if control is not None:
        return f"control character {control!r}"
    new = _scripts(tail) - _scripts(before)
    if len(new) >= 2:
        return f"letters of scripts the solution never used: {', '.join(sorted(new))}"
    return None
