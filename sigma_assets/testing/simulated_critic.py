"""A simulated critic that answers the project's critique and revision prompts as a capable API model does.

- **Path critique** (`prompts.render_path_critique`): the structured JSON, one entry per depth. Each
  entry names what its selected step holds (a quoted run of its words, with its numbers or LaTeX) and,
  where there are siblings, what one of them does, then one concrete improvement: specific feedback, as
  `feedback.is_generic_feedback` wants. With `generic_share` an entry is a bland "Looks good." instead.
- **Path revision** (`prompts.render_path_revision`): `Step k:` lines, each original step with one
  sentence of real solution text added where its feedback asks for a change (before the closing answer
  sentence on the last step), the final answer kept. With `regurgitation_share` the path comes back as
  it was; with `drift_share` its final answer is changed (the drift the project must catch and retry).

Sentences added come from the same real steps the simulated policy writes from. Every draw is seeded by
the prompt, the request's seed and the sample index, so a request always gets the same answer.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from sigma_assets.method.answers import final_answer
from sigma_assets.method.prompts import KEEP_STEP
from sigma_assets.testing.simulated_policy import PolicyStyle, seeded

_GOLD_RE = re.compile(
    r"^Ground-truth answer \(for checking only, never to be copied into feedback\): (.*)$", re.M
)
_N_STEPS_RE = re.compile(r"For every depth from 1 to (\d+)")
_LABEL_RE = re.compile(r"^Step (\d+): ", re.M)
_SIBLING_RE = re.compile(r"^  Sibling \d+ \(Q = [^\n]*\):\n  (.*)$", re.M)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
_CONTENT_RE = re.compile(r"\\[A-Za-z]+|\d+(?:\.\d+)?|[A-Za-z]{5,}")
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")

IMPROVEMENTS = (
    "Say in one clause why this follows from the previous step before using it.",
    "Write the intermediate value out explicitly so each number can be checked.",
    "Name the quantity being computed before the computation starts.",
    "Keep the notation of the earlier steps so the reader can follow the substitution.",
    "State the condition this relies on, since the later steps depend on it.",
)


def labelled_steps(section: str) -> dict[int, str]:
    """`Step k: ...` paragraphs of a prompt section, by k (a step may span lines)."""
    labels = list(_LABEL_RE.finditer(section))
    ends = [m.start() for m in labels[1:]] + [len(section)]
    return {int(m.group(1)): section[m.end() : end].strip() for m, end in zip(labels, ends, strict=True)}


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0] if start in text else ""


def quote(step: str, rng: random.Random, words: int = 6) -> str:
    """A run of `words` words of `step` around one of its numbers, LaTeX commands or long words."""
    tokens = step.split()
    anchors = [i for i, t in enumerate(tokens) if _CONTENT_RE.search(t)]
    if not tokens:
        return step
    at = rng.choice(anchors) if anchors else 0
    start = max(0, min(at - words // 2, len(tokens) - words))
    return " ".join(tokens[start : start + words]).strip()


@dataclass(frozen=True)
class SimulatedCritic:
    sentences: tuple[str, ...]  # what a revision may add: real sentences with no answer and no equation
    generic_share: float = 0.02
    regurgitation_share: float = 0.02
    drift_share: float = 0.03

    @classmethod
    def from_style(cls, style: PolicyStyle, **shares: float) -> SimulatedCritic:
        return cls(plain_sentences(style), **shares)

    def answer(self, prompt: str, seed: int | None, index: int) -> str:
        rng = seeded("critic", prompt, seed, index)
        if "Answer with JSON only" in prompt:
            return self.critique(prompt, rng)
        if prompt.startswith("Rewrite the step-by-step solution"):
            return self.revision(prompt, rng)
        raise ValueError("not a path critique or path revision prompt")

    def critique(self, prompt: str, rng: random.Random) -> str:
        n_steps = int(_N_STEPS_RE.search(prompt).group(1)) if _N_STEPS_RE.search(prompt) else 1
        path = labelled_steps(
            _between(
                prompt,
                "Selected solution path (it reaches the correct answer):\n",
                "\n\nCandidates at each depth:",
            )
        )
        depths = _between(prompt, "Candidates at each depth:\n", "\n\nFor every depth from")
        siblings = {
            int(m.group(1)): _SIBLING_RE.findall(m.group(2))
            for m in re.finditer(r"^Depth (\d+): [^\n]*\n((?:  .*\n?)*)", depths, re.M)
        }
        entries = []
        for depth in range(1, n_steps + 1):
            step = _without_answer(path.get(depth, ""))
            if rng.random() < self.generic_share:
                text = "Looks good."
            else:
                text = f'The step "{quote(step, rng)}" is the move that keeps this path on track.'
                others = siblings.get(depth) or []
                if others:
                    text += f' Sibling 1 instead writes "{quote(others[0], rng)}", a detail worth keeping.'
                text += " " + rng.choice(IMPROVEMENTS)
            entries.append({"depth": depth, "feedback": text})
        return json.dumps({"feedback": entries})

    def revision(self, prompt: str, rng: random.Random) -> str:
        steps = labelled_steps(_between(prompt, "Solution:\n", "\n\nFeedback:\n"))
        feedback = labelled_steps(_between(prompt, "\n\nFeedback:\n", "\n\nWrite the revised solution"))
        n = len(steps)
        regurgitate = rng.random() < self.regurgitation_share
        out = []
        for k in range(1, n + 1):
            step = steps[k]
            if not regurgitate and feedback.get(k, KEEP_STEP) != KEEP_STEP:
                added = rng.choice(self.sentences)
                # the answer sentence stays last
                step = f"{added} {step}" if k == n else f"{step} {added}"
            out.append(step)
        if rng.random() < self.drift_share and out:
            out[-1] = _BOXED_RE.sub(lambda m: "\\boxed{" + _drifted(m.group(1)) + "}", out[-1])
        return "\n".join(f"Step {k}: {s}" for k, s in enumerate(out, start=1))


def _without_answer(step: str) -> str:
    """The step without its closing answer sentence: feedback never quotes the answer."""
    sentences = _SENTENCE_RE.split(step)
    kept = [s for s in sentences if "\\boxed" not in s]
    return " ".join(kept) or step


def _drifted(answer: str) -> str:
    return str(int(answer) + 1) if answer.lstrip("-").isdigit() else f"{answer}+1"


def plain_sentences(style: PolicyStyle) -> tuple[str, ...]:
    """Single sentences of the real steps with no answer, no equation and no math: safe to add anywhere."""
    found = []
    for pool in style.steps_by_position:
        for step in pool:
            for sentence in _SENTENCE_RE.split(step):
                s = sentence.strip()
                plain = not any(mark in s for mark in ("=", "\n", "$", "\\"))
                if 40 <= len(s) <= 240 and plain and final_answer(s).reason == "no_answer":
                    found.append(s)
    return tuple(dict.fromkeys(found))
