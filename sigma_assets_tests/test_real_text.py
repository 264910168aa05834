"""The rules that read model text, over the whole real fixtures (`sigma_assets.testing.real_text`).

The figures are pinned at or above the targets they must hold, on the sources the rules were decided on
and on those held out; `bench/bench_real_text.py` prints them and writes the report of every rejected
sample and every flag."""

from __future__ import annotations

import pytest

from sigma_assets.method.answers import final_answer
from sigma_assets.method.arithmetic import false_equation
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.testing.real_text import (
    FALSE_AS_WRITTEN,
    HELD_OUT,
    LABELLED,
    RUNAWAY_INTO_NEW_QUESTION,
    SOURCE_GRADER_MISSES,
    SOURCES,
    VARIANT_REASONS,
    SourceFigures,
    load_graded_texts,
    measure,
    tree_paths_kept,
)
from sigma_assets.testing.stated_arithmetic import false_claims

# Sources with a base set of correct, human-clean solutions (MR-GSM8K holds only marked-wrong reasoning).
WITH_BASE = [s for s in SOURCES if s != "mr-gsm8k"]


@pytest.fixture(scope="module")
def figures() -> dict[str, SourceFigures]:
    with AnswerChecker(workers=2) as checker:
        return measure(checker.check_many)


def test_some_sources_are_held_out_and_every_source_is_measured(figures: dict[str, SourceFigures]) -> None:
    assert set(HELD_OUT) <= set(figures) and set(figures) == set(SOURCES)
    assert len(figures["prm800k"].base) >= 50 and figures["mr-gsm8k"].wrong_steps >= 250


@pytest.mark.parametrize("source", WITH_BASE)
def test_the_strict_rule_keeps_real_correct_solutions(figures: dict[str, SourceFigures], source: str) -> None:
    fig = figures[source]
    assert len(fig.base) >= 20
    assert fig.kept_share >= 0.99, [(s.key, reason) for s, reason in fig.rejected]


@pytest.mark.parametrize("source", WITH_BASE)
def test_real_correct_solutions_fed_step_by_step_reach_a_correct_terminal(
    figures: dict[str, SourceFigures], source: str
) -> None:
    fig = figures[source]
    assert fig.fit >= 20
    assert fig.plus_one / fig.fit >= 0.99, fig.search_misses


@pytest.mark.parametrize("source", [s for s in LABELLED if s != "prm800k"])  # PRM800K marks no step wrong
def test_false_arithmetic_claims_that_humans_marked_as_the_first_error_are_flagged(
    figures: dict[str, SourceFigures], source: str
) -> None:
    fig = figures[source]
    assert len(fig.false_claim_steps) >= 40
    assert len(fig.flagged) / len(fig.false_claim_steps) >= 0.85, fig.missed


@pytest.mark.parametrize("source", SOURCES)
def test_no_flag_where_every_stated_equation_holds(figures: dict[str, SourceFigures], source: str) -> None:
    assert figures[source].flags_where_all_hold == []


def test_flags_on_steps_humans_rated_correct_are_false_as_written(figures: dict[str, SourceFigures]) -> None:
    rated_ok = [(s, flag) for fig in figures.values() for s, flag in fig.rated_ok_flags]
    assert rated_ok, "the labelled sources hold steps rated correct that are false as written"
    for sample, flag in rated_ok:
        step = next(
            st for st, label in zip(sample.steps, sample.labels, strict=True) if false_equation(st) == flag
        )
        assert any(not claim.holds for claim in false_claims(step)), (sample.key, flag)


def test_solutions_that_state_a_false_equation_are_rejected_for_it(figures: dict[str, SourceFigures]) -> None:
    samples = {(s.source, s.key): s for group in load_graded_texts().values() for s in group}
    # Read by hand: each equation is false as it stands in the text.
    assert {key: false_equation(samples[key].text) for key in FALSE_AS_WRITTEN} == FALSE_AS_WRITTEN
    verdicts = [verdict for fig in figures.values() for _, verdict in fig.false_as_written]
    assert len(verdicts) >= 6 and set(verdicts) == {"false_arithmetic"}


def test_every_solution_that_runs_on_into_a_new_question_is_rejected_as_one(
    figures: dict[str, SourceFigures],
) -> None:
    runaway = {source: {s.key: verdict for s, verdict in fig.runaway} for source, fig in figures.items()}
    assert {source: set(keys) for source, keys in runaway.items() if keys} == RUNAWAY_INTO_NEW_QUESTION
    assert {verdict for keys in runaway.values() for verdict in keys.values()} == {"new_question"}


@pytest.mark.parametrize("kind", list(VARIANT_REASONS))
def test_degenerate_variants_of_kept_solutions_are_rejected_for_the_right_reason(
    figures: dict[str, SourceFigures], kind: str
) -> None:
    for source in WITH_BASE:
        fig = figures[source]
        assert sum(fig.variants[kind].values()) >= 20
        assert fig.variant_rejected_share(kind) >= 0.95, (source, fig.variants[kind])


def test_no_correct_verdict_is_added_but_where_the_source_grader_misses(
    figures: dict[str, SourceFigures],
) -> None:
    added = {source: {s.key for s in fig.added} for source, fig in figures.items() if fig.added}
    assert added == SOURCE_GRADER_MISSES


def test_real_degenerate_outputs_are_rejected_each_for_its_own_reason() -> None:
    samples = {(s.source, s.key): s for group in load_graded_texts().values() for s in group}
    expected = {
        ("nemo-skills", "14"): "new_question",  # "Now solve the question.\n\nQuestion: ..."
        ("nemo-skills", "5"): "new_question",  # "Here's your question: ..."
        ("qwen", "48-3"): "garbage",  # token soup after the boxed answer
        ("theoremqa", "91"): "repetition",  # GPT-4 saying the same paragraphs again and again
        # GPT-4 circling with a template around new formulas: not a loop by what it is, and cut off
        ("theoremqa", "60"): "no_answer",
        ("qwen", "16-3"): "false_arithmetic",  # 29 - 10 - 1 = 19
    }
    assert {key: final_answer(samples[key].text).reason for key in expected} == expected


def test_every_path_of_real_search_trees_that_ends_in_the_gold_answer_is_kept() -> None:
    with AnswerChecker() as checker:
        reached, not_kept = tree_paths_kept(checker.check_many)
    assert reached >= 200
    assert not_kept == []
