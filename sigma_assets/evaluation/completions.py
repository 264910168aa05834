"""Every completion an evaluation generated, kept: `<root>/eval/<model>/<benchmark>.parquet`.

A re-run reads them back and generates only what is missing, so it re-scores without re-generating; the
grade is never read back, so a changed grader re-grades every stored completion. A row is reused only for
the same model (its training run, or the base model's name) and the same decoding. No Dagster imports.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import polars as pl

from sigma_assets.data.storage import StorageRoot, write_atomic
from sigma_assets.evaluation.scoring import GREEDY, Decoding, EvalSet, ScoredAnswer

COMPLETIONS_SCHEMA = {
    "benchmark": pl.String,
    "problem_id": pl.String,
    "sample": pl.Int64,  # 0: greedy; 1..k: sampled
    "completion": pl.String,
    "prediction": pl.String,
    "correct": pl.Boolean,
    "model": pl.String,
    "fingerprint": pl.String,
    "max_tokens": pl.Int64,
    "temperature": pl.Float64,
    "top_p": pl.Float64,
    "seed": pl.Int64,
}


def completions_path(root: StorageRoot, model: str, benchmark: str):
    return root.path("eval", model, f"{benchmark}.parquet")


def _decoding_of(sample: int, decoding: Decoding) -> tuple[int, float, float, int]:
    if sample == GREEDY:
        return decoding.max_tokens, 0.0, 1.0, 0
    return decoding.max_tokens, decoding.temperature, decoding.top_p, decoding.seed


def read_stored(
    root: StorageRoot, model: str, fingerprint: str, decoding: Decoding, eval_sets: Sequence[EvalSet]
) -> dict[tuple[str, str, int], str]:
    """(benchmark, problem_id, sample) -> completion, for the rows this model and decoding produced."""
    stored: dict[tuple[str, str, int], str] = {}
    for eval_set in eval_sets:
        path = completions_path(root, model, eval_set.name)
        if not path.exists():
            continue
        frame = pl.read_parquet(path.read_bytes())
        for row in frame.filter(pl.col("fingerprint") == fingerprint).iter_rows(named=True):
            if (row["max_tokens"], row["temperature"], row["top_p"], row["seed"]) == _decoding_of(
                row["sample"], decoding
            ):
                stored[(row["benchmark"], row["problem_id"], row["sample"])] = row["completion"]
    return stored


def write_completions(
    root: StorageRoot, model: str, fingerprint: str, decoding: Decoding, scored: Iterable[ScoredAnswer]
) -> dict[str, str]:
    """Write one file per benchmark (atomically); returns benchmark -> path."""
    by_benchmark: dict[str, list[dict]] = {}
    for s in scored:
        max_tokens, temperature, top_p, seed = _decoding_of(s.sample, decoding)
        by_benchmark.setdefault(s.benchmark, []).append(
            {
                "benchmark": s.benchmark,
                "problem_id": s.problem_id,
                "sample": s.sample,
                "completion": s.completion,
                "prediction": s.prediction,
                "correct": s.correct,
                "model": model,
                "fingerprint": fingerprint,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seed": seed,
            }
        )
    paths = {}
    for benchmark, rows in by_benchmark.items():
        buffer = io.BytesIO()
        pl.DataFrame(rows, schema=COMPLETIONS_SCHEMA).write_parquet(buffer)
        path = completions_path(root, model, benchmark)
        write_atomic(path, buffer.getvalue())
        paths[benchmark] = str(path)
    return paths
