"""An in-process `Backend` on Hugging Face transformers: batched `model.generate` on CPU or one GPU.

Meant for small local models (SmolLM2-135M, the tiny test model): no server, no network. A batch of
requests is one `generate` call (one row per sample) whatever their sampling parameters: each row
samples with its own temperature, top-p, token limit, stop strings and random generator. Each prompt is
read once however many samples it has, and a sample depends on its request's prompt, seed and sample
index only, bit for bit, never on the batch it shared (`batch_invariance`).
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sigma_assets.llm.backends.batch_invariance import (
    ROW_FLOOR,
    Layers,
    PromptCache,
    RowSampler,
    RowStops,
    batch_cache,
    cache_argument,
    decoding_rows,
    register_row_attention,
    row_seed,
)
from sigma_assets.llm.generation import GenerationRequest, Sample, SamplingParams


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        # bf16 halves memory and is fast on GPUs; on CPU fp32 is both faster and exact.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


class TransformersBackend:
    """`Backend` running a local causal LM with transformers; the model loads lazily on first `generate`."""

    name = "transformers"
    endpoint = "local"

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: Any = "auto",
        batch_size: int = 128,
        max_batch: int = 64,
        model_name: str | None = None,
    ) -> None:
        if batch_size < 1 or max_batch < 1:
            raise ValueError("batch_size and max_batch must be at least 1")
        self.path = str(model_path)
        # The name that identifies the model in store keys and metadata: stable across machines,
        # unlike the folder a model was converted into.
        self.model = model_name or self.path
        self.max_batch = max_batch
        self.batch_size = batch_size  # sequences (samples) per `model.generate` call
        self._device_spec = device
        self._dtype_spec = dtype
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None
        self._stops: dict[tuple[str, ...], Any] = {}  # stop strings -> their StopStringCriteria
        self._prompts = PromptCache()  # prompt blocks' keys and values, shared between calls
        # One lock for loading and generating: transformers models are not safe to drive from two threads.
        self._lock = threading.RLock()

    # -- loading -------------------------------------------------------------------------------------

    def load_tokenizer(self) -> Any:
        """The tokenizer, left-padding, loaded once (also usable for counting tokens without the model)."""
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path)
                tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                self._tokenizer = tokenizer
            return self._tokenizer

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            tokenizer = self.load_tokenizer()
            if self._model is None:
                from transformers import AutoModelForCausalLM

                device = _resolve_device(self._device_spec)
                model = AutoModelForCausalLM.from_pretrained(
                    self.path,
                    dtype=_resolve_dtype(self._dtype_spec, device),
                    attn_implementation=register_row_attention(),
                )
                model.to(device)
                model.eval()
                self._device = device
                self._model = model
            return tokenizer, self._model

    # -- Backend protocol ----------------------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        # generate() is seconds of blocking compute: keep it off the event loop.
        return await asyncio.to_thread(self._generate_sync, list(requests))

    async def close(self) -> None:
        with self._lock:
            on_cuda = bool(self._device and self._device.startswith("cuda"))
            self._model = None
            self._tokenizer = None
            self._stops = {}
            self._prompts.clear()
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    # -- the work ------------------------------------------------------------------------------------

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if not requests:
            return []
        import torch

        with self._lock:
            tokenizer, model = self._load()
            prompt_ids = [self.encode_prompt(tokenizer, r) for r in requests]
            results: list[list[Sample | None]] = [[None] * r.params.n for r in requests]
            # A prompt the model cannot read at all gets no samples, as a server answers "maximum
            # context length": the caller decides what that means (the search makes it a -1 terminal).
            context = getattr(model.config, "max_position_embeddings", None)
            rows: list[_Row] = []
            for i, (request, ids) in enumerate(zip(requests, prompt_ids, strict=True)):
                params = request.params
                if context is not None and len(ids) >= context:
                    overflow = Sample("", finish_reason="context_overflow", prompt_tokens=len(ids))
                    results[i] = [overflow] * params.n
                    continue
                # Greedy decoding returns the same sequence n times, so compute it once and copy.
                for k in range(params.n if params.temperature > 0 else 1):
                    rows.append(_Row(i, k, ids, params, _row_seed(params.seed, k)))
            # Every request shares one generate call whatever its sampling parameters (each row samples
            # with its own temperature, top-p, token limit, stop strings and generator), so a batch
            # is one call. Sorted by length so that a chunk pads little.
            rows.sort(key=lambda row: len(row.prompt))
            eos_ids = _eos_ids(model, tokenizer)
            # Prefill included: a cached prompt block made outside it would keep its autograd graph.
            with torch.inference_mode():
                for start in range(0, len(rows), self.batch_size):
                    chunk = rows[start : start + self.batch_size]
                    for row, sample in zip(
                        chunk, self._generate_rows(tokenizer, model, chunk, eos_ids), strict=True
                    ):
                        results[row.request][row.sample] = sample
            out: list[list[Sample]] = []
            for request, row_samples in zip(requests, results, strict=True):
                first = row_samples[0]
                assert first is not None
                if request.params.temperature <= 0 and first.finish_reason != "context_overflow":
                    # Greedy: one decode serves all n samples; its prompt was read once.
                    row_samples = [first] + [replace(first, prompt_tokens=0)] * (request.params.n - 1)
                out.append([sample for sample in row_samples if sample is not None])
            return out

    @staticmethod
    def encode_prompt(tokenizer: Any, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            text = tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                tokenize=False,
                add_generation_prompt=True,
            )
            # The chat template already spells out its special tokens.
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        # A completion prompt is encoded as vLLM's and transformers' completion endpoints encode it: with
        # the BOS token a tokenizer adds by itself (Llama-3, DeepSeekMath; none for ChatML models).
        return list(tokenizer(request.prompt or "", add_special_tokens=True)["input_ids"])

    def _generate_rows(self, tokenizer: Any, model: Any, rows: list[_Row], eos_ids: set[int]) -> list[Sample]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        # Each prompt's keys and values, computed once however many samples it has (all but its last
        # token, which opens decoding).
        prompts: dict[tuple[int, ...], Layers | None] = {}
        for row in rows:
            key = tuple(row.prompt)
            if key not in prompts:
                prompts[key] = self._prompts.layers(model, row.prompt[:-1])
        real = len(rows)
        # Filler rows (greedy, one token) keep every matrix product above the kernels' small-batch path.
        filler = _Row(-1, 0, rows[0].prompt, SamplingParams(max_tokens=1), 0)
        batch_rows = rows + [filler] * (ROW_FLOOR - real)
        width = max(len(row.prompt) for row in batch_rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r.prompt)) + r.prompt for r in batch_rows])
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in batch_rows])
        kwargs: dict[str, Any] = {}
        if width > 1:
            kwargs[cache_argument(model)] = batch_cache(
                [prompts[tuple(r.prompt)] for r in batch_rows],
                [len(r.prompt) - 1 for r in batch_rows],
                width - 1,
            )
        sampler = RowSampler(
            [row.params for row in batch_rows],
            [row.seed for row in batch_rows],
            width,
            min(eos_ids, default=None),
        )
        stops = RowStops([row.params.stop for row in batch_rows], self._stop_criteria(tokenizer))
        with decoding_rows([width - len(r.prompt) for r in batch_rows], real):
            # generate() only takes the token the sampler left standing (greedy over its one-hot scores).
            output = model.generate(
                input_ids=input_ids.to(self._device),
                attention_mask=mask.to(self._device),
                max_new_tokens=max(row.params.max_tokens for row in rows),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([stops]),
                pad_token_id=pad,
                eos_token_id=sorted(eos_ids),
                **kwargs,
            )
        generated = output[:real, width:].tolist()
        # A prompt is read once however many samples it yields: count its tokens on the first only.
        return [
            _finish(
                tokenizer,
                tokens[: row.params.max_tokens],  # past its own limit a row was only made to end
                row.params,
                eos_ids,
                len(row.prompt) if row.sample == 0 else 0,
            )
            for row, tokens in zip(rows, generated, strict=True)
        ]

    def _stop_criteria(self, tokenizer: Any) -> Callable[[tuple[str, ...]], Any]:
        """One transformers `StopStringCriteria` per set of stop strings, built once per backend."""
        from transformers import StopStringCriteria

        def criteria(stop: tuple[str, ...]) -> Any:
            if stop not in self._stops:
                self._stops[stop] = StopStringCriteria(tokenizer, list(stop))
            return self._stops[stop]

        return criteria


@dataclass(frozen=True)
class _Row:
    """One sequence to generate: sample `sample` of request `request`."""

    request: int
    sample: int
    prompt: list[int]
    params: SamplingParams
    seed: int


def _row_seed(seed: int | None, sample: int) -> int:
    if seed is None:
        return secrets.randbits(63)  # an unseeded request samples anew every time, as on a server
    return row_seed(seed, sample)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _finish(
    tokenizer: Any, row: list[int], params: SamplingParams, eos_ids: set[int], prompt_len: int
) -> Sample:
    """Turn one generated row into a Sample: cut at eos, padding or the first stop string."""
    eos_at = next((k for k, token in enumerate(row) if token in eos_ids), None)
    if eos_at is not None:
        kept = row[:eos_at]
    else:
        # A row ended by a stop string while others ran on is right-filled with pad.
        end = len(row)
        while end and row[end - 1] == tokenizer.pad_token_id:
            end -= 1
        kept = row[:end]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cuts = [i for i in (text.find(s) for s in params.stop if s) if i >= 0]
    hit_stop = bool(cuts)
    if hit_stop:
        text = text[: min(cuts)]
    # Count a real eos as generated; with pad == eos, an "eos" after a stop string is only padding.
    completion = len(kept) + (1 if eos_at is not None and not hit_stop else 0)
    # A stop string straddling the prompt boundary also ends generation early without showing in the text.
    stopped = eos_at is not None or hit_stop or completion < params.max_tokens
    ended = eos_at is not None and not hit_stop  # the model closed the text itself
    return Sample(
        text=text,
        finish_reason="end" if ended else "stop" if stopped else "length",
        prompt_tokens=prompt_len,
        completion_tokens=completion,
    )
