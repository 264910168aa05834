"""Search outputs written where the IO manager keeps them, so the training stages can be run alone.

`raw_problems` per shard and `refined_paths` per (shard, temperature), in the stored schemas: each
problem's selected path states its answer explicitly; the refined path says the same more fully.
Some paths are made to exercise the SFT rules: a wrong final answer, no explicit answer, a drifted
revision (original kept), and identical paths at both temperatures (an exact duplicate).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.data.problems import RAW_PROBLEMS_SCHEMA
from sigma_assets.data.shards import shard_of
from sigma_assets.data.tables import polars_schema
from sigma_assets.method.refinement_records import REFINED_COLUMNS

TEMPERATURES = ("0.4", "0.7")


def refined_row(pid: str, original: list[str], refined: list[str], drift: bool = False) -> dict:
    return {
        "problem_id": pid,
        "original_steps": original,
        "refined_steps": original if drift else refined,
        "final_answer": None,
        "correct": True,
        "drift": drift,
        "rejected_revision": "wrong_answer" if drift else None,
        "regurgitation": False,
        "generic_feedback": False,
        "generic_depths": 0,
        "critique_mode": "step",
        "revision_mode": "step",
        "revision_attempts": 1,
        "calls": 2,
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "response_keys": [],
        "critic_model": "fixture",
    }


def write_search_outputs(root: Path, count: int = 24, num_shards: int = 2) -> dict[str, list[dict]]:
    """Write the tables under `root/assets/`; returns the refined rows per partition key."""
    problems = arithmetic_problems(count)
    by_partition: dict[str, list[dict]] = {}
    for shard_index in range(num_shards):
        shard = f"shard-{shard_index:03d}"
        mine = [p for p in problems if shard_of(p[0], num_shards) == shard]
        raw = pl.DataFrame(
            [
                {
                    "problem_id": pid,
                    "shard": shard,
                    "source": "arithmetic",
                    "problem": text,
                    "answer": answer,
                    "level": None,
                    "subject": None,
                }
                for pid, text, answer in mine
            ],
            schema=RAW_PROBLEMS_SCHEMA,
        )
        (root / "assets" / "raw_problems").mkdir(parents=True, exist_ok=True)
        raw.write_parquet(root / "assets" / "raw_problems" / f"{shard}.parquet")
        for temperature in TEMPERATURES:
            rows = []
            for index, (pid, text, answer) in enumerate(mine):
                original = [f"We work out (T={temperature}): {text}", f"The answer is {answer}."]
                refined = [
                    f"Read the numbers in: {text}",
                    f"Compute carefully (T={temperature}).",
                    f"The answer is {answer}.",
                ]
                if index == 0:  # a path whose final answer is wrong never becomes a sample
                    original = refined = ["We guess.", f"The answer is {int(answer) + 1}."]
                elif index == 1:  # no explicit final answer
                    original = refined = [f"We work out: {text}", f"It comes to {answer}"]
                elif index == 2:  # the revision drifted: the original path is kept
                    rows.append(refined_row(pid, original, refined, drift=True))
                    continue
                elif index == 3:  # same text at both temperatures: one exact duplicate
                    original = [f"We work out: {text}", f"The answer is {answer}."]
                    refined = [f"Read the numbers in: {text}", f"The answer is {answer}."]
                rows.append(refined_row(pid, original, refined))
            frame = pl.DataFrame(rows, schema=polars_schema(REFINED_COLUMNS))
            folder = root / "assets" / "refined_paths" / shard
            folder.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(folder / f"{temperature}.parquet")
            by_partition[f"{shard}|{temperature}"] = rows
    return by_partition
