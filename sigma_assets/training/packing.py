"""Packing that keeps samples apart: padding-free packing only where the attention respects the boundaries.

Padding-free packing puts several samples in one row, restarts the position ids at each sample and passes
no attention mask. Only an attention implementation that reads the boundaries from the position ids
(flash-attention) keeps each sample from attending to the ones before it; sdpa and eager attend across
them, and a packed sample's loss is then not its own (on a 2-layer Qwen2 its logits move by 0.25).
`packing_leak` measures this on the model itself, so the trainer packs only when it is zero and falls
back to unpacked batches, saying why, otherwise.

No Dagster imports.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

# Per-sample losses of a packed row may differ from the unpacked ones by rounding only.
LEAK_TOLERANCE = 1e-4


def flash_attention_available() -> str | None:
    """The flash-attention implementation transformers can use here (a CUDA device and the package), or
    None."""
    import torch

    if not torch.cuda.is_available():
        return None
    if importlib.util.find_spec("flash_attn_interface") is not None:
        return "flash_attention_3"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def per_sample_losses(
    model: Any, samples: Sequence[Sequence[int]], packed: bool, block_mask: bool = False
) -> list[float]:
    """The next-token loss of each sample, computed unpacked (one row each) or packed into one row as
    padding-free packing feeds it (position ids restarting, no mask). With `block_mask`, the packed row
    gets a block-diagonal causal mask instead: a correct packing, for comparison."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device

    def losses_of(logits: Any, ids: Any, spans: list[tuple[int, int]]) -> list[float]:
        out = []
        for start, end in spans:
            predicted, target = logits[0, start : end - 1], ids[0, start + 1 : end]
            out.append(float(F.cross_entropy(predicted.float(), target)))
        return out

    with torch.no_grad():
        if not packed:
            result = []
            for sample in samples:
                ids = torch.tensor([list(sample)], device=device)
                result += losses_of(model(input_ids=ids).logits, ids, [(0, len(sample))])
            return result
        ids = torch.tensor([[token for sample in samples for token in sample]], device=device)
        positions, spans, start = [], [], 0
        for sample in samples:
            positions += list(range(len(sample)))
            spans.append((start, start + len(sample)))
            start += len(sample)
        position_ids = torch.tensor([positions], device=device)
        kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": position_ids}
        if block_mask:
            total = ids.shape[1]
            mask = torch.zeros(total, total, dtype=torch.bool, device=device)
            for a, b in spans:
                mask[a:b, a:b] = torch.tril(torch.ones(b - a, b - a, dtype=torch.bool, device=device))
            dtype = next(model.parameters()).dtype
            kwargs["attention_mask"] = torch.where(mask, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]
        return losses_of(model(**kwargs).logits, ids, spans)


def packing_leak(model: Any, samples: Sequence[Sequence[int]], block_mask: bool = False) -> float:
    """How far packed per-sample losses are from the unpacked ones (0: the samples stay apart)."""
    alone = per_sample_losses(model, samples, packed=False)
    together = per_sample_losses(model, samples, packed=True, block_mask=block_mask)
    return max(abs(a - b) for a, b in zip(alone, together, strict=True))
