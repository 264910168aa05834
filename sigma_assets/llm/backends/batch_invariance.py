"""What makes an in-process transformers row's tokens independent of the batch it is generated in.

A batched `generate` would make a sample depend on its batch three ways, each removed here:

- **Random numbers.** One generator per batch: every row's draws depend on the other rows. `RowSampler`
  gives each row its own `torch.Generator` (seeded from its request's seed and sample index) and draws
  one number per step from it, sampling by the inverse CDF of the row's own distribution (temperature,
  top-p). Greedy rows take the argmax.
- **Padding.** Left padding changes the width of every reduction over keys, and the last bits of the
  logits with it. `PromptCache` computes each prompt's keys and values alone (block by block, so that a
  block shared by many prompts, a few-shot template or a tree's problem, is computed once), and
  `row_attention` attends each decoding row to its own keys only, never to padding.
- **Batch size.** CPU matrix kernels round a row differently when the batch has fewer rows than their
  small-matrix threshold (here below 12: `ROW_FLOOR`); a smaller batch is filled up with rows that
  decode one token and are dropped.

What remains shared is exact: every row goes through the same kernels with the same shapes whatever its
neighbours (`sigma_assets_tests/test_batch_invariance.py` checks it on this machine's kernels).
"""

from __future__ import annotations

import contextvars
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sigma_assets.llm.generation import SamplingParams

# Rows per decoding batch at least: measured on x86 CPU builds of torch 2.13 (oneDNN/MKL sgemm), a row of
# a matrix product with 12 or more rows comes out bit-identical whatever the other rows and their count;
# with fewer, rows are computed in blocks of 4 and a row's result depends on where it falls. Below about
# 12 rows a decoding step costs the same (the weights are read once per step), so filling up is cheap.
ROW_FLOOR = 12
# Tokens per prefill block: a block's keys and values are computed from the block and its prefix only,
# so a block is the unit of reuse between prompts.
PREFILL_BLOCK = 64
ATTENTION = "sigma_rows"

# The left-padding width of each row of the decoding batch in flight, and how many rows are real.
_ROW_STARTS: contextvars.ContextVar[tuple[list[int], int] | None] = contextvars.ContextVar(
    "sigma_row_starts", default=None
)


# -- sampling ------------------------------------------------------------------------------------------


class RowSampler:
    """A logits processor that picks every row's next token itself, leaving generate() one to take.

    Each row draws from its own `torch.Generator`, one uniform number per step whether or not it is
    still running, so a row's t-th token always uses the t-th number of its own stream. A row past its
    own token limit is made to end (the caller cuts it back to the limit).
    """

    def __init__(
        self, params: Sequence[SamplingParams], seeds: Sequence[int], width: int, eos_id: int | None
    ):
        import torch

        self.width = width
        self.eos_id = eos_id
        self.limits = torch.tensor([p.max_tokens for p in params])
        temperatures = torch.tensor([p.temperature for p in params], dtype=torch.float32)
        self.sampled = temperatures > 0
        self.temperatures = temperatures[self.sampled]
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)[self.sampled]
        self.generators = [
            torch.Generator().manual_seed(seed)
            for seed, p in zip(seeds, params, strict=True)
            if p.temperature > 0
        ]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        device = scores.device
        tokens = scores.argmax(dim=-1)
        if self.generators:
            uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
            sampled = self.sampled.to(device)
            probs = torch.softmax(scores[sampled].float() / self.temperatures.to(device)[:, None], dim=-1)
            tokens[sampled] = sample_tokens(probs, self.top_p.to(device), uniforms.to(device))
        if self.eos_id is not None:
            tokens[self.limits.to(device) <= input_ids.shape[1] - self.width] = self.eos_id
        chosen = torch.full_like(scores, float("-inf"))
        chosen.scatter_(1, tokens[:, None], 0.0)
        return chosen


def sample_tokens(probs: Any, top_p: Any, uniforms: Any) -> Any:
    """Per row, the token that `uniforms[row]` picks from `probs[row]` cut to its top-p nucleus."""
    import torch

    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    whole = top_p >= 1
    if whole.any():  # no nucleus: the distribution in token order, no sort needed
        tokens[whole] = _inverse_cdf(probs[whole], uniforms[whole])
    nucleus = ~whole
    if nucleus.any():
        ordered, order = probs[nucleus].sort(dim=-1, descending=True, stable=True)
        # Keep the most likely tokens until their mass reaches top_p (the first one always).
        before = ordered.cumsum(dim=-1) - ordered
        ordered = ordered.masked_fill(before >= top_p[nucleus, None], 0.0)
        picks = _inverse_cdf(ordered, uniforms[nucleus])
        tokens[nucleus] = order.gather(1, picks[:, None]).squeeze(1)
    return tokens


def _inverse_cdf(probs: Any, uniforms: Any) -> Any:
    """The first token whose cumulative mass exceeds `uniform` times the row's total mass."""
    import torch

    cumulative = probs.double().cumsum(dim=-1)
    target = uniforms * cumulative[:, -1]
    picks = torch.searchsorted(cumulative, target[:, None], right=True).squeeze(1)
    picks = picks.clamp_(max=probs.shape[1] - 1)
    # Rounding at the very top of the range can land on a token without mass: take the likeliest.
    empty = probs.gather(1, picks[:, None]).squeeze(1) <= 0
    return torch.where(empty, probs.argmax(dim=-1), picks)


def row_seed(seed: int, sample: int) -> int:
    """The seed of one sample's own generator, fixed by its request's seed and its index."""
    digest = hashlib.sha256(f"{seed}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class RowStops:
    """A stopping criterion that ends each row at its own stop strings."""

    def __init__(self, stops: Sequence[tuple[str, ...]], criteria: Callable[[tuple[str, ...]], Any]):
        import torch

        self.groups = [
            (criteria(stop), torch.tensor([s == stop for s in stops]))
            for stop in dict.fromkeys(stops)
            if stop
        ]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion, rows in self.groups:
            done |= criterion(input_ids, scores) & rows.to(input_ids.device)
        return done


# -- attention -----------------------------------------------------------------------------------------


def register_row_attention() -> str:
    """Register `row_attention` with transformers (once per process); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, row_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # prefill blocks use sdpa's causal mask
    return ATTENTION


def row_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
) -> tuple[Any, None]:
    """sdpa, except while decoding a batch (`decoding_rows`): then each row attends to its own keys
    alone, cut from the left-padded cache, so its result has the shapes it would have on its own."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows = _ROW_STARTS.get()
    if rows is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import torch

    starts, real = rows
    window = kwargs.pop("sliding_window", None)
    kwargs["is_causal"] = False  # one query token: every key of its row is in its past
    # The filler rows get zeros: nothing of theirs is kept, and their attention would cost as much.
    out = torch.zeros(
        (query.shape[0], 1, query.shape[1], query.shape[3]), dtype=query.dtype, device=query.device
    )
    for b in range(real):
        start = starts[b] if window is None else max(starts[b], key.shape[2] - window)
        attended, _ = sdpa_attention_forward(
            module, query[b : b + 1], key[b : b + 1, :, start:], value[b : b + 1, :, start:], None, **kwargs
        )
        out[b : b + 1] = attended
    return out, None


@contextmanager
def decoding_rows(starts: list[int], real: int) -> Iterator[None]:
    """While active, `row_attention` decodes row b from key position `starts[b]` on; rows from `real`
    on are filler."""
    token = _ROW_STARTS.set((starts, real))
    try:
        yield
    finally:
        _ROW_STARTS.reset(token)


# -- prefill -------------------------------------------------------------------------------------------

Layers = list[tuple[Any, Any]]  # per layer: (keys, values), each (1, kv_heads, tokens, head_dim)


class PromptCache:
    """Prompt keys and values, computed block by block and kept (least recently used first out).

    Block i is always computed from its own tokens with blocks 0..i-1 as its past, never together with
    other blocks, so its values are the same whether it comes from the cache or is computed afresh:
    the cache saves time and changes nothing.
    """

    def __init__(self, max_bytes: int = 512 * 2**20, block: int = PREFILL_BLOCK):
        self.max_bytes = max_bytes
        self.block = block
        self._blocks: OrderedDict[bytes, Layers] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._blocks.clear()
        self._bytes = 0

    def layers(self, model: Any, ids: Sequence[int]) -> Layers | None:
        """The keys and values of `ids` on `model` (None for no tokens)."""
        layers: Layers | None = None
        done = 0
        digest = hashlib.sha256()
        for end in range(self.block, len(ids) + 1, self.block):
            digest.update(b"".join(t.to_bytes(4, "little") for t in ids[done:end]))
            key = digest.copy().digest()
            block = self._blocks.get(key)
            if block is None:
                self.misses += 1
                block = _forward(model, ids[done:end], layers)
                self._keep(key, block)
            else:
                self.hits += 1
                self._blocks.move_to_end(key)
            layers = _concat(layers, block)
            done = end
        if done < len(ids):  # the last, partial block is the prompt's own: computed every time
            layers = _concat(layers, _forward(model, ids[done:], layers))
        return layers

    def _keep(self, key: bytes, block: Layers) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in block)
        if size > self.max_bytes:
            return
        self._blocks[key] = block
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._blocks.popitem(last=False)
            self._bytes -= sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in old)


def _forward(model: Any, tokens: Sequence[int], past: Layers | None) -> Layers:
    """The keys and values of `tokens` following `past` (one forward, its own shapes only)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    offset = 0
    if past is not None:
        for index, (keys, values) in enumerate(past):
            cache.update(keys, values, index)
        offset = past[0][0].shape[2]
    device = model.device
    input_ids = torch.tensor([list(tokens)], device=device)
    positions = torch.arange(offset, offset + len(tokens), device=device)[None, :]
    model(
        input_ids=input_ids,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument(model): cache},
    )
    return [(k[:, :, offset:].clone(), v[:, :, offset:].clone()) for k, v in cache_layers(cache)]


def _concat(past: Layers | None, block: Layers) -> Layers:
    import torch

    if past is None:
        return block
    return [
        (torch.cat([pk, bk], dim=2), torch.cat([pv, bv], dim=2))
        for (pk, pv), (bk, bv) in zip(past, block, strict=True)
    ]


def cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """A `DynamicCache`'s per-layer (keys, values) in transformers 5 (`layers`) and 4 (`key_cache`)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def cache_argument(model: Any) -> str:
    """The name a model's forward takes its cache under: `cache` (transformers 5) or `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def batch_cache(prompts: Sequence[Layers | None], lengths: Sequence[int], width: int) -> Any:
    """A left-padded `DynamicCache` of `width` positions holding each row's prompt keys and values at
    its right edge (zeros, masked, before them)."""
    from transformers import DynamicCache

    template = next(layers for layers in prompts if layers is not None)
    cache = DynamicCache()
    for index, (keys, values) in enumerate(template):
        shape = (len(prompts), keys.shape[1], width, keys.shape[3])
        all_keys = keys.new_zeros(shape)
        all_values = values.new_zeros((*shape[:3], values.shape[3]))
        for row, (layers, length) in enumerate(zip(prompts, lengths, strict=True)):
            if layers is not None:
                all_keys[row, :, width - length :] = layers[index][0][0]
                all_values[row, :, width - length :] = layers[index][1][0]
        cache.update(all_keys, all_values, index)
    return cache
