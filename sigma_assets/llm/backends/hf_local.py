"""An in-process `Backend` on Hugging Face transformers: batched `model.generate` on CPU or one GPU.

Meant for small local models (SmolLM2-135M, the tiny test model): no server, no network. Requests
that share sampling params are batched into one `generate` call with `num_return_sequences=n`.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

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
        batch_size: int = 64,
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
        self.batch_size = batch_size  # prompts per `model.generate` call (each expands to n sequences)
        self._device_spec = device
        self._dtype_spec = dtype
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None
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
                    self.path, dtype=_resolve_dtype(self._dtype_spec, device)
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
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    # -- the work ------------------------------------------------------------------------------------

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        if not requests:
            return []
        with self._lock:
            tokenizer, model = self._load()
            prompt_ids = [self.encode_prompt(tokenizer, r) for r in requests]
            results: list[list[Sample] | None] = [None] * len(requests)
            # A prompt the model cannot read at all gets no samples, as a server answers "maximum
            # context length": the caller decides what that means (the search makes it a -1 terminal).
            context = getattr(model.config, "max_position_embeddings", None)
            for i, ids in enumerate(prompt_ids):
                if context is not None and len(ids) >= context:
                    overflow = Sample("", finish_reason="context_overflow", prompt_tokens=len(ids))
                    results[i] = [overflow] * requests[i].params.n
            # Requests that differ only in their seed share a generate call (MCTS seeds every node
            # differently); the chunk is seeded from all its requests' seeds. Dict keeps first-seen order.
            groups: dict[SamplingParams, list[int]] = {}
            for i, request in enumerate(requests):
                if results[i] is None:
                    groups.setdefault(replace(request.params, seed=None), []).append(i)
            for params, indices in groups.items():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    seeds = [requests[i].params.seed for i in chunk]
                    chunk_seed = None if all(x is None for x in seeds) else _combined_seed(seeds)
                    samples = self._generate_chunk(
                        tokenizer,
                        model,
                        [prompt_ids[i] for i in chunk],
                        replace(params, seed=chunk_seed),
                        start,
                    )
                    for i, request_samples in zip(chunk, samples, strict=True):
                        results[i] = request_samples
            return [r for r in results if r is not None]

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

    def _generate_chunk(
        self,
        tokenizer: Any,
        model: Any,
        prompts: list[list[int]],
        params: SamplingParams,
        chunk_index: int,
    ) -> list[list[Sample]]:
        import torch

        batch = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self._device)
        width = batch["input_ids"].shape[1]
        sampling = params.temperature > 0
        # Greedy decoding returns the same sequence n times, so compute it once and copy.
        per_prompt = params.n if sampling else 1
        eos_ids = _eos_ids(model, tokenizer)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "num_return_sequences": per_prompt,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": sorted(eos_ids),
        }
        if sampling:
            # top_k=0 switches off transformers' default top-k of 50: plain temperature/top-p, as servers do.
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)

        with torch.inference_mode(), torch.random.fork_rng(devices=_rng_devices(self._device)):
            if params.seed is not None and sampling:
                # generate() has no generator argument: seed the global RNG inside a fork, offset per
                # chunk so chunks differ. Reproducible for the same batch of requests.
                torch.manual_seed(params.seed + chunk_index)
            output = model.generate(**batch, **kwargs)

        generated = output[:, width:].tolist()
        samples: list[list[Sample]] = []
        for p, prompt in enumerate(prompts):
            rows = generated[p * per_prompt : (p + 1) * per_prompt]
            # A prompt is read once however many samples it yields: count its tokens on the first only.
            decoded = [
                _finish(tokenizer, row, params, eos_ids, len(prompt) if k == 0 else 0)
                for k, row in enumerate(rows)
            ]
            if not sampling:  # greedy: one decode serves all n samples; its prompt was read once
                decoded += [replace(decoded[0], prompt_tokens=0)] * (params.n - 1)
            samples.append(decoded)
        return samples


def _combined_seed(seeds: Sequence[int | None]) -> int:
    """One seed for a chunk, fixed by the seeds of its requests in order."""
    digest = hashlib.sha256(repr(list(seeds)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


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


def _rng_devices(device: str | None) -> list[Any]:
    import torch

    if device and device.startswith("cuda"):
        return [torch.device(device).index or 0]
    return []


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
