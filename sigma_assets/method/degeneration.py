"""Degenerate model text: a model stuck in a loop, or text that goes wrong after its final answer.

These rules were decided on real model text (the shared fixtures: Qwen2.5-Math-7B-Instruct and a
NeMo-Skills model on MATH, GPT-4 on TheoremQA), not on the bundled toy model, and each says why it is
what it is. Plain Python with no Dagster imports; `answers.final_answer` applies them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------------------------------------
#
# Real solutions repeat a lot that is not a loop: the display opener `\[` on its own line a dozen times,
# `\begin{align*}`, bullets, a restated `x = 5`, matrix rows (`0 0 1 3 -4/3` three times in a row), and
# even whole short sentences of a case analysis ("This is the same as the original expression." five
# times, "From these neighbors, we explore their neighbors:" four times, both in correct solutions).
# What a looping model writes instead is the same passage again and again *in a row*, or long sentences
# that come back whole (GPT-4 restating a 15-word sentence five times while it circles). So the text is
# cut into units (lines and sentences), markup-only units are dropped, and a loop is one of:
#   - the same block of 1 to 8 units three times in a row, when the block holds prose (a formula-only
#     block of 12 characters or more needs eight: a product is written out as `\frac{2}{3} \times` again
#     and again, and Qwen chains `= 9 \times \frac{5}{3}` four times in correct solutions; rows of bare
#     numbers are a table, never a loop);
#   - a prose sentence of 10 words or more, three times anywhere (correct solutions in the fixtures repeat
#     sentences of at most 8 words; the looping ones repeat sentences of 10 to 15);
#   - the same run of up to 40 words three times back to back, within a line or across lines, when the run
#     holds two prose words or more (four times for one word, "we we we we"; eight for a formula of 12
#     characters or more, as above).

LOOP_COPIES = 3
FORMULA_LOOP_COPIES = 8
WORD_LOOP_COPIES = 4
MAX_LOOP_BLOCK = 8
LONG_SENTENCE_WORDS = 10

_UNIT_SPLIT_RE = re.compile(r"\n|(?<=[.!?:;])\s+")
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


def _repeated_block(units: list[str]) -> str | None:
    """A block of units that comes `LOOP_COPIES` times in a row (`FORMULA_LOOP_COPIES` without prose)."""
    prose = [bool(prose_words(unit)) for unit in units]
    for size in range(1, MAX_LOOP_BLOCK + 1):
        for i in range(len(units) - LOOP_COPIES * size + 1):
            block = units[i : i + size]
            copies = 1
            while units[i + copies * size : i + (copies + 1) * size] == block:
                copies += 1
            if copies < LOOP_COPIES:
                continue
            if any(prose[i : i + size]):
                return " ".join(block)
            text = " ".join(block)
            formula = not _NUMBER_ROW_RE.fullmatch(text) and len(text.replace(" ", "")) >= 12
            if formula and copies >= FORMULA_LOOP_COPIES:
                return text
    return None


def loop(text: str) -> str | None:
    """The passage a looping model repeats in `text` (see the rules above), or None."""
    units = _units(text)
    block = _repeated_block(units)
    if block is not None:
        return block
    long_sentences = Counter(unit for unit in units if len(prose_words(unit)) >= LONG_SENTENCE_WORDS)
    for sentence, count in long_sentences.items():
        if count >= LOOP_COPIES:
            return sentence
    return _repeated_words(text.split())


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
            formula = not _NUMBER_ROW_RE.fullmatch(chunk) and len(chunk.replace(" ", "")) >= 12
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
# Words a script is named by that are not a writing system of their own (math letters, Latin, Greek).
_NOT_A_SCRIPT = frozenset({"LATIN", "GREEK", "MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER"})


def new_question(tail: str) -> str | None:
    """The start of a new question, problem or turn in the text after an answer, or None."""
    for pattern in (_TURN_RE, _TASK_RE, _QUESTION_RE):
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
