"""The search streams: every tree advances on its own answers, and its trees never depend on timing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.method.mcts import MCTSSettings, search
from sigma_assets.method.search_tree import selected_path
from sigma_assets.method.tree_table import tree_rows
from sigma_assets.testing.fault_server import FaultServer
from sigma_assets.testing.seeded_policy import ROLLOUTS, draw, mixed_steps
from sigma_assets_tests.test_mcts import check_invariants, problems, random_policy

STEPS = mixed_steps(blank_share=0.05)


def seeded_responder(request: dict, index: int) -> str:
    """What a seeded model answers: sample `index` drawn from the request's own seed."""
    rng = random.Random(f"{request.get('seed')}/{index}")
    return draw(rng, STEPS if request.get("stop") else ROLLOUTS)


async def exact_check(pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
    return [pred is not None and gold == pred for gold, pred in pairs]


def search_over_http(
    server: FaultServer, shard: list[tuple[str, str, str]], concurrency: int, settings: MCTSSettings
) -> tuple[dict[str, list[dict]], int]:
    """Trees (rows per problem) of a search through the client at `concurrency`; the server's peak load."""
    server.reset()
    with LLMClient(OpenAIBackend("m", base_url=server.base_url), concurrency=concurrency) as client:
        result = client.run_coroutine(search(shard, client.agenerate, exact_check, settings))
    return {tree.problem_id: tree_rows(tree) for tree in result.trees}, server.stats()["max_in_flight"]


def test_trees_do_not_depend_on_timing_concurrency_or_problem_order() -> None:
    # Answers arrive after 2..22 ms, in no fixed order: the trees must come out the same every time.
    shard = problems(12)
    settings = MCTSSettings(simulations=6, max_depth=4, seed=5)
    with FaultServer(responder=seeded_responder, latency_s=0.002, latency_jitter_s=0.02) as server:
        one_at_a_time, load_1 = search_over_http(server, shard, 1, settings)
        streaming, load_16 = search_over_http(server, shard, 16, settings)
        reordered, _ = search_over_http(server, list(reversed(shard)), 16, settings)
        again, _ = search_over_http(server, shard, 16, settings)
    assert load_1 == 1
    assert load_16 >= len(shard)  # every live tree had a request out at once
    assert streaming == one_at_a_time == reordered == again
    assert sum(len(rows) for rows in streaming.values()) > 12 * 4  # the trees grew


def timed_policy(slow_problem: str, log: list[tuple[str, str]], delay_s: float = 0.3):
    """`random_policy`, answering one problem's requests `delay_s` late; logs (event, problem)."""

    async def generate(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        problem = next(p for p, text, _ in problems(8) if text in (requests[0].prompt or ""))
        await asyncio.sleep(delay_s if problem == slow_problem else 0.001)
        log.append(("answer", problem))
        return random_policy(requests)

    return generate


def test_a_tree_advances_without_waiting_for_a_slow_tree() -> None:
    log: list[tuple[str, str]] = []
    settings = MCTSSettings(simulations=4, max_depth=4, seed=2)
    result = asyncio.run(search(problems(8), timed_policy("p0", log), exact_check, settings))
    first_slow = log.index(("answer", "p0"))
    others = [i for i, (_, problem) in enumerate(log) if problem != "p0"]
    # Every other tree ran all its simulations while p0 waited for its first answer.
    assert max(others) < first_slow
    assert all(t.simulations == settings.simulations or t.exhausted for t in result.trees)


def test_answer_checks_run_beside_generation() -> None:
    # p0's checks take 0.3 s; the other trees keep generating meanwhile.
    log: list[tuple[str, str]] = []
    slow_gold = "4"

    async def check(pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
        if any(gold == slow_gold for gold, _ in pairs):
            log.append(("check started", "p0"))
            await asyncio.sleep(0.3)
            log.append(("check ended", "p0"))
        return await exact_check(pairs)

    shard = [("p0", problems(8)[0][1], slow_gold)] + [(p, t, "5") for p, t, _ in problems(8)[1:]]
    settings = MCTSSettings(simulations=4, max_depth=4, seed=2)
    asyncio.run(search(shard, timed_policy("none", log, 0.0), check, settings))
    start, end = log.index(("check started", "p0")), log.index(("check ended", "p0"))
    assert any(event == "answer" and problem != "p0" for event, problem in log[start:end])


@pytest.mark.parametrize("reselect", [False, True])
def test_parallel_simulations_of_one_tree_use_a_virtual_loss(reselect: bool) -> None:
    expanded: list[str] = []

    async def generate(requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        expanded.extend(r.prompt or "" for r in requests if r.params.stop)
        await asyncio.sleep(random.uniform(0.0, 0.01))
        return random_policy(requests)

    settings = MCTSSettings(
        simulations=12, max_depth=4, seed=4, parallel_simulations=3, reselect_terminals=reselect
    )
    result = asyncio.run(search(problems(3), generate, exact_check, settings))
    assert result.peak_requests_in_flight > 3  # more than one simulation per tree was out at once
    assert len(expanded) == len(set(expanded))  # no leaf was expanded twice
    for tree in result.trees:
        assert tree.simulations == settings.simulations or tree.exhausted
        check_invariants(tree, settings)  # every virtual loss was taken back
    assert any(selected_path(t) for t in result.trees)


def test_one_simulation_at_a_time_is_the_default() -> None:
    log: list[tuple[str, str]] = []
    result = asyncio.run(search(problems(1), timed_policy("none", log, 0.0), exact_check, MCTSSettings()))
    # One tree, one simulation at a time: at most its expansion's rollouts are out together.
    assert result.peak_requests_in_flight <= MCTSSettings().n_children
    with pytest.raises(ValueError, match="virtual_loss"):
        MCTSSettings(parallel_simulations=2, virtual_loss=0.0)
