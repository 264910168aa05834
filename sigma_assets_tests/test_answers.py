"""The strict answer rule (`answers.final_answer`) and its parts, on snippets of real model text.

Every snippet marked "real" is verbatim from the shared fixtures (sigma_assets_tests/data/real_outputs/);
`test_real_text.py` runs the rules over the whole fixtures."""

from __future__ import annotations

import pytest

from sigma_assets.method.answers import final_answer
from sigma_assets.method.arithmetic import false_equation
from sigma_assets.method.degeneration import garbage, loop, new_question


@pytest.mark.parametrize(
    "text",
    [
        # real: a side is read only when it is complete, signs included
        "\\[4x + 7x + 6 - 9 = 11x - 3\\]",
        "\\[1 - 2 = -1,\\]\n\\[-1 + 3 = 2,\\]\n\\[2 - 4 = -2.\\]",
        "\\[ 2 \\cdot 3 \\cdot 4 \\cdot 5 + 1 = 121. \\]",
        "\\[ x + 40 - 40 = 180 - 40 \\]",
        "\\[ 7 + 21 = 7(1 + 3) \\]",
        "\\[ 5 - 7 = 2x + 7 - 7 \\]",
        "Then, we perform the subtraction: \\(-32-2 = -34\\).",
        "the sum of the roots is -b/a = -2/1 = -2.",
        "her sum is $-10+15=5$ more than Jo's sum.",
        "\\[ 1 + 3 + 5 + \\cdots + 15 + 17 = 9^2 = \\boxed{81} \\]",
        "10236 ÷ 244 = 41 remainder 212",
        "f(0) = 0^3 - 1/2 = -1/2",
        "-32(a^3 - b^3) - 6400 + 63488 = 0",
        "RTTs1 = (1-α) * RTTs0 + α * RTTM1 = (1-0.15) * 70 + 0.15 * 68 = 69.7ms",
        "100 = 4096 + 4\n\nThis is not possible, so there is no solution",  # a contradiction, not a claim
        # rounding to the decimals shown, and plain truths
        "10 / 3 = 3.33",
        "2 / 3 = 0.66",
        "1/2 * 1/2 = 1/4.",
        "$12 / 4 = 3$",
        "1,000 + 2 = 1002",
        "2^3 + 1 = 9",
        "3 times 4 = 11",
        "1/0 = 3",
        # money is a sign on a number, not a math delimiter (GSM8K style)
        "4 pens * $3 = 4 * 3 = $12",
        "$12.48 - $0.48 = $12",
        "He pays $5+$3=$8.",
        "Becky paid 900 - 100 = $8.",  # cents to dollars
        # a number joined to the side by words is part of a larger expression
        "20% of 50 + 5 = 15",
        "the sum of 3 and 4 + 5 = 12",
        "twice 5 + 3 = 13",
        # not plain arithmetic
        "so that's .20*30 = <<.20*30=6>>6 students",  # a decimal without its zero
        "In base 2, 1 + 1 = 10.",
        "7 + 8 = 3 (mod 12)",
        "2 1/2 + 1 = 3 1/2",
        "4! + 1 = 26",
        "7(1 + 3 = 5)",
        "0.5 * 100 = 50%",
        "\\frac{x}{2} + 1 = 5",
    ],
)
def test_no_false_equation_is_read_into_real_solutions(text: str) -> None:
    assert false_equation(text) is None


@pytest.mark.parametrize(
    ("text", "false"),
    [
        ("5 - 6 = 1, so the answer is 1.", "5 - 6 = 1"),
        ("There are \\(29 - 10 - 1 = 19\\) integers in this range.", "29 - 10 - 1 = 19"),  # real slip
        ("8/8 = 4/3 = 4/ST = 6/3", "8/8 = 4/3"),  # real (GPT-4)
        ("D1 = 2.110 * (1 + 0.1309) = 2.110 * 1.1309 = 2.3859", "2.110 * 1.1309 = 2.3859"),  # real
        (
            "\\[ 2 \\cdot 3 \\cdot 4 \\cdot 5 + 1 = 120 + 1 = 122. \\]",
            "120 + 1 = 122",
        ),  # a plain pair of a chain
        ("3 × 4 = 13 apples.", "3 * 4 = 13"),  # reported as read: operators written plainly
        ("10 / 3 = 3.5", "10 / 3 = 3.5"),
        ("Note that 17 + 25 = 43, which we use below.", "17 + 25 = 43"),
        ("- 2 + 2 = 5", "2 + 2 = 5"),  # a bullet
        ("(so 3 + 4 = 8)", "3 + 4 = 8"),  # brackets around the whole equation
        # human-marked first errors (BIG-Bench Mistake, MR-GSM8K): bracketed chains, each `=` on its own
        (
            "Let's calculate B = (5 + 3 - -2 * 2) = (5 + 3 - -2 * 2) = (5 + 3 - 4) = 4.",
            "(5 + 3 - -2 * 2) = (5 + 3 - 4)",
        ),
        ("Let's calculate B = (-1 + 7 + 9) = (7 + 9) = (16).", "(-1 + 7 + 9) = (7 + 9)"),
        ("She saves $12.48 - $1.48 = $12 a week.", "$12.48 - $1.48 = $12"),  # money
        ("a total of $65 * 170 = $10,550.", "$65 * 170 = $10550"),  # thousands separators
        ("1,200 + 300 = 1,600 people", "1200 + 300 = 1600"),
        ("so 48/2 = <<48/2=25>>25 cookies", "48/2 = 25"),  # a calculator note
        ("which is 60/100 x ($40 + $40) = $24.", "60/100 * ($40 + $40) = $24"),  # x between numbers
        ("\\[ \\frac{1}{2} + \\frac{1}{3} = \\frac{2}{5} \\]", "(1/2) + (1/3) = (2/5)"),
        ("so \\(49{,}994 + 20{,}006 = 69{,}999\\)", "49994 + 20006 = 69999"),
        ("In base 10, 1 + 1 = 3.", "1 + 1 = 3"),
    ],
)
def test_false_equations_between_complete_plain_sides_are_found(text: str, false: str) -> None:
    assert false_equation(text) == false


@pytest.mark.parametrize(
    "text",
    [
        # real: display markup and restated formulas on their own lines
        "\\[\nS = 9\n\\]\n\n\\[\nS = 9\n\\]\n\nThen\n\\[\nS = 9\n\\]\n\\[\nx = 5\n\\]\n\\[\nx = 5\n\\]",
        "\\begin{align*}\na &= 1 \\\\\n\\end{align*}\n" * 5,
        # real: a matrix in row echelon form, rows repeated in a row
        "0  0  1   3  -4/3\n0  0  1   3  -4/3\n0  0  1   3  -4/3\n0 0 0 0 0\n0 0 0 0 0",
        # real: short sentences of a case analysis, repeated but not in a row
        "\n".join(f"Case {i}: \\[ {i} \\] This is the same as the original expression." for i in range(5)),
        # real: an equality chain that restates one product four times (Qwen2.5-Math, correct)
        "\\[ S = 9 \\times \\frac{5}{3} = 9 \\times \\frac{5}{3} = 9 \\times \\frac{5}{3} = 9 "
        "\\times \\frac{5}{3} = 15 \\]",
        "\\left(\\frac{2}{3} \\times \\frac{2}{3} \\times \\frac{2}{3} \\times \\frac{2}{3}\\right)",
    ],
)
def test_markup_tables_and_restated_formulas_are_not_loops(text: str) -> None:
    assert loop(text) is None


@pytest.mark.parametrize(
    ("text", "repeated"),
    [
        ("Ben has 3\n\nBen has 3\n\nBen has 3", "Ben has 3"),
        (
            "First we add. This simplifies to: This simplifies to: This simplifies to: 5.",
            "This simplifies to:",
        ),
        ("We get we get we get we get 5", "get we"),  # "We" and "we" are two words
        # real (GPT-4 circling, TheoremQA): a varying lead-in, then the same passage; once the lead-in
        # comes back too, nothing new is said
        (
            "Let's reconsider. So, the angle is -8. However, angles cannot be negative.\n\n"
            + "We apologize for the confusion. So, the angle is -8. However, angles cannot be negative.\n\n"
            * 3,
            "So, the angle is -8. However, angles cannot be negative. We apologize for the confusion.",
        ),
        ("We add. Ben has two. " * 3 + "Done.", "We add. Ben has two."),  # two sentences, three times
    ],
)
def test_loops_are_found(text: str, repeated: str) -> None:
    assert loop(text) == repeated


@pytest.mark.parametrize(
    "text",
    [
        # a long template sentence once per case, around new content, is a case analysis
        "\n".join(
            f"For the {animal}: To find how many they need in 2 months, we multiply the number per month "
            f"by the number of months: {n} * 2 = {2 * n}."
            for animal, n in (("dogs", 5), ("cats", 3), ("birds", 2), ("fish", 7))
        ),
        "\n".join(
            f"- Graph ({letter}) shows the volume rising {how}.\n- This does not match the volume during "
            "the filling time."
            for letter, how in (("A", "slowly"), ("B", "then falling"), ("C", "in steps"))
        ),
        # a list that restates earlier labels with their counts (a real search tree, Qwen2.5-Math)
        "- For 11: (5, 6)\n- For 12: (6, 6) and (2, 10)\n- For 13: (1, 3) and (3, 1)\n"
        "Count:\n- For 11: 1 outcome\n- For 12: 2 outcomes\n- For 13: 2 outcomes\n- For 14: 2 outcomes",
    ],
)
def test_case_analyses_are_not_loops(text: str) -> None:
    assert loop(text) is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        # real: the answer closes its sentence, units and all
        ("Therefore, the length of the hallway is \\(\\boxed{10}\\) meters.", "10"),
        (
            "Therefore, $\\boxed{16}$ blue balls are needed to balance $4$ green, $2$ yellow and $2$ "
            "white balls.",
            "16",
        ),
        ("\\[ \\text{distance} = 88 \\times 15 = \\boxed{1320} \\text{ km} \\]", "1320"),
        # real: a short remark that states no other answer
        (
            "the range is $\\boxed{(-\\infty, 1) \\cup (1, \\infty)}$. (Remember to express the answer using "
            "interval notation, as requested.)",
            "(-\\infty, 1) \\cup (1, \\infty)",
        ),
        (
            "So the minimum is $\\boxed{\\frac{3}{2}}$. Equality occurs when $a = b = c = \\frac{1}{2}$.",
            "\\frac{3}{2}",
        ),
        (
            "Worth = 27 * 25 = \\boxed{675} dollars.\n\nNote: Since we are asked to round the answer "
            "to the nearest "
            "dollar, we don't need to worry about decimal places in this case.",
            "675",
        ),
        ("Final Answer: The final answer is $\\boxed{5}$. I hope it is correct.", "5"),
        ("Therefore, the answer is -2.", "-2"),
        ("so the answer is $\\boxed{4}$", "4"),
        ("Therefore, the answer is True.", "True"),
        # a calculation that ends in the answer is the same answer, and so are values written apart
        ("So the answer is 9 - (-2) + 1 = 12.\n\n\\boxed{12}", "12"),
        ("So the answer is 9 - (-2) + 1 = 12.", "12"),
        ("\\[ 30 = 2 \\times 3 \\times 5 = 30 \\]\nThe answer is \\boxed{30}.", "30"),
        ("The answer is East. So \\boxed{east}.", "east"),
        ("The answer is 9/2, that is \\boxed{4.5}.", "4.5"),
        # a blank to fill is notation, not an answer
        ("The missing digit in $3\\boxed{\\phantom{2}}5$ is found below. The digit is \\boxed{7}.", "7"),
        # published answer markers
        ("Step 1: 3 + 4 = 7\nStep 2: #### 7\nStep 3: The answer is: 7", "7"),
        ("She pays 4 * $3 = $12.\n#### 12", "12"),
        ("The volume of the cube is 216 cubic inches.\n\n# Answer\n\n216", "216"),
        ("#### Step 2: Expand\n\nx = 5, so the answer is 5.", "5"),  # a heading is not a marker
        # real (NeMo-Skills): a remark that writes the same value another way is not another answer
        (
            "is $\\boxed{220}$.\n\nRemark: In the most common case the answer is considered as 220, "
            "in other cases it might be written as 0220, where zero is explicitly shown.",
            "220",
        ),
    ],
)
def test_an_answer_may_close_its_sentence_and_take_a_remark(text: str, answer: str) -> None:
    assert final_answer(text).answer == answer


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # real (NeMo-Skills): runs on into a few-shot pattern
        (
            "The answer is $\\boxed{\\frac{73}{99}}$.\n\nNow solve the question.\n\nQuestion:\nFind "
            "$f^{-1}(x)$ if "
            "$f(x) = 2x^3 - 5$.",
            "new_question",
        ),
        (
            "\\boxed{50}.\n\nHere's your question:\nThe function $f$ defined by $f(x)= \\frac{ax+b}{cx+d}$",
            "new_question",
        ),
        (
            "So \\boxed{6}.\n\nIn triangle $PQR,$ the sum of $\\angle P$ and $\\angle Q$ is "
            "$60^\\circ.$ What is the "
            "measure of $\\angle R?$",
            "new_question",
        ),
        ("So \\boxed{6}.\n\nConvert $\\frac{63}{5}$ to a mixed number.", "new_question"),
        ("So \\boxed{6}.\n\n<|im_start|>user\nWhat is 2 + 2?", "new_question"),
        # a remark that hedges with another value
        (
            "is $\\boxed{220}$.\n\nRemark: In the most common case the answer is considered as 220, "
            "in other cases it might be taken as 221.",
            "other_answer",
        ),
        ("The answer is \\boxed{5}. Wait, the answer is 6.", "other_answer"),
        ("So \\boxed{5} or maybe \\boxed{6}.", "other_answer"),
        # real (Qwen2.5-Math): token soup after a right answer
        (
            "is \\(\\boxed{6}\\). \\]\n\\[\n\\boxed{6}\n\\] \\] permissible LOCATION "
            "mikpoCasThrough\x1b Bo司Ո "
            "Stake insurerれ 권 flyers",
            "garbage",
        ),
        ("The answer is $14$:\n\\[", "unfinished"),
        ("2 + 2 = 4.", "no_answer"),
        ("An empty box \\boxed{} commits to nothing", "no_answer"),
        ("The answer is correct.", "no_answer"),  # a judgement, not an answer
        ("Fill in $\\boxed{\\phantom{2}}$ and $\\boxed{\\quad}$.", "no_answer"),  # blanks
        ("#### 12\n\n#### 13", "other_answer"),
        ("So \\boxed{7}.\n\n((5 + 2) * 3) =", "new_question"),  # an open equation asks for a value
        ("The answer is 5.\n5 + 5 + 5 = 16.", "false_arithmetic"),
        ("There are 6 coins.\n\n5 - 6 = 1, so the answer is 1.", "false_arithmetic"),
        ("Then 8 * 4 = 20.\nThen 8 * 4 = 20.\nThen 8 * 4 = 20.\nSo \\boxed{20}.", "repetition"),
    ],
)
def test_text_that_goes_wrong_has_no_answer_and_says_why(text: str, reason: str) -> None:
    verdict = final_answer(text)
    assert (verdict.answer, verdict.reason) == (None, reason)


def test_a_remark_after_the_answer_is_not_a_new_question() -> None:
    for tail in (
        "\n\nNote: This solution assumes that Kate rounds the number 5 up.",
        "\n\nHere are all the possible arrangements:\n1. OOTT\n2. OTOT",
        "\n\nAlternatively, we can express this in a more general form: \\(M \\times f^d\\).",
        "\n\nPlease note that the answer is exact.",
        " gallons.",
    ):
        assert new_question(tail) is None, tail


def test_garbage_is_new_scripts_or_control_characters_not_a_language_the_solution_uses() -> None:
    assert garbage(" 答案是 5。", "我们计算 2 + 3 = 5,所以") is None
    assert garbage(" where λ is the rate", "Let the rate be fixed") is None
    assert garbage(" 司Ո 권 れ", "The answer") is not None
    assert garbage(" ok\x1b", "The answer") is not None
