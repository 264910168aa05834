"""Local model building and the in-process transformers backend, on the tiny model (and SmolLM2 when slow)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sigma_assets.llm.backends.hf_local import TransformersBackend
from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams, user
from sigma_assets.llm.local_models import ensure_smollm2, is_complete, smollm2_gguf_path
from sigma_assets.testing.tiny_model import build_tiny_model

PROMPT = "Question: What is 12 + 30?\nAnswer:"


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, device="cpu", batch_size=4)


def run(backend: TransformersBackend, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
    return asyncio.run(backend.generate(requests))


def one(backend: TransformersBackend, prompt: str = PROMPT, **params: object) -> list[Sample]:
    return run(backend, [GenerationRequest(prompt=prompt, params=SamplingParams(**params))])[0]


def test_tiny_model_is_built_once_and_complete(tiny_model_dir: Path) -> None:
    assert is_complete(tiny_model_dir)
    assert (tiny_model_dir / "model.safetensors").is_file()
    stamp = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert time.perf_counter() - start < 0.1  # reused, not rebuilt
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_tokenizer_has_chat_template_and_special_tokens(backend: TransformersBackend) -> None:
    tokenizer = backend.load_tokenizer()
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_mixed_batch_returns_n_samples_per_request_in_order(backend: TransformersBackend) -> None:
    requests = [
        GenerationRequest(prompt="1 + 1 =", params=SamplingParams(n=2, max_tokens=3)),
        GenerationRequest(
            messages=user("What is 2 + 2?"), params=SamplingParams(n=3, temperature=1.0, max_tokens=5)
        ),
        GenerationRequest(prompt="The answer is \\boxed{", params=SamplingParams(max_tokens=3)),
        GenerationRequest(
            messages=user("Add 3 and 4, then times 5."), params=SamplingParams(n=2, max_tokens=7)
        ),
        GenerationRequest(prompt="7", params=SamplingParams(n=1, temperature=0.7, seed=3, max_tokens=5)),
    ]
    tokenizer = backend.load_tokenizer()
    out = run(backend, requests)
    assert [len(samples) for samples in out] == [r.params.n for r in requests]
    for request, samples in zip(requests, out, strict=True):
        # Prompt lengths differ per request, so they pin each answer to its request.
        expected_prompt_tokens = len(backend.encode_prompt(tokenizer, request))
        # The prompt is counted once per request, on its first sample.
        assert [s.prompt_tokens for s in samples] == [expected_prompt_tokens] + [0] * (len(samples) - 1)
        for sample in samples:
            assert 0 < sample.completion_tokens <= request.params.max_tokens
            assert not sample.cached


def test_stop_string_cuts_text_before_it(backend: TransformersBackend) -> None:
    full = one(backend, max_tokens=24)[0].text
    # Pick a plain-ASCII piece from the middle of the greedy text as the stop string.
    stop = next(
        full[i : i + 2]
        for i in range(3, len(full) - 1)
        if full[i : i + 2].isascii() and full[i : i + 2].isalnum()
    )
    sample = one(backend, max_tokens=24, stop=(stop,))[0]
    assert sample.finish_reason == "stop"
    assert sample.text == full[: full.index(stop)]
    assert stop not in sample.text
    assert sample.completion_tokens < 24


def test_max_tokens_gives_length(backend: TransformersBackend) -> None:
    sample = one(backend, max_tokens=4)[0]
    assert sample.finish_reason == "length"
    assert sample.completion_tokens == 4
    assert sample.text


def test_greedy_is_deterministic(backend: TransformersBackend) -> None:
    first = one(backend, n=3, max_tokens=12)
    second = one(backend, n=3, max_tokens=12)
    assert len({s.text for s in first}) == 1
    assert first == second


def test_seeded_sampling_is_reproducible(backend: TransformersBackend) -> None:
    a = one(backend, n=3, temperature=1.0, seed=123, max_tokens=12)
    b = one(backend, n=3, temperature=1.0, seed=123, max_tokens=12)
    c = one(backend, n=3, temperature=1.0, seed=124, max_tokens=12)
    assert a == b
    assert [s.text for s in a] != [s.text for s in c]
    assert len({s.text for s in a}) > 1  # sampled, not greedy


def test_empty_request_list(backend: TransformersBackend) -> None:
    assert run(backend, []) == []


@pytest.mark.slow
def test_smollm2_converts_and_answers(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    try:
        smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    folder = ensure_smollm2(tmp_path)
    assert is_complete(folder)
    smol = TransformersBackend(folder, device="cpu")
    assert "<|im_start|>" in smol.load_tokenizer().chat_template
    [[sample]] = run(
        smol, [GenerationRequest(messages=user("What is 2+3?"), params=SamplingParams(max_tokens=24))]
    )
    asyncio.run(smol.close())
    assert sample.text.strip()
    assert sample.prompt_tokens > 0 and sample.completion_tokens > 0
