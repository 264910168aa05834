"""The budget projection as plain functions: token counts, the running mean, the cap and its message."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigma_assets.llm.accounting import price_of
from sigma_assets.llm.budget import BudgetExceeded, check_cap, plan_first_call, project, token_counter
from sigma_assets.llm.generation import GenerationRequest, SamplingParams, user
from sigma_assets.method.refinement import critique
from sigma_assets.method.refinement_records import ProblemPaths, RefinementSettings
from sigma_assets.method.siblings import SiblingSet
from sigma_assets.settings import Settings, SettingsError


def chat(text: str, max_tokens: int = 100, n: int = 1) -> GenerationRequest:
    return GenerationRequest(messages=user(text), params=SamplingParams(max_tokens=max_tokens, n=n))


def test_projection_with_the_stated_estimate_and_max_tokens() -> None:
    requests = [chat("x" * 400, max_tokens=100), chat("y" * 80, max_tokens=50, n=2)]
    projection = project("gpt-4o-mini", requests)
    assert projection.requests == 2
    assert projection.prompt_tokens == 101 + 21  # 4 characters per token, stated as an estimate
    assert projection.completion_tokens == 100 + 2 * 50
    assert "estimate" in projection.prompt_count and projection.completion_basis == "max_tokens"
    prompt_price, completion_price = price_of("gpt-4o-mini")
    assert projection.usd == pytest.approx((122 * prompt_price + 200 * completion_price) / 1e6)
    assert project("gpt-4o-mini", requests, batch=True).usd == pytest.approx(projection.usd / 2)


def test_running_mean_caps_completions_and_scaling() -> None:
    requests = [chat("q" * 40, max_tokens=100), chat("r" * 40, max_tokens=10)]
    projection = project("gpt-4o-mini", requests, stored_completion_tokens=[20, 40])
    assert projection.completion_tokens == 30 + 10  # the mean, never above the request's limit
    assert "running mean of 2" in projection.completion_basis
    scaled = project("gpt-4o-mini", requests, stored_completion_tokens=[20, 40], scale_to=6)
    assert scaled.requests == 6 and scaled.completion_tokens == 3 * 40


def test_prompt_tokens_counted_with_the_model_tokenizer(tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer

    counter = token_counter(str(tiny_model_dir))
    assert counter is not None
    text = "What is 12 + 30? Let us add the two numbers."
    expected = len(Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(text).ids)
    projection = project(str(tiny_model_dir), [chat(text)], counter=counter)
    assert projection.prompt_tokens == expected and projection.prompt_count == "tokenizer"
    assert token_counter("no-such-model-anywhere") is None


def test_the_cap_refuses_and_says_by_how_much() -> None:
    projection = project("gpt-4o-mini", [chat("z" * 4000, max_tokens=1000)])
    check_cap(projection, None)  # no cap: nothing to refuse
    check_cap(projection, projection.usd * 2)
    with pytest.raises(BudgetExceeded) as info:
        check_cap(projection, projection.usd / 2)
    over = projection.usd - projection.usd / 2
    assert f"${over:.4f} over the cap" in str(info.value) and "SIGMA_MAX_USD_PER_RUN" in str(info.value)


def test_plan_first_call_sends_nothing() -> None:
    sibling = SiblingSet(
        problem_id="p1",
        depth=1,
        history=(),
        selected_node_id="n1",
        selected_step="2 + 2 = 4. The answer is 4.",
        selected_q=1.0,
        selected_visits=3,
        siblings=(),
    )
    problems = [ProblemPaths("p1", "What is 2 + 2?", "4", (sibling,))]
    planned = plan_first_call(lambda generate: critique(problems, generate, RefinementSettings()))
    assert len(planned.requests) == 1 and planned.requests[0].params.json_output
    assert planned.validate is not None  # the validator the stage would pass along
    assert plan_first_call(lambda generate: critique([], generate, RefinementSettings())).requests == []


def test_batch_api_setting() -> None:
    assert Settings.from_env({}).critic_batch_api is False
    assert Settings.from_env({"SIGMA_CRITIC_BATCH_API": "true"}).critic_batch_api is True
    with pytest.raises(SettingsError, match="SIGMA_CRITIC_BATCH_API"):
        Settings.from_env({"SIGMA_CRITIC_BATCH_API": "sometimes"})


def test_cap_setting() -> None:
    assert Settings.from_env({}).max_usd_per_run is None
    assert Settings.from_env({"SIGMA_MAX_USD_PER_RUN": "2.5"}).max_usd_per_run == 2.5
    for bad in ("ten", "0", "-1"):
        with pytest.raises(SettingsError, match="SIGMA_MAX_USD_PER_RUN"):
            Settings.from_env({"SIGMA_MAX_USD_PER_RUN": bad})
