"""The rules that read model text, measured on real model outputs (`sigma_assets.testing.real_text`).

    .venv/bin/python bench/bench_real_text.py [--write docs/benchmarks.md] [--report docs/real_text.md]

Prints the figures per source; `--report` writes every rejected base sample, every search-rule miss and
the verdicts on the degenerate variants, for reading.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import report

from sigma_assets.method.arithmetic import false_equation
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.testing.real_text import (
    SOURCES,
    VARIANT_REASONS,
    GradedText,
    SourceFigures,
    evaluation_agreement,
    load_graded_texts,
    measure,
    tree_paths_kept,
)

HEADING = "## Rules on real model text"
COMMAND = ".venv/bin/python bench/bench_real_text.py --write docs/benchmarks.md --report docs/real_text.md"


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f} %)" if whole else "0/0"


def _excerpt(text: str, width: int = 220) -> str:
    # Control characters (token soup holds some) are written escaped, so the report stays text.
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in " ".join(text.split()))
    return flat if len(flat) <= width else flat[: width // 2] + " … " + flat[-width // 2 :]


def figures_section(results: dict[str, SourceFigures], flags: list[str], trees: tuple[int, int]) -> list[str]:
    lines = [
        HEADING,
        "",
        f"Command: `{COMMAND}` (`docs/real_text.md` lists every rejected sample with its reason).",
        "Fixtures: `sigma_assets_tests/data/real_outputs/`. Base set: the samples that the source's grader",
        "and this project's evaluation grading (`extract_answer` + math-verify) both call correct, less",
        "those that run on into a new question after their answer (each of which must be rejected).",
        "",
        "| figure | qwen (MATH) | nemo-skills (MATH) | theoremqa (GPT-4) | target |",
        "| --- | --- | --- | --- | --- |",
    ]

    def row(name: str, cell, target: str) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(results[s]) for s in SOURCES) + f" | {target} |")

    row("samples / source-correct / base", lambda f: f"{f.samples} / {f.source_correct} / {len(f.base)}", "")
    row("`final_answer` keeps, of base", lambda f: _share(len(f.kept), len(f.base)), "≥ 98 % / 95 % / 95 %")
    row(
        "run on into a new question: rejected",
        lambda f: _share(sum(v != "kept" for _, v in f.runaway), len(f.runaway)),
        "all",
    )
    row(
        "step by step through the search rule: +1 at the last step (base within depth 16)",
        lambda f: _share(f.plus_one_at_last, f.fit),
        "≥ 95 % (qwen)",
    )
    for kind, reasons in VARIANT_REASONS.items():
        row(
            f"variant `{kind}`: rejected as `{'` or `'.join(reasons)}`",
            lambda f, kind=kind: _share(*f.variant_rejected(kind)),
            "≥ 95 %",
        )
    row("source says wrong, kept as correct", lambda f: str(len(f.added)), "source-grader misses only")
    samples = sum(f.samples for f in results.values())
    lines += [
        "",
        f"False equations flagged in all {samples} samples, each false as written: "
        + ", ".join(f"`{e}`" for e in flags)
        + ".",
        f"Real search trees (openr): of the {trees[1]} root-to-leaf paths whose box holds the gold answer, "
        f"`final_answer` keeps {trees[0]}.",
        "",
    ]
    return lines


def report_text(results: dict[str, SourceFigures]) -> str:
    out = ["# Real samples the rules reject, with the reasons", "", f"Written by `{COMMAND}`.", ""]

    def line(sample: GradedText, why: str) -> str:
        return f"- `{sample.source}` {sample.key} (gold `{sample.gold}`): **{why}**. {_excerpt(sample.text)}"

    for source, fig in results.items():
        sections = [
            (f"Base samples rejected ({len(fig.rejected)} of {len(fig.base)})", fig.rejected),
            (f"Run on into a new question ({len(fig.runaway)})", fig.runaway),
            (f"Search rule: no +1 at the last step ({len(fig.search_misses)})", fig.search_misses),
            (f"Source says wrong, kept as correct ({len(fig.added)})", [(s, "kept") for s in fig.added]),
        ]
        out += [f"## {source}", ""]
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
    args = parser.parse_args()
    with AnswerChecker(workers=2) as checker:
        results = measure(checker.check_many)
        reached, not_kept = tree_paths_kept(checker.check_many)
        agreement = evaluation_agreement(checker.check_many)
    flags = [e for group in load_graded_texts().values() for s in group if (e := false_equation(s.text))]
    lines = figures_section(results, flags, (reached - len(not_kept), reached))
    lines.insert(
        -1,
        "Evaluation grading (`extract_answer`, then the gold's kind) against each source's own grader: "
        + "; ".join(f"{source} {dict(counts)}" for source, counts in agreement.items())
        + ".",
    )
    report(lines, args.write, HEADING)
    if args.report:
        args.report.write_text(report_text(results))


if __name__ == "__main__":
    main()
