"""Decontamination: no training sample may hold a problem of an evaluation set.

A training problem overlaps an evaluation problem when their normalised texts are equal, or when they
share a run of 8 words (the n-gram test of open-r1's decontamination, which catches a benchmark problem
restated with another lead-in or numbering). Normalised: lower case, every run of characters other than
letters and digits one space (`$x^2$` and `x^2` read alike). Plain Python with no Dagster imports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

NGRAM = 8
_NOT_WORD_RE = re.compile(r"[^a-z0-9]+")


def normalize_text(text: str) -> str:
    return _NOT_WORD_RE.sub(" ", text.lower()).strip()


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = normalize_text(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass
class EvalIndex:
    """The problems of every evaluation set, as normalised texts and word n-grams."""

    n: int = NGRAM
    texts: dict[str, set[str]] = field(default_factory=dict)
    grams: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)

    def add(self, name: str, problems: Iterable[str]) -> None:
        for problem in problems:
            self.texts.setdefault(name, set()).add(normalize_text(problem))
            self.grams.setdefault(name, set()).update(ngrams(problem, self.n))

    def overlaps(self, problem: str) -> list[str]:
        """The evaluation sets `problem` overlaps, in the order they were added."""
        text, grams = normalize_text(problem), ngrams(problem, self.n)
        return [
            name
            for name in self.texts
            if text in self.texts[name] or not grams.isdisjoint(self.grams.get(name, ()))
        ]


@dataclass
class Decontamination:
    """What `decontaminate` removed: per evaluation set, the training problem ids that overlap it."""

    removed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.removed.items()}

    @property
    def problem_ids(self) -> set[str]:
        return {pid for ids in self.removed.values() for pid in ids}


def decontaminate(problems: Sequence[tuple[str, str]], index: EvalIndex) -> Decontamination:
    """Which of `problems` ((problem_id, text)) overlap an evaluation set, by set (a problem may be in
    several). Each problem's text is compared once, however many samples it has."""
    result = Decontamination({name: [] for name in index.texts})
    for problem_id, text in dict(problems).items():
        for name in index.overlaps(text):
            result.removed[name].append(problem_id)
    return result
