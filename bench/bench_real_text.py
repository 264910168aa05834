"""The rules that read model text, measured on real model outputs (`sigma_assets.testing.real_text`).

    .venv/bin/python bench/bench_real_text.py [--write docs/benchmarks.md] [--report docs/real_text.md]

Prints the figures per source; `--report` writes every rejected base sample, every search-rule miss and
the verdicts on the degenerate variants, for reading.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from common import report

from sigma_assets.method.grading import AnswerChecker
from sigma_assets.testing.real_text import (
    FIT,
    HELD_OUT,
    LABELLED,
    SOURCES,
    VARIANT_REASONS,
    GradedText,
    SourceFigures,
    evaluation_agreement,
    measure,
    tree_paths_kept,
)

HEADING = "## Rules on real model text"
COMMAND = ".venv/bin/python bench/bench_real_text.py --write docs/benchmarks.md --report docs/real_text.md"
TITLES = {
    "qwen": "qwen (MATH)",
    "nemo-skills": "nemo-skills (MATH)",
    "theoremqa": "theoremqa (GPT-4)",
    "bbm-arithmetic": "bbm-arithmetic (PaLM 2)",
    "prm800k": "prm800k (GPT-4) *held out*",
    "mr-gsm8k": "mr-gsm8k (GSM8K models) *held out*",
}


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f} %)" if whole else "–"


def _excerpt(text: str, width: int = 220) -> str:
    # Control characters (token soup holds some) are written escaped, so the report stays text.
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in " ".join(text.split()))
    return flat if len(flat) <= width else flat[: width // 2] + " … " + flat[-width // 2 :]


def figures_section(results: dict[str, SourceFigures], trees: tuple[int, int]) -> list[str]:
    sources = [s for s in SOURCES if s in results]
    lines = [
        HEADING,
        "",
        f"Command: `{COMMAND}` (`docs/real_text.md` lists every rejected sample and every flag).",
        "Fixtures: `sigma_assets_tests/data/real_outputs/`. The rules were decided on "
        + ", ".join(f"`{s}`" for s in FIT)
        + "; "
        + ", ".join(f"`{s}`" for s in HELD_OUT)
        + " were held out and measured before any of their failures was read. Base set: the samples that",
        "the source's grader and this project's evaluation grading (`extract_answer` + the gold's kind) both",
        "call correct, that no human marked wrong, less those that run on into a new question after their",
        "answer and those that state an equation false as written (each of which must be rejected).",
        "",
        "| figure | " + " | ".join(TITLES[s] for s in sources) + " | target |",
        "| --- | " + " | ".join("---" for _ in sources) + " | --- |",
    ]

    def row(name: str, cell, target: str, only: Sequence[str] = ()) -> None:
        cells = [cell(results[s]) if not only or s in only else "" for s in sources]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    row("samples / source-correct / base", lambda f: f"{f.samples} / {f.source_correct} / {len(f.base)}", "")
    row("`final_answer` keeps, of base", lambda f: _share(len(f.kept), len(f.base)), "≥ 99 %")
    row(
        "base through the search rule, step by step (within depth 16): a +1 terminal",
        lambda f: _share(f.plus_one, f.fit),
        "≥ 99 %",
    )
    row(
        "run on into a new question: rejected as one",
        lambda f: _share(sum(v == "new_question" for _, v in f.runaway), len(f.runaway)),
        "all",
    )
    row(
        "state a false equation (read by hand): rejected as `false_arithmetic`",
        lambda f: _share(
            sum(v == "false_arithmetic" for _, v in f.false_as_written), len(f.false_as_written)
        ),
        "all",
    )
    row(
        "human-marked first errors holding a false arithmetic claim: flagged",
        lambda f: _share(len(f.flagged), len(f.false_claim_steps)),
        "≥ 85 %",
        LABELLED,
    )
    row(
        "flags where every stated equation holds",
        lambda f: str(len(f.flags_where_all_hold)),
        "0",
    )
    row(
        "flags on steps humans rated correct (each false as written)",
        lambda f: str(len(f.rated_ok_flags)),
        "",
        LABELLED,
    )
    for kind, reasons in VARIANT_REASONS.items():
        row(
            f"variant `{kind}`: rejected as `{'` or `'.join(reasons)}`",
            lambda f, kind=kind: _share(*f.variant_rejected(kind)),
            "≥ 95 %",
        )
    row("source says wrong, kept as correct", lambda f: str(len(f.added)), "source-grader misses only")
    lines += [
        "",
        f"Real search trees (openr): of the {trees[1]} root-to-leaf paths whose box holds the gold answer, "
        f"`final_answer` keeps {trees[0]}.",
        "",
    ]
    return lines


def report_text(results: dict[str, SourceFigures]) -> str:
    out = [
        "# Real samples the rules reject, and every flag, with the reasons",
        "",
        f"Written by `{COMMAND}`.",
        "",
    ]

    def line(sample: GradedText, why: str) -> str:
        return f"- `{sample.source}` {sample.key} (gold `{sample.gold}`): **{why}**. {_excerpt(sample.text)}"

    for source, fig in results.items():
        sections = [
            (f"Base samples rejected ({len(fig.rejected)} of {len(fig.base)})", fig.rejected),
            (f"Run on into a new question ({len(fig.runaway)})", fig.runaway),
            (f"State a false equation, read by hand ({len(fig.false_as_written)})", fig.false_as_written),
            (f"Search rule: no +1 terminal ({len(fig.search_misses)})", fig.search_misses),
            (f"Source says wrong, kept as correct ({len(fig.added)})", [(s, "kept") for s in fig.added]),
            (f"False claims in human-marked errors not flagged ({len(fig.missed)})", fig.missed),
            (f"Flags on steps humans rated correct ({len(fig.rated_ok_flags)})", fig.rated_ok_flags),
            (
                f"Flags where every stated equation holds ({len(fig.flags_where_all_hold)})",
                fig.flags_where_all_hold,
            ),
        ]
        out += [f"## {source}", ""]
        if fig.marked_wrong_right_answer:
            out += [
                "Right answers reached through a step a human marked wrong: "
                f"{dict(fig.marked_wrong_right_answer)}",
                "",
            ]
        for title, rows in sections:
            out += [f"### {title}", "", *([line(s, why) for s, why in rows] or ["(none)"]), ""]
        out += ["### Degenerate variants of kept samples: verdicts", ""]
        out += [f"- `{kind}`: {dict(counts)}" for kind, counts in fig.variants.items()]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="put the figures in this markdown file")
    parser.add_argument("--report", type=Path, help="write the report of rejected samples here")
    parser.add_argument("--sources", nargs="*", default=list(SOURCES), help="measure only these sources")
    args = parser.parse_args()
    with AnswerChecker(workers=2) as checker:
        results = measure(checker.check_many, sources=args.sources)
        reached, not_kept = tree_paths_kept(checker.check_many)
        agreement = evaluation_agreement(checker.check_many)
    lines = figures_section(results, (reached - len(not_kept), reached))
    lines.insert(
        -1,
        "Evaluation grading (`extract_answer`, then the gold's kind) against each source's own grader: "
        + "; ".join(f"{source} {dict(counts)}" for source, counts in agreement.items() if source in results)
        + ".",
    )
    report(lines, args.write, HEADING)
    if args.report:
        args.report.write_text(report_text(results))


if __name__ == "__main__":
    main()
