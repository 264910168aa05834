"""The openai backend on a real loopback server: context overflow, `transformers serve` sampling."""

from __future__ import annotations

import asyncio
import json

from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.generation import GenerationRequest, SamplingParams
from sigma_assets.method.mcts import MCTSSettings, search
from sigma_assets.testing.fault_server import FaultServer


def generate(backend: OpenAIBackend, requests: list[GenerationRequest]):
    async def go():
        try:
            return await backend.generate(requests)
        finally:
            await backend.close()

    return asyncio.run(go())


def test_a_prompt_beyond_the_context_comes_back_as_overflow_samples_not_an_error() -> None:
    with FaultServer(max_context_tokens=50) as server:
        backend = OpenAIBackend("m", base_url=server.base_url)
        short = GenerationRequest(prompt="two words", params=SamplingParams(n=3, max_tokens=8))
        long = GenerationRequest(prompt="word " * 200, params=SamplingParams(n=3, max_tokens=8))
        fits, overflows = generate(backend, [short, long])
        assert [s.finish_reason for s in fits] == ["stop"] * 3
        assert [(s.text, s.finish_reason) for s in overflows] == [("", "context_overflow")] * 3
        assert server.stats()["bad_requests"] == 1  # sent once, not retried


def test_search_through_a_server_that_refuses_long_prompts_makes_minus_one_terminals() -> None:
    with FaultServer(
        max_context_tokens=43, responder=lambda req, i: f"step {len(req['prompt'])} {i}"
    ) as server:
        backend = OpenAIBackend("m", base_url=server.base_url)

        async def check(pairs):
            return [False for _ in pairs]

        async def go():
            settings = MCTSSettings(simulations=16, max_depth=16, step_max_tokens=4, rollout_max_tokens=4)
            try:
                return await search([("p", "What is 2 + 2?", "4")], backend.generate, check, settings)
            finally:
                await backend.close()

        result = asyncio.run(go())
    tree = result.trees[0]
    overflowed = [n for n in tree.nodes() if n.terminal_reason == "context_overflow"]
    assert overflowed and all(n.correct is False for n in overflowed)
    assert tree.exhausted  # the search ran until nothing fitted any more, without failing
    assert result.rollout_outcomes.get("context_overflow", 0) > 0


def test_transformers_serve_gets_its_sampling_settings_in_generation_config() -> None:
    seen: list[dict] = []

    def responder(request: dict, index: int) -> str:
        seen.append(request)
        return f"sample {index}"

    with FaultServer(responder=responder) as server:
        plain = OpenAIBackend("m", base_url=server.base_url)
        serve = OpenAIBackend("m", base_url=server.base_url, generation_config_sampling=True)
        request = GenerationRequest(
            prompt="Q", params=SamplingParams(n=1, temperature=0.7, top_p=0.9, max_tokens=5)
        )
        generate(plain, [request])
        generate(serve, [request])
        greedy = GenerationRequest(prompt="Q", params=SamplingParams(n=1, temperature=0.0, max_tokens=5))
        generate(serve, [greedy])
    assert "generation_config" not in seen[0]
    assert json.loads(seen[1]["generation_config"]) == {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 5,
    }
    assert "generation_config" not in seen[2]  # greedy needs no sampling switch
    assert serve.name != plain.name  # the store keeps the two servers' answers apart
