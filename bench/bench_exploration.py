"""Sibling exploration with and without re-selecting terminals, and the yield of the embedded run.

    .venv/bin/python bench/bench_exploration.py [--bundled] [--yield-from data] [--write docs/benchmarks.md]

- Exploration: the same problems searched twice, side by side: classic UCT (a terminal reached again is
  re-backed up, `reselect_terminals=True`) and the search as it runs (exhausted subtrees are skipped).
  Figures: siblings of the selected paths, their mean visits, the share whose outcome was reached (a
  terminal, not one rollout), solved share, requests. On a scripted policy always; on the bundled
  SmolLM2 with the embedded budget with `--bundled` (minutes on 2 cores).
- Yield: problems whose refined path is complete, correct and explicitly answered, per temperature,
  read from the storage root the README's first command wrote.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.method.answers import final_answer
from sigma_assets.method.budgets import SMALL_SEARCH
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.method.mcts import MCTSSettings, run_search
from sigma_assets.method.search_tree import selected_path
from sigma_assets.method.siblings import exploration_stats, sibling_sets
from sigma_assets.testing.seeded_policy import seeded_policy

# Steps that keep reasoning, answer right (1 in 5) or answer wrong; rollouts that mostly answer 4.
scripted_policy = seeded_policy(
    [
        (0.2, lambda rng: "The answer is 4."),
        (0.25, lambda rng: f"The answer is {rng.choice([3, 5, 6])}."),
        (1.0, lambda rng: f"consider {rng.randrange(10_000)}"),
    ],
    [
        (0.8, lambda rng: f"so the answer is {rng.choice(['4', '4', '5', '6'])}."),
        (0.2, lambda rng: "hmm"),
    ],
)


def exploration(problems, generate, check, settings: MCTSSettings) -> dict[str, float]:
    started = time.perf_counter()
    result = run_search(problems, generate, check, settings)
    seconds = time.perf_counter() - started
    stats = exploration_stats([r for tree in result.trees for r in sibling_sets(tree)])
    solved = sum(selected_path(t) is not None for t in result.trees)
    return {
        "siblings": stats.siblings,
        "mean_visits": stats.mean_visits,
        "reached": stats.reached_share,
        "solved": solved / len(result.trees),
        "requests": result.requests,
        "seconds": seconds,
    }


def side_by_side(problems, generate, check, settings: MCTSSettings) -> list[tuple[str, dict[str, float]]]:
    return [
        (
            "classic UCT (re-selects terminals)",
            exploration(problems, generate, check, replace(settings, reselect_terminals=True)),
        ),
        ("exhausted subtrees skipped (now)", exploration(problems, generate, check, settings)),
    ]


def bundled_generate():
    from sigma_assets.llm.backends.hf_local import TransformersBackend
    from sigma_assets.llm.client import LLMClient
    from sigma_assets.llm.models import resolve_local_model
    from sigma_assets.settings import BUNDLED_SMOLLM2

    backend = TransformersBackend(
        resolve_local_model(BUNDLED_SMOLLM2), device="cpu", model_name=BUNDLED_SMOLLM2
    )
    return LLMClient(backend)


def exploration_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    lines = [
        f"**{title}**",
        "",
        "| search | siblings | mean sibling visits | outcome reached | solved share | requests |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['siblings']} | {r['mean_visits']:.2f} | {r['reached']:.0%} | {r['solved']:.0%} "
            f"| {r['requests']} |"
        )
    return [*lines, ""]


def yield_table(root: Path) -> list[str]:
    """Per temperature: problems searched, with a selected path, and with a refined path that ends in
    an explicit answer equal to the gold one (re-checked here from the stored steps)."""
    problems = pl.read_parquet(root / "assets" / "raw_problems" / "*.parquet")
    gold = dict(zip(problems["problem_id"], problems["answer"], strict=True))
    lines = [
        f"**Yield of the embedded run** ({len(problems)} bundled problems; read from `{root.name}/`)",
        "",
        "| temperature | with a correct leaf | refined, explicit answer = gold | share of problems |",
        "| --- | --- | --- | --- |",
    ]
    with AnswerChecker() as checker:
        temperatures = sorted({p.stem for p in (root / "assets" / "refined_paths").glob("*/*.parquet")})
        for temperature in temperatures:
            refined = pl.read_parquet(root / "assets" / "refined_paths" / "*" / f"{temperature}.parquet")
            answers = [final_answer("\n\n".join(steps)).answer for steps in refined["refined_steps"]]
            ok = checker.check_many(
                [(gold[p], a) for p, a in zip(refined["problem_id"], answers, strict=True)]
            )
            lines.append(f"| {temperature} | {refined.height} | {sum(ok)} | {sum(ok) / len(problems):.0%} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundled", action="store_true", help="also search with the bundled SmolLM2")
    parser.add_argument("--yield-from", type=Path, help="storage root of the embedded run (e.g. data)")
    parser.add_argument("--write", type=Path, help="replace the exploration section of this markdown file")
    args = parser.parse_args()
    scripted = [(f"p{i}", f"What is {i} + {4 - i}?", "4") for i in range(64)]
    settings = MCTSSettings(simulations=16, max_depth=6)
    lines = [
        "## Sibling exploration and yield",
        "",
        "Command: `.venv/bin/python bench/bench_exploration.py --bundled --yield-from data "
        "--write docs/benchmarks.md`. Both searches run on the same problems in one run. "
        '"Outcome reached": the sibling\'s best continuation is a terminal the search reached, not a '
        "single rollout's estimate.",
        "",
    ]
    with AnswerChecker() as checker:
        rows = side_by_side(scripted, scripted_policy, checker.check_many, settings)
        lines += exploration_table("Scripted policy, 64 problems, 16 simulations, depth 6", rows)
        if args.bundled:
            problems = arithmetic_problems(12)
            budget = replace(SMALL_SEARCH, temperature=0.7)
            with bundled_generate() as client:
                rows = side_by_side(problems, client.generate, checker.check_many, budget)
            title = (
                f"Bundled SmolLM2-135M, the 12 embedded problems, the embedded budget ({budget.simulations} "
                f"simulations, depth {budget.max_depth}, temperature 0.7)"
            )
            lines += exploration_table(title, rows)
    if args.yield_from:
        lines += yield_table(args.yield_from)
    report(lines, args.write, "## Sibling exploration and yield")


if __name__ == "__main__":
    main()
