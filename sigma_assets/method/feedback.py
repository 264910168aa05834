"""Generic feedback: a critique that names nothing of its depth, or echoes the critic's instructions.

Generic feedback is flagged and never reaches a revision prompt (the step is kept as it was).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sigma_assets.method.prompts import CRITIC_INSTRUCTIONS
from sigma_assets.method.siblings import SiblingSet

GENERIC_PHRASES = (
    "looks good",
    "looks correct",
    "the step is correct",
    "this step is correct",
    "no changes needed",
    "no improvement needed",
    "well done",
    "good job",
)

# Words that any feedback may use about any step: sharing them with a step shows nothing specific.
_STOPWORD_TEXT = """
    about above after again also answer answers approach because been before being below better between
    both calculation calculations clear clearer clearly compute computed computing correct correctly could
    detail details does doing done each easier effective either explain explained explanation final
    first from good have here improve improved improvement into just keep keeping lack lacks like make
    makes more most much need needs next other overall problem reasoning result same selected should
    sibling siblings similar simple since solution some step steps still such sure than that their them
    then there therefore these they this those thus through very well were what when where which while
    will with without work would your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_FORMATTING_COMMANDS = frozenset(
    {"boxed", "text", "left", "right", "quad", "qquad", "displaystyle", "mathrm"}
)
_TOKEN_RE = re.compile(r"\\([A-Za-z]+)|(\d+(?:\.\d+)?)|([A-Za-z]+)")
_WORD_RE = re.compile(r"[A-Za-z0-9]+")


def content_tokens(text: str) -> set[str]:
    """Numbers, LaTeX commands and content words (4+ letters, not stop words), lower-cased.

    Single letters and short words are left out: "a", "is", "x" say nothing about which step is meant.
    """
    tokens: set[str] = set()
    for command, number, word in _TOKEN_RE.findall(text):
        if command:
            if command.lower() not in _FORMATTING_COMMANDS:
                tokens.add("\\" + command.lower())
        elif number:
            tokens.add(number.rstrip("0").rstrip(".") if "." in number else number)
        else:
            w = word.lower()
            if len(w) >= 4 and w not in _STOPWORDS:
                tokens.add(w[:-1] if w.endswith("s") and len(w) > 4 else w)  # "angles" ~ "angle"
    return tokens


# Feedback that repeats this many words in a row from the critique instructions is an echo.
ECHO_WORDS = 5


def _word_ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


_INSTRUCTION_NGRAMS = frozenset(
    _word_ngrams(_WORD_RE.findall(" ".join(CRITIC_INSTRUCTIONS).lower()), ECHO_WORDS)
)


def echoes_instructions(words: Sequence[str]) -> bool:
    """Whether lower-cased feedback words repeat `ECHO_WORDS` words in a row of the critic's instructions."""
    return not _word_ngrams(words, ECHO_WORDS).isdisjoint(_INSTRUCTION_NGRAMS)


def is_generic_feedback(feedback: str, record: SiblingSet, min_words: int = 6, min_overlap: int = 1) -> bool:
    """Feedback that names no depth-specific content.

    Generic when any of:
    - it has fewer than `min_words` words;
    - it is one of `GENERIC_PHRASES` (lower-cased, punctuation stripped) with at most 3 other words;
    - it shares fewer than `min_overlap` content tokens (`content_tokens`: numbers, LaTeX commands,
      content words) with the selected step and its siblings;
    - it echoes the critic's own instructions (`ECHO_WORDS` words in a row from them), as a weak critic
      does when it continues its prompt instead of answering it.
    """
    words = _WORD_RE.findall(feedback.lower())
    if len(words) < min_words:
        return True
    if echoes_instructions(words):
        return True
    plain = " ".join(words)
    for phrase in GENERIC_PHRASES:
        if phrase in plain and len(words) - len(phrase.split()) <= 3:
            return True
    context = content_tokens(record.selected_step)
    for sibling in record.siblings:
        context |= content_tokens(sibling.step)
    return len(content_tokens(feedback) & context) < min_overlap
