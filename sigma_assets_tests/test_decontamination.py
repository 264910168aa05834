"""Decontamination (`training.decontamination`): normalised text and shared 8-word runs."""

from __future__ import annotations

from sigma_assets.training.decontamination import EvalIndex, decontaminate, ngrams, normalize_text

MATH = "Find the number of ordered pairs $(a, b)$ of positive integers such that $a + b = 1000$."


def test_texts_are_compared_normalised():
    assert normalize_text("  Find $x^2$,  please!") == "find x 2 please"
    assert len(ngrams("one two three four five six seven eight nine")) == 2
    assert ngrams("too short to share eight") == set()


def test_a_problem_overlaps_by_its_text_or_by_a_run_of_eight_words():
    index = EvalIndex()
    index.add("math", [MATH])
    index.add("gsm8k", ["Tom has 3 apples. How many apples does Tom have?"])
    assert index.overlaps(MATH.upper()) == ["math"]
    assert index.overlaps("Problem 12 (AIME). " + MATH.replace("1000", "2024")) == ["math"]
    assert index.overlaps("TOM HAS 3 APPLES! How many apples does Tom have") == ["gsm8k"]
    assert index.overlaps("Find the number of ordered pairs of primes below 50.") == []


def test_decontaminate_lists_the_removed_problems_per_set():
    index = EvalIndex()
    index.add("math", [MATH])
    index.add("heldout", ["What is 3 + 6?"])
    removed = decontaminate(
        [("p1", MATH), ("p1", MATH), ("p2", "What is 3+6?"), ("p3", "What is 4 + 4?")], index
    )
    assert removed.removed == {"math": ["p1"], "heldout": ["p2"]}
    assert removed.counts == {"math": 1, "heldout": 1}
    assert removed.problem_ids == {"p1", "p2"}
