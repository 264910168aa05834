"""The default bundled problem set: easy one-step arithmetic word problems with exact integer answers.

Deterministic (a fixed seed), so every machine builds the same problems with the same ids. They are easy
on purpose: the bundled SmolLM2-135M answers roughly a quarter of its samples correctly at temperature
0.7, so the embedded pipeline finds correct leaves and discarded siblings to learn from.
"""

from __future__ import annotations

import random

_NAMES = ("Tom", "Ana", "Ben", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eva")
_THINGS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "cards")


def arithmetic_problems(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """`count` problems as (problem_id, problem, answer)."""
    rng = random.Random(seed)
    problems = []
    for index in range(count):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        kind = index % 4
        if kind == 0:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            text, answer = (
                f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?",
                a + b,
            )
        elif kind == 1:
            a, b = rng.randint(6, 15), rng.randint(1, 5)
            text, answer = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
        elif kind == 2:
            a, b = rng.randint(2, 5), rng.randint(2, 5)
            text = f"{name} buys {a} bags with {b} {thing} in each bag. How many {thing} is that in total?"
            answer = a * b
        else:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            text, answer = f"What is {a} + {b}?", a + b
        problems.append((f"arithmetic-{index:04d}", text, str(answer)))
    return problems
