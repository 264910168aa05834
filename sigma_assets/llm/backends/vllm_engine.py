"""An in-process `Backend` on the vLLM engine (`vllm.LLM`), for GPU machines.

vLLM is an optional dependency (the `gpu` extra pins a CUDA torch), so it is imported only inside the
methods that need it: this module imports, and the backend constructs, on machines without it. vLLM
schedules and batches by itself, so the client hands over large batches (`max_batch`), and each batch
becomes at most two engine calls: `LLM.generate` for completions and `LLM.chat` for conversations,
with one `SamplingParams` per request.

Each request carries its own seed (`SamplingParams.seed`): vLLM then samples it from its own generator
(sample k of n from seed + k), so its random numbers never depend on the requests it is batched with.
Its logits still can: vLLM's kernels (matrix products, attention, their split reductions) differ by
batch size and composition in the last bits, and where a draw lands on a boundary a sample changes.
vLLM's batch-invariant mode (`VLLM_BATCH_INVARIANT=1`, in vLLM 0.11 and later, on the NVIDIA GPUs its
documentation lists; the `gpu` extra allows older versions, which have none) removes that at a cost in
speed; the environment variable reaches the engine as it is. The CPU build's tests check that a seed
gives the same samples twice in one batch, not across batch compositions.

Request building (`sampling_kwargs`, `plan_calls`) and output mapping (`samples_from_output`) are pure
functions over plain data, so they are tested without vLLM; the backend itself is tested on vLLM's CPU
build (`infra/install_vllm.sh`), which this module runs on as it is: it imports only the standard
library and `sigma_assets.llm.generation`.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sigma_assets.llm.generation import FinishReason, GenerationRequest, Sample, SamplingParams

GPU_EXTRA_HINT = "install the gpu extra on a GPU machine: pip install 'sigma-assets[gpu]'"


class VLLMNotInstalled(ImportError):
    """vLLM is missing: the backend can be built anywhere but generates only where the extra is installed."""


# -- request building ----------------------------------------------------------------------------------


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` (see `to_vllm_sampling_params`).

    `structured_outputs`, when present, holds the keyword arguments of vLLM's `StructuredOutputsParams`
    as a plain dict; `to_vllm_sampling_params` builds the object, which needs vLLM itself.
    """
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.json_output:
        # Constrained decoding to any JSON object (vLLM >= 0.12; older versions: `guided_decoding`).
        kwargs["structured_outputs"] = {"json_object": True}
    return kwargs


def to_vllm_sampling_params(vllm: Any, params: SamplingParams) -> Any:
    """A `vllm.SamplingParams` for `params`, with structured outputs in whichever API this vLLM has."""
    kwargs = sampling_kwargs(params)
    structured = kwargs.pop("structured_outputs", None)
    if structured is not None:
        from vllm import sampling_params as vllm_sampling

        if hasattr(vllm_sampling, "StructuredOutputsParams"):
            kwargs["structured_outputs"] = vllm_sampling.StructuredOutputsParams(**structured)
        else:  # vLLM < 0.12 spelled it `guided_decoding=GuidedDecodingParams(...)`
            kwargs["guided_decoding"] = vllm_sampling.GuidedDecodingParams(**structured)
    return vllm.SamplingParams(**kwargs)


@dataclass(frozen=True)
class EngineCall:
    """One engine call: `inputs` are prompt strings (completion) or conversations (chat)."""

    kind: Literal["completion", "chat"]
    indices: list[int]  # positions of the requests in the batch, in input order
    inputs: list[Any]
    params: list[SamplingParams]


def plan_calls(requests: Sequence[GenerationRequest]) -> list[EngineCall]:
    """Split a batch into one `generate` call (completions) and one `chat` call (conversations)."""
    calls: list[EngineCall] = []
    for kind in ("completion", "chat"):
        indices = [i for i, request in enumerate(requests) if request.kind == kind]
        if not indices:
            continue
        inputs: list[Any] = [
            requests[i].prompt
            if kind == "completion"
            else [{"role": m.role, "content": m.content} for m in requests[i].messages or ()]
            for i in indices
        ]
        calls.append(EngineCall(kind, indices, inputs, [requests[i].params for i in indices]))
    return calls


# -- output mapping ------------------------------------------------------------------------------------


class CompletionOutputLike(Protocol):
    text: str
    token_ids: Sequence[int]
    finish_reason: str | None


class RequestOutputLike(Protocol):
    prompt_token_ids: Sequence[int] | None
    outputs: Sequence[CompletionOutputLike]


def samples_from_output(output: RequestOutputLike, n: int) -> list[Sample]:
    """The `n` samples of one `vllm.RequestOutput`, in the engine's order."""
    if len(output.outputs) != n:
        raise ValueError(f"vLLM returned {len(output.outputs)} outputs for n={n}")
    prompt_tokens = len(output.prompt_token_ids or ())
    return [
        Sample(
            text=completion.text,
            # "abort" and None only occur for cancelled requests; treat them like a normal stop.
            finish_reason=_finish_reason(completion),
            # The prompt is processed once per request however many samples it yields.
            prompt_tokens=prompt_tokens if index == 0 else 0,
            completion_tokens=len(completion.token_ids),
        )
        for index, completion in enumerate(output.outputs)
    ]


# -- the backend ---------------------------------------------------------------------------------------


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VLLMNotInstalled(f"the vllm backend needs the `vllm` package: {GPU_EXTRA_HINT}") from exc
    return vllm


class VLLMBackend:
    """`Backend` on an in-process `vllm.LLM`; the engine starts lazily on the first `generate`."""

    name = "vllm"
    endpoint = "local"

    def __init__(
        self, model: str, *, max_batch: int = 4096, model_name: str | None = None, **engine_kwargs: Any
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.path = model
        # Stable across machines (store keys, metadata), unlike the folder a model was converted into.
        self.model = model_name or model
        # vLLM does its own continuous batching: hand it everything the client has.
        self.max_batch = max_batch
        self.engine_kwargs = engine_kwargs  # passed to `vllm.LLM` (dtype, gpu_memory_utilization, ...)
        self._llm: Any = None
        # The offline engine is not re-entrant: one batch at a time, loaded once.
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            vllm = _import_vllm()
            self._llm = vllm.LLM(model=self.path, **self.engine_kwargs)
        return self._llm

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        # Engine calls block for seconds to minutes: keep them off the event loop.
        return await asyncio.to_thread(self._generate_sync, list(requests))

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if not requests:
            return []
        vllm = _import_vllm()
        results: list[list[Sample] | None] = [None] * len(requests)
        with self._lock:
            llm = self._load()
            for call in plan_calls(requests):
                sampling = [to_vllm_sampling_params(vllm, p) for p in call.params]
                if call.kind == "completion":
                    outputs = llm.generate(call.inputs, sampling_params=sampling, use_tqdm=False)
                else:
                    outputs = llm.chat(call.inputs, sampling_params=sampling, use_tqdm=False)
                for index, params, output in zip(call.indices, call.params, outputs, strict=True):
                    results[index] = samples_from_output(output, params.n)
        return [row for row in results if row is not None]

    async def close(self) -> None:
        with self._lock:
            loaded, self._llm = self._llm is not None, None
        if loaded:
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _finish_reason(completion: CompletionOutputLike) -> FinishReason:
    if completion.finish_reason == "length":
        return "length"
    # vLLM's `stop_reason` is the stop string or token that matched, None when the model ended the text.
    # "abort" and None finish reasons only occur for cancelled requests; treat them like a normal stop.
    if completion.finish_reason == "stop" and getattr(completion, "stop_reason", "") is None:
        return "end"
    return "stop"
