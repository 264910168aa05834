"""Gold answers a grader can use: the normalisation rules on a fixture, then the bounded checker, on CHAMP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sigma_assets.data.problems import load_problems
from sigma_assets.method.answers import extract_answer
from sigma_assets.method.gold_answers import (
    BOUND,
    EMPTY,
    NO_SUCH_VALUE,
    PROSE,
    YES_NO,
    gradeable_golds,
    normalize_gold,
    prose_word,
    reason_category,
)
from sigma_assets.method.grading import (
    NO_VERDICT,
    PARSE_ADDS,
    PARSE_DROPS,
    UNPARSED,
    AnswerChecker,
    gold_alternatives,
)

# (as a source writes it, as it is stored); alternatives are joined by " or equivalently ".
KEPT = [
    ("239", "239"),
    # alternatives a prediction may match
    ("C(10, 5), or equivalently 252", "\\binom{10}{5} or equivalently 252"),
    ("sqrt(3)/3, or equivalently 1/sqrt(3)", "sqrt(3)/3 or equivalently 1/sqrt(3)"),
    (
        "C(n, 4), or an equivalent form such as n(n-1)(n-2)(n-3)/4!",
        "\\binom{n}{4} or equivalently n(n-1)(n-2)(n-3)/4!",
    ),
    (
        "sum_(i=1)^n i^3, or equivalently (n(n+1)/2)^2",
        "\\sum_{i=1}^{n} i^3 or equivalently (n(n+1)/2)^2",
    ),
    # an approximation is not the answer
    ("5/14, or approximately 35.7%", "5/14"),
    # remarks in parentheses; a parenthesis of mathematics stays
    ("100 (i.e., all values)", "100"),
    ("k-2 (i.e., all of them)", "k-2"),
    ("0 (none of the values)", "0"),
    ("((-1)^(n+1)+n+1)/(n+2) (i.e., 1 if for odd n, and n/(n+2) for even n)", "((-1)^(n+1)+n+1)/(n+2)"),
    ("(x=8, y=2), (x=2, y=8)", "(x=8, y=2), (x=2, y=8)"),
    # one value behind a lead-in
    ("0 is the only possible value", "0"),
    ("-3 is the only possible value", "-3"),
    ("The limit exists and is equal to (a+3b)/2", "(a+3b)/2"),
    ("The only possible value for the limit is sqrt(a)", "sqrt(a)"),
    # lists of values and of solutions
    ("376 and 625", "376, 625"),
    ("1, 4 and 9", "1, 4, 9"),
    ("x=0, y=2 and x=9, y=11", "(x=0, y=2), (x=9, y=11)"),
    ("f(x)=0 or f(x)=1", "f(x)=0, f(x)=1"),
    ("\\frac{1}{2}\\text{ or } 2", "\\frac{1}{2}, 2"),
    # units and counted nouns after a number
    ("2 inequalities", "2"),
    ("98 values", "98"),
    ("18\\text{ cm}^2", "18"),
    ("\\$32", "32"),
    # thousands separators
    ("1,000", "1000"),
    ("1{,}000", "1000"),
    ("10,\\!000", "10000"),
    ("1,234,567 dollars", "1234567"),
    # LaTeX wrappers
    ("$\\frac{1}{2}$", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ("The answer is $\\boxed{7}$.", "7"),
    ("\\(x^2+1\\)", "x^2+1"),
    ("\\text{(C)}", "(C)"),
    # plain-text notation math-verify misreads
    ("2^floor(n/2)*floor(n/2)!", "2^{\\lfloor n/2 \\rfloor}*{\\lfloor n/2 \\rfloor}!"),
    ("sum_(k=1)^n 1/k", "\\sum_{k=1}^{n} 1/k"),
    ("2C(10, 5)", "2\\cdot \\binom{10}{5}"),
    ("x^3−x^2+1", "x^3-x^2+1"),
    # products of variables are not words
    ("(x+y+z)(x^2+y^2+z^2-xy-yz-xz)", "(x+y+z)(x^2+y^2+z^2-xy-yz-xz)"),
    ("x \\in [1, 2]", "x \\in [1, 2]"),
]

# (as a source writes it, the category of the reason it is skipped)
SKIPPED = [
    ("No", YES_NO),
    ("Yes", YES_NO),
    ("\\text{yes}", YES_NO),
    ("Yes, and the sequence is 1/2^3, 1/2^6, 1/2^9, ...", YES_NO),
    ("No integer solutions", NO_SUCH_VALUE),
    ("No such values", NO_SUCH_VALUE),
    ("None", NO_SUCH_VALUE),
    ("There are no prime numbers in the sequence", NO_SUCH_VALUE),
    ("The limit does not exist", NO_SUCH_VALUE),
    ("It is not possible", NO_SUCH_VALUE),
    ("At least 1 number", BOUND),
    ("At most 0 values (i.e., no such values)", BOUND),
    ("Always greater than 20", BOUND),
    ("Exactly one", PROSE),
    ("Infinitely many solutions", PROSE),
    ("x(n)<y(n-1) for all n≥3", PROSE),
    ("The sequence is not periodic", PROSE),
    ("\\text{Devon}", PROSE),
    ("5 squared", PROSE),  # the word changes the value: not a unit to drop
    ("", EMPTY),
    ("  ", EMPTY),
]


@pytest.mark.parametrize(("written", "stored"), KEPT)
def test_normalisation_keeps_the_mathematical_part(written: str, stored: str) -> None:
    gold = normalize_gold(written)
    assert (gold.answer, gold.reason) == (stored, "")
    # Stored answers normalise to themselves, so reloading a stored table changes nothing.
    assert normalize_gold(stored).answer == stored


@pytest.mark.parametrize(("written", "category"), SKIPPED)
def test_answers_that_are_not_mathematics_are_skipped_with_a_reason(written: str, category: str) -> None:
    gold = normalize_gold(written)
    assert gold.answer is None
    assert reason_category(gold.reason) == category


def test_prose_words_and_products_of_variables() -> None:
    assert prose_word("2 inequalities") == "inequalities"
    assert prose_word("\\frac{\\sqrt{3}}{2} + \\sin x") is None  # commands and functions are not words
    assert prose_word("ab+bc+ca") is None
    assert prose_word("x is 3") == "is"


def test_alternatives_split_only_at_the_joiner() -> None:
    assert gold_alternatives("\\binom{10}{5} or equivalently 252") == ["\\binom{10}{5}", "252"]
    assert gold_alternatives("f(x)=0, f(x)=1") == ["f(x)=0, f(x)=1"]  # a set, not alternatives


@pytest.fixture(scope="module")
def checker() -> Iterator[AnswerChecker]:
    with AnswerChecker(timeout_s=5.0) as c:
        yield c


def test_checker_refuses_answers_it_would_misread(checker: AnswerChecker) -> None:
    reasons = checker.ungradeable_reasons(
        [
            "2^floor(n/2)*floor(n/2)!",  # math-verify reads 2: a model answering 2 would be right
            "x(x-1)(x-2)\\cdots(x-2022)",  # \cdots becomes a variable s
            "x(x-1)(x-2)...(x-2022)",  # only a string comes back
            "2^{\\lfloor n/2 \\rfloor}*{\\lfloor n/2 \\rfloor}!",
            "\\binom{n+1}{2m+1}",
            "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
            "\\alpha + e^{2}",
        ]
    )
    assert [reason_category(r) if r else None for r in reasons] == [
        PARSE_DROPS,
        PARSE_ADDS,
        UNPARSED,
        None,
        None,
        None,
        None,
    ]


def test_gradeable_golds_drop_a_failing_alternative_and_skip_plain_numbers(checker: AnswerChecker) -> None:
    before = checker.worker_checks
    assert [g.answer for g in gradeable_golds(["7", "-2", "3.5"], checker)] == ["7", "-2", "3.5"]
    assert checker.worker_checks == before  # plain numbers never reach the worker
    unconverted, broken = gradeable_golds(
        ["sum_(i=1)^n i^3 or equivalently (n(n+1)/2)^2", "x(x-1)(x-2)...(x-2022)"], checker
    )
    assert (unconverted.answer, unconverted.reason) == ("(n(n+1)/2)^2", "")
    assert (broken.answer, broken.reason) == (None, UNPARSED)


def test_gold_checks_are_bounded() -> None:
    answers = ["\\frac{1}{3}", "x^2+\\sqrt{y}"]
    with AnswerChecker(timeout_s=1e-4) as tiny:
        reasons = tiny.ungradeable_reasons(answers)
        # A LaTeX parse takes milliseconds, so each answer should miss its 0.1 ms deadline; an answer
        # that overran is refused (never waved through), one that made it is gradeable.
        assert tiny.timeouts >= 1
        assert reasons.count(NO_VERDICT) == tiny.timeouts
        assert set(reasons) <= {NO_VERDICT, None}


def test_champ_keeps_only_gradeable_problems_and_grades_boxed_252(checker: AnswerChecker) -> None:
    loaded = load_problems("champ", checker=checker)
    assert len(loaded.problems) + len(loaded.skipped) == 270  # every row is kept or listed
    assert {reason_category(s.reason) for s in loaded.skipped} <= {
        YES_NO,
        NO_SUCH_VALUE,
        BOUND,
        PROSE,
        UNPARSED,
        PARSE_DROPS,
        PARSE_ADDS,
        NO_VERDICT,
    }
    assert all(s.problem_id and s.answer is not None for s in loaded.skipped)
    for problem in loaded.problems:
        assert all(prose_word(form) is None for form in gold_alternatives(problem.answer)), problem
    by_id = {p.problem_id: p for p in loaded.problems}
    ten_choose_five = by_id["champ-P_Combinatorics_2"]  # written "C(10, 5), or equivalently 252"
    twice = by_id["champ-P_Combinatorics_27"]  # written "2*C(10, 5), or equivalently 504"
    solutions = [
        "Choose the 5 positions among 10, so the answer is $\\boxed{252}$.",
        "The count is $\\boxed{\\binom{10}{5}}$.",
        "So we get \\boxed{250}.",
        "Twice that: \\boxed{504}.",
        "Twice that: \\boxed{254}.",  # what 2\binom{10}{5} reads as when written without `*`
    ]
    verdicts = checker.check_many(
        [(ten_choose_five.answer, extract_answer(s)) for s in solutions[:3]]
        + [(twice.answer, extract_answer(s)) for s in solutions[3:]]
    )
    assert verdicts == [True, True, False, True, False]
