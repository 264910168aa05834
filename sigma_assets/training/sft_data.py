"""SFT data: selected or refined search paths as chat samples, checked, deduplicated, capped.

Two variants of the same problems make the paper's ablation: `sigma` trains on the refined paths,
`mcts` on the unrefined selected paths they came from. Both temperatures are combined (the paper's
30K set is its two 15K sets). A slice of problems is held out of both variants by a stable hash of the
problem id, so the fine-tuned models can be scored on problems they never trained on.

Only a path whose text closes with an explicit final answer (`answers.final_answer`) that the answer
checker accepts against the gold answer becomes a sample; nothing is graded by a last-number guess.

No Dagster imports.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from sigma_assets.method.answers import final_answer

VARIANTS = ("sigma", "mcts")
# The paper's student prompt (Qwen2.5-Math chain-of-thought): the problem, then this line.
STUDENT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
SFT_SCHEMA = {
    "problem_id": pl.String,
    "shard": pl.String,
    "temperature": pl.String,
    "variant": pl.String,
    "messages": pl.List(MESSAGE),
    # sigma only: no revision changed the path (every attempt drifted, or the accepted one copied the
    # original word for word), so the sample is the original path: the same as its `mcts` sample.
    "kept_original": pl.Boolean,
}
HELDOUT_SCHEMA = {"problem_id": pl.String, "problem": pl.String, "answer": pl.String}

CheckMany = Callable[[Sequence[tuple[str, str | None]]], list[bool]]


def student_prompt(problem: str) -> str:
    """The user turn of every SFT sample and every evaluation prompt."""
    return f"{problem}\n{STUDENT_INSTRUCTION}"


def solution_text(steps: Sequence[str]) -> str:
    """A path as one assistant turn: one step per paragraph, as the search wrote them."""
    return "\n\n".join(step.strip() for step in steps if step.strip())


@dataclass(frozen=True)
class PathRecord:
    """One selected path of one (shard, temperature) search, in the variant's form."""

    problem_id: str
    problem: str
    gold: str
    steps: tuple[str, ...]
    shard: str
    temperature: str
    kept_original: bool = False  # sigma only: the revision did not change the path (`path_records`)


def path_records(
    refined_paths: pl.DataFrame,
    problems: Mapping[str, tuple[str, str]],
    variant: str,
    shard: str,
    temperature: str,
) -> list[PathRecord]:
    """The paths of one `refined_paths` partition: refined steps for `sigma`, original ones for `mcts`.

    `problems` maps problem id to (problem text, gold answer), from `raw_problems`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SFT variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    records = []
    for row in refined_paths.iter_rows(named=True):
        pid = row["problem_id"]
        if pid not in problems:
            raise KeyError(f"refined_paths {shard}/{temperature}: problem {pid} is not in raw_problems")
        problem, gold = problems[pid]
        original = tuple(row["original_steps"])
        # A drifted revision left the original path in `refined_steps`; an accepted one that copies it
        # (whitespace aside) revised nothing either: both are the original path, sample for sample.
        revised = variant == "sigma" and not _same_text(row["refined_steps"], original)
        records.append(
            PathRecord(
                problem_id=pid,
                problem=problem,
                gold=gold,
                steps=tuple(row["refined_steps"]) if revised else original,
                shard=shard,
                temperature=temperature,
                kept_original=variant == "sigma" and not revised,
            )
        )
    return records


def _same_text(steps: Sequence[str], other: Sequence[str]) -> bool:
    return solution_text(steps).split() == solution_text(other).split()


def _unit_hash(text: str) -> float:
    # sha256 rather than hash(): Python's str hash is salted per process.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def heldout_ids(problem_ids: Iterable[str], share: float, minimum: int = 1) -> set[str]:
    """The held-out slice: the `share` of problems (at least one) with the smallest stable id hash, or
    none when that is fewer than `minimum` problems (a slice too small to score is trained on instead).

    It depends on the ids alone, so both variants hold out the same problems."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    ids = sorted(set(problem_ids), key=lambda pid: _unit_hash(f"heldout:{pid}"))
    count = heldout_count(len(ids), share)
    if count < max(1, minimum):
        return set()
    return set(ids[:count])


def heldout_count(problems: int, share: float) -> int:
    """How many of `problems` the share holds out (at least one, none of none or at share 0)."""
    return 0 if share == 0.0 or not problems else max(1, round(share * problems))


@dataclass
class SFTBuild:
    """The samples of one variant and how every other path was accounted for."""

    frame: pl.DataFrame
    variant: str = "sigma"
    paths: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    heldout_paths: int = 0
    duplicates: int = 0
    capped: int = 0

    @property
    def kept_original(self) -> int:
        """Samples that are their original path (sigma: no revision changed it)."""
        return int(self.frame["kept_original"].sum())

    @property
    def revised(self) -> int:
        """Samples a revision changed (sigma only; an mcts sample is never revised)."""
        return self.frame.height - self.kept_original if self.variant == "sigma" else 0

    @property
    def kept_original_share(self) -> float:
        return self.kept_original / self.frame.height if self.frame.height else 0.0


def build_sft(
    records: Sequence[PathRecord],
    variant: str,
    check_many: CheckMany,
    heldout: set[str],
    cap: int | None = None,
    seed: int = 0,
) -> SFTBuild:
    """Chat samples of `variant` from `records`: held-out problems out, unchecked answers out, exact
    duplicates (same user and assistant turns) out, then at most `cap` samples, drawn with `seed`."""
    if cap is not None and cap < 1:
        raise ValueError(f"SFT cap must be a positive number of samples, got {cap}")
    build = SFTBuild(frame=pl.DataFrame(schema=SFT_SCHEMA), variant=variant, paths=len(records))
    candidates: list[tuple[PathRecord, str, str]] = []
    for record in records:
        if record.problem_id in heldout:
            build.heldout_paths += 1
            continue
        text = solution_text(record.steps)
        verdict = final_answer(text)
        if not verdict.ok:
            build.rejected[verdict.reason] += 1
            continue
        candidates.append((record, text, verdict.answer or ""))
    verdicts = check_many([(r.gold, answer) for r, _, answer in candidates])
    seen: set[tuple[str, str]] = set()
    samples = []
    for (record, text, _), correct in zip(candidates, verdicts, strict=True):
        if not correct:
            build.rejected["wrong_answer"] += 1
            continue
        user = student_prompt(record.problem)
        if (user, text) in seen:
            build.duplicates += 1
            continue
        seen.add((user, text))
        samples.append(
            {
                "problem_id": record.problem_id,
                "shard": record.shard,
                "temperature": record.temperature,
                "variant": variant,
                "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": text}],
                "kept_original": record.kept_original,
            }
        )
    if cap is not None and len(samples) > cap:
        build.capped = len(samples) - cap
        samples = random.Random(seed).sample(samples, cap)
    samples.sort(key=lambda s: (s["problem_id"], s["temperature"]))
    build.frame = pl.DataFrame(samples, schema=SFT_SCHEMA)
    return build


def heldout_frame(problems: Mapping[str, tuple[str, str]], heldout: set[str]) -> pl.DataFrame:
    """The held-out problems with their gold answers, for evaluation."""
    rows = [
        {"problem_id": pid, "problem": problems[pid][0], "answer": problems[pid][1]}
        for pid in sorted(heldout)
    ]
    return pl.DataFrame(rows, schema=HELDOUT_SCHEMA)


def format_problems(frame: pl.DataFrame) -> list[str]:
    """What is wrong with an SFT table's chat format, one line per problem (empty when it is sound)."""
    problems = []
    missing = [c for c in SFT_SCHEMA if c not in frame.columns]
    if missing:
        return [f"missing columns: {', '.join(missing)}"]
    if frame.schema["messages"] != SFT_SCHEMA["messages"]:
        return [f"messages has type {frame.schema['messages']}, expected {SFT_SCHEMA['messages']}"]
    for index, messages in enumerate(frame["messages"].to_list()):
        roles = [m["role"] for m in messages]
        if roles != ["user", "assistant"]:
            problems.append(f"row {index}: roles {roles}, expected user then assistant")
        empty = [m["role"] for m in messages if not (m["content"] or "").strip()]
        if empty:
            problems.append(f"row {index}: empty {', '.join(empty)} turn")
    return problems


@dataclass(frozen=True)
class VariantComparison:
    """What the ablation compares: the two data sets' sizes and how many samples they share."""

    sigma_samples: int
    mcts_samples: int
    shared: int  # (problem, temperature, user, assistant) present in both

    @property
    def identical(self) -> bool:
        """Sample for sample the same data: the two fine-tunes trained on the same set."""
        return self.shared == self.sigma_samples == self.mcts_samples

    @property
    def note(self) -> str:
        if self.identical:
            return f"no revision was accepted: sigma = mcts (the same {self.sigma_samples} samples)"
        return (
            f"sigma {self.sigma_samples} samples, mcts {self.mcts_samples}: "
            f"{self.sigma_samples - self.shared} revised, {self.shared} the same"
        )


def compare_variants(sigma: pl.DataFrame, mcts: pl.DataFrame) -> VariantComparison:
    """Compare the `sigma` and `mcts` SFT tables sample by sample (the variant column aside)."""

    def keys(frame: pl.DataFrame) -> set[tuple[str, str, tuple[str, ...]]]:
        return {
            (row["problem_id"], row["temperature"], tuple(m["content"] for m in row["messages"]))
            for row in frame.select("problem_id", "temperature", "messages").iter_rows(named=True)
        }

    return VariantComparison(sigma.height, mcts.height, len(keys(sigma) & keys(mcts)))
