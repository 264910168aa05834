"""Sampled metrics (`evaluation.metrics`) on a fixture of sampled answers worked out by hand."""

from __future__ import annotations

import math

import pytest

from sigma_assets.evaluation.metrics import SampledAnswer, majority_correct, pass_at_k, sampled_metrics

# Three problems, four samples each: (prediction, correct).
FIXTURE = {
    "p1": [("4", True), ("4", True), ("5", False), ("4", True)],  # 3/4 right; majority 4: right
    "p2": [("7", False), ("6", True), ("7", False), (None, False)],  # 1/4; majority 7: wrong
    "p3": [("\\frac{1}{2}", False), ("2", False), ("3", False), ("2", False)],  # 0/4
}


def answers() -> list[SampledAnswer]:
    return [SampledAnswer(pid, pred, ok) for pid, samples in FIXTURE.items() for pred, ok in samples]


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 2)


def test_sampled_metrics_of_the_fixture():
    m = sampled_metrics(answers())
    shares = [0.75, 0.25, 0.0]
    mean = sum(shares) / 3
    se = math.sqrt(sum((s - mean) ** 2 for s in shares) / 2 / 3)
    assert (m.samples, m.problems) == (4, 3)
    assert m.pass_at_1 == pytest.approx(1 / 3)
    assert m.pass_at_1_se == pytest.approx(se)
    assert m.maj_at_k == pytest.approx(1 / 3)  # only p1's majority answer is right
    assert m.pass_at_k == pytest.approx(2 / 3)  # p1 and p2 have a right sample


def test_majority_vote_counts_equal_answers_and_breaks_ties_by_the_first():
    tie = [SampledAnswer("p", "3", True), SampledAnswer("p", "4", False), SampledAnswer("p", " 4 ", False)]
    assert not majority_correct(tie)  # "4" twice
    first = [SampledAnswer("p", "3", True), SampledAnswer("p", "4", False)]
    assert majority_correct(first)  # a tie: the first answer given
    assert not majority_correct([SampledAnswer("p", None, False)])


def test_problems_with_unequal_samples_are_refused():
    with pytest.raises(ValueError, match="different numbers of samples"):
        sampled_metrics(
            [SampledAnswer("a", "1", True), SampledAnswer("a", "1", True), SampledAnswer("b", "1", True)]
        )
