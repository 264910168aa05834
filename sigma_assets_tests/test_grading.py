"""Answer extraction and math-verify equality, against the real library (worker processes included)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from sigma_assets.method.answers import extract_answer
from sigma_assets.method.grading import AnswerChecker, answers_match, normalize_answer

# `(10^{100000})!` parses instantly but sympy's comparison runs for far longer than any test timeout.
HANGING_GOLD = "(10^{100000})!"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So we get $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("Nested: \\boxed{\\sqrt{\\frac{a^{2}}{b}}}", "\\sqrt{\\frac{a^{2}}{b}}"),
        ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),
        ("Therefore $\\boxed 5$", "5"),
        ("A set: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("Boxed beats phrase. The answer is 7. Hence \\boxed{8}.", "8"),
        ("Adding up, the answer is 42.", "42"),
        ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("THE ANSWER IS: 12", "12"),
        ("So the answer is 42 apples. Done.", "42"),
        ("Thus the answer is 1,234.", "1234"),
        ("We have 3 apples and 5 pears, so 8 fruits", "8"),
        ("Revenue was 1,234,567 dollars", "1234567"),
        ("The temperature dropped to -7 degrees", "-7"),
        ("Compute 5-3 which gives 2", "2"),
        ("Half of it is 2.5", "2.5"),
        ("A quarter is 3/4", "3/4"),
        ("The sum is 10.", "10"),
        # published answer markers: GSM8K's and PRM800K's
        ("Step 4: 3 + 4 = 7\nStep 5: #### 7\nStep 6: The answer is: 7", "7"),
        ("So 16 + 2 = 18.\n#### 18", "18"),
        ("Therefore, the speed is 12*pi inches per second.\n\n# Answer\n\n12*pi", "12*pi"),
        ("No numbers here at all", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_normalize_answer() -> None:
    assert normalize_answer(" $1,234.0$ ") == "1234"
    assert normalize_answer("\\frac{1}{ 2}") == "\\frac{1}{2}"
    # Commas inside tuples are kept: (1,234) is not the number 1234.
    assert normalize_answer("(1,234)") == "(1,234)"


@pytest.fixture(scope="module")
def checker() -> Iterator[AnswerChecker]:
    with AnswerChecker(timeout_s=5.0) as c:
        yield c


def test_equality(checker: AnswerChecker) -> None:
    pairs: list[tuple[str, str | None]] = [
        ("1/2", "\\frac{1}{2}"),
        ("0.5", "1/2"),  # math-verify compares numerically: 0.5 equals 1/2
        ("1/2", "0.5"),
        ("2", "3"),
        ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
        ("1234", "1,234"),
        ("x=2", "2"),
        ("2", None),
        ("2", ""),
    ]
    assert checker.check_many(pairs) == [True, True, True, False, True, True, True, False, False]


def test_money_constants_and_case_are_graded_as_values(checker: AnswerChecker) -> None:
    pairs: list[tuple[str, str | None]] = [
        ("18", "\\$18"),  # a boxed amount of money
        ("\\$36", "36"),  # a gold written as money
        ("\\$1,200", "1200"),
        ("12\\pi", "12*pi"),  # a constant written in plain text (PRM800K)
        ("East", "east"),
        ("\\text{East}", "EAST"),
        ("12\\pi", "12"),
        ("\\$36", "35"),
        ("East", "West"),
    ]
    assert checker.check_many(pairs) == [True] * 6 + [False] * 3


def test_gold_first_asymmetry(checker: AnswerChecker) -> None:
    # math-verify accepts a set prediction for a relation gold, but not the other way round.
    assert checker.check("1<x<2", "(1,2)") is True
    assert checker.check("(1,2)", "1<x<2") is False
    assert answers_match("1<x<2", "(1,2)", checker) is True


def test_fast_path_and_cache(checker: AnswerChecker) -> None:
    before = checker.worker_checks
    assert checker.check_many([("1,000", "1000"), ("7", " $7.0$ ")]) == [True, True]
    assert checker.worker_checks == before  # equal after normalisation: no math-verify call

    pairs = [("\\frac{2}{3}", f"{k}/{k + 1}") for k in range(1, 40)]
    first = checker.check_many(pairs)
    assert first == [k == 2 for k in range(1, 40)]
    sent = checker.worker_checks
    assert checker.check_many(pairs + pairs) == first + first  # repeats are served from the cache
    assert checker.worker_checks == sent


def test_many_pairs_one_round_trip_is_fast(checker: AnswerChecker) -> None:
    pairs = [(str(k), str(k + k % 2)) for k in range(300)]
    t0 = time.monotonic()
    assert checker.check_many(pairs) == [k % 2 == 0 for k in range(300)]
    assert time.monotonic() - t0 < 10


def _reaped(pid: int) -> bool:
    """True once `pid` is no longer our un-waited child (not running, not a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # (0, 0) while running; reaping a zombie here also means a leak
    except ChildProcessError:
        return True
    return False


def test_timeout_kills_only_the_stuck_pair_and_restarts() -> None:
    with AnswerChecker(timeout_s=1.0) as c:
        assert c.check("1/2", "0.5")  # start the worker so its pid is known
        (old_pid,) = c.worker_pids
        t0 = time.monotonic()
        results = c.check_many([("1/3", "2/6"), (HANGING_GOLD, "1"), ("2", "3"), ("1/2", "\\frac{1}{2}")])
        elapsed = time.monotonic() - t0
        assert results == [True, False, False, True]  # pairs after the hang were still checked
        assert c.timeouts == 1
        assert elapsed < 10
        (new_pid,) = c.worker_pids
        assert new_pid != old_pid
        assert _reaped(old_pid)  # killed and joined: no zombie
        # The timed-out pair is cached as wrong, so asking again costs nothing.
        assert c.check(HANGING_GOLD, "1") is False
        assert c.timeouts == 1
    assert c.worker_pids == []
    assert _reaped(new_pid)


def test_tiny_timeout_fails_checks_then_normal_checker_works() -> None:
    pairs = [("1/2", "0.5"), ("\\frac{1}{3}", "2/6")]
    with AnswerChecker(timeout_s=1e-4) as tiny:
        results = tiny.check_many(pairs)
        # A LaTeX parse takes milliseconds, so each pair should miss its 0.1 ms deadline; a pair that
        # somehow made it must then be right. Either way every miss counted and cost exactly that pair.
        assert tiny.timeouts >= 1
        assert sum(results) == len(pairs) - tiny.timeouts
        assert tiny.checks == len(pairs)
    with pytest.raises(RuntimeError):
        tiny.check("1", "2")  # closed
    with AnswerChecker(timeout_s=5.0) as normal:
        assert normal.check_many(pairs) == [True, True]
        assert normal.timeouts == 0
