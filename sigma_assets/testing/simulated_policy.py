"""A simulated policy that writes like the real ones: steps, rollouts and evaluation answers built from what
real math models wrote (`real_text.load_graded_texts`: Qwen2.5-Math-7B-Instruct and a NeMo-Skills model
on MATH, GPT-4 on PRM800K and TheoremQA).

What it keeps from the real text, and how:
- **Steps.** Every paragraph of a solution the source graded correct that states no answer and that
  `answers.final_answer` finds nothing wrong with, pooled by its position in its solution (first step,
  second, ... eighth and later), so a step at depth d is one that a real model wrote at depth d.
- **When the answer comes.** The chance that the step at depth d states the final answer, given that the
  path reached depth d, is the share of the real solutions that end at step d among those as long (the
  hazard of their lengths); past the longest, 1.
- **The answer.** A final step is a real step followed by a closing sentence in one of the forms the
  models use ("Therefore, the final answer is $\\boxed{...}$."). It holds the gold answer with the
  problem's own probability (`difficulty`: drawn once per problem from a Beta distribution, so some
  problems are always solved and some never), else a wrong answer: a nearby integer for an integer gold,
  another problem's gold otherwise.
- **Ending early.** With `end_without_answer` a step ends the text with no answer (as a model that
  stops); at temperature T a sibling repeats the first sample with `duplicate_share(T)` (low
  temperatures repeat themselves; the search merges identical siblings).

Every draw comes from a generator seeded by the request's seed and the sample's index, so the same
request gets the same answers (as from a seeded vLLM). No Dagster, no HTTP: `simulated_server` serves it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sigma_assets.method.answers import final_answer
from sigma_assets.method.policy_prompt import COT_INSTRUCTION
from sigma_assets.testing.real_text import REAL_OUTPUTS, load_graded_texts, steps_of

# MATH-style sources whose solutions are the model of a policy's steps.
STEP_SOURCES = ("qwen", "nemo-skills", "prm800k", "theoremqa")
# Sources whose gold answers are MATH answers (integers, fractions, radicals, expressions, intervals).
GOLD_SOURCES = ("qwen", "nemo-skills", "prm800k")
POSITIONS = 8  # steps at depth 8 and deeper share one pool
# How the real models close a solution (answer forms the project's checker reads as explicit answers).
CLOSINGS = (
    "Therefore, the final answer is $\\boxed{{{answer}}}$.",
    "So the answer is \\(\\boxed{{{answer}}}\\).",
    "Thus, the answer is $\\boxed{{{answer}}}$.",
    "The final answer is $\\boxed{{{answer}}}$.",
)
_ANSWER_MARKERS = re.compile(r"\\boxed|\\fbox|answer|####|final|\\blacksquare", re.IGNORECASE)
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class PolicyStyle:
    """What the simulated policy writes, measured on real solutions (module docstring)."""

    steps_by_position: tuple[tuple[str, ...], ...]
    answer_hazard: tuple[float, ...]  # index d-1: P(the step at depth d states the final answer)
    golds: tuple[str, ...]
    solutions: int  # real solutions the figures come from

    def hazard(self, depth: int) -> float:
        return self.answer_hazard[depth - 1] if depth <= len(self.answer_hazard) else 1.0

    def steps_at(self, depth: int) -> tuple[str, ...]:
        return self.steps_by_position[min(depth, POSITIONS) - 1]

    def mean_length(self) -> float:
        """Mean steps per solution under the hazard (what a path's length will be on average)."""
        alive, mean = 1.0, 0.0
        for depth in range(1, 65):
            ends = alive * self.hazard(depth)
            mean += depth * ends
            alive -= ends
        return mean


def _plain_step(step: str) -> bool:
    """A step that states no answer and that the answer rule finds nothing wrong with."""
    return not _ANSWER_MARKERS.search(step) and final_answer(step).reason == "no_answer"


@cache
def real_policy_style(directory: Path = REAL_OUTPUTS) -> PolicyStyle:
    texts = load_graded_texts(directory)
    pools: list[list[str]] = [[] for _ in range(POSITIONS)]
    lengths: Counter[int] = Counter()
    solutions = 0
    for source in STEP_SOURCES:
        for sample in texts[source]:
            if not sample.source_correct:
                continue
            steps = steps_of(sample.text)
            if not steps:
                continue
            solutions += 1
            lengths[len(steps)] += 1
            for position, step in enumerate(steps[:-1], start=1):
                if _plain_step(step):
                    pools[min(position, POSITIONS) - 1].append(step)
    for position in range(1, POSITIONS):  # a thin pool borrows from the one before it
        if len(pools[position]) < 20:
            pools[position] += pools[position - 1]
    hazard, alive = [], sum(lengths.values())
    for depth in range(1, max(lengths) + 1):
        hazard.append(lengths[depth] / alive if alive else 1.0)
        alive -= lengths[depth]
    golds = sorted({s.gold.strip() for src in GOLD_SOURCES for s in texts[src] if s.gold.strip()})
    return PolicyStyle(tuple(tuple(dict.fromkeys(p)) for p in pools), tuple(hazard), tuple(golds), solutions)


def seeded(*parts: object) -> random.Random:
    """A generator seeded by a stable hash of `parts` (Python's own hash of a str varies per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def duplicate_share(temperature: float) -> float:
    """How often a sibling repeats the first sample word for word: often when cold, rarely when hot."""
    return max(0.0, min(0.6, 0.5 - 0.55 * temperature))


@dataclass(frozen=True)
class SimulatedPolicy:
    """Writes steps, rollouts and whole solutions in the real style for problems whose gold it is told."""

    style: PolicyStyle
    golds: dict[str, str]  # problem text -> gold answer
    mean_accuracy: float = 0.5  # the mean of the per-problem probability of a right answer
    concentration: float = 2.0  # Beta(a, b) with a + b = this: low spreads problems from easy to hard
    end_without_answer: float = 0.01

    def difficulty(self, problem: str) -> float:
        """The problem's chance of a right final answer, fixed per problem."""
        a = self.mean_accuracy * self.concentration
        return seeded("difficulty", problem).betavariate(a, self.concentration - a)

    def wrong_answer(self, gold: str | None, rng: random.Random) -> str:
        if gold is not None and _INTEGER.fullmatch(gold):
            return str(int(gold) + rng.choice((-3, -2, -1, 1, 2, 5, 10)))
        other = rng.choice(self.style.golds)
        return other if other != gold else other + "+1"

    def _closing(self, problem: str, rng: random.Random) -> str:
        gold = self.golds.get(problem)
        right = gold is not None and rng.random() < self.difficulty(problem)
        answer = gold if right and gold is not None else self.wrong_answer(gold, rng)
        return rng.choice(CLOSINGS).format(answer=answer)

    def step(self, problem: str, depth: int, rng: random.Random) -> tuple[str, bool]:
        """The step at `depth` and whether the model ends the text after it (an answer, or giving up)."""
        text = rng.choice(self.style.steps_at(depth))
        if rng.random() < self.style.hazard(depth):
            return f"{text} {self._closing(problem, rng)}", True
        if rng.random() < self.end_without_answer:
            return text, True
        return text, False

    def continuation(self, problem: str, depth: int, rng: random.Random, max_steps: int = 64) -> list[str]:
        """Steps from `depth` on until the model ends the text (a rollout, or a whole answer from 1)."""
        steps = []
        for d in range(depth, depth + max_steps):
            text, ends = self.step(problem, d, rng)
            steps.append(text)
            if ends:
                break
        return steps

    def samples(
        self, problem: str, depth: int, n: int, temperature: float, seed: int | None, whole: bool
    ) -> list[tuple[str, bool]]:
        """`n` samples for a prompt at `depth`: one step each (stopping at the delimiter), or with
        `whole` the rest of the solution; with whether the model ended the text."""
        out: list[tuple[str, bool]] = []
        for index in range(n):
            rng = seeded("sample", seed, index, problem, depth, temperature)
            if index and out and rng.random() < duplicate_share(temperature):
                out.append(out[0])
                continue
            if whole:
                out.append(("\n\n".join(self.continuation(problem, depth, rng)), True))
            else:
                out.append(self.step(problem, depth, rng))
        return out


def problem_and_depth(prompt: str) -> tuple[str, int]:
    """From a search prompt (ChatML, the CoT instruction after the problem, then the steps so far): the
    problem and the depth of the next step."""
    head, _, tail = prompt.partition(f"\n{COT_INSTRUCTION}")
    problem = head.rsplit("<|im_start|>user\n", 1)[-1]
    written = tail.split("<|im_start|>assistant\n", 1)[-1]
    return problem, written.count("\n\n") + 1


def rehearsal_problems(count: int, seed: int = 0, directory: Path = REAL_OUTPUTS) -> list[dict[str, str]]:
    """`count` distinct problems of real length and vocabulary, each with a real MATH gold answer.

    Each is the words of a real problem in a shuffled order: real length and words, and no run of eight
    words shared with another problem (the decontamination test), which a set of copies would have. The
    text means nothing; nothing in the project reads a problem's meaning."""
    texts = load_graded_texts(directory)
    real = sorted({(s.problem, s.gold.strip()) for src in GOLD_SOURCES for s in texts[src] if s.gold.strip()})
    rng = random.Random(seed)
    problems: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(problems) < count:
        text, gold = rng.choice(real)
        words = text.split()
        rng.shuffle(words)
        shuffled = " ".join(words) + "?"
        if shuffled in seen:
            continue
        seen.add(shuffled)
        problems.append({"problem_id": f"rehearsal-{len(problems):05d}", "problem": shuffled, "answer": gold})
    return problems
