"""Packing that keeps samples apart (`training.packing`), on the tiny model: per-sample losses of a packed
row against the same samples unpacked."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from sigma_assets.training.packing import LEAK_TOLERANCE, flash_attention_available, packing_leak

TEXTS = ["What is 3 + 4? We add 3 and 4 to get 7.", "Step 1: 5 * 2 = 10.\n\nStep 2: 10 - 3 = 7."]


@pytest.fixture(scope="module")
def samples(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [tokenizer(text)["input_ids"] for text in TEXTS]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_padding_free_packing_without_flash_attention_leaks_between_samples(
    tiny_model_dir, samples, attention
):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
    # Position ids restart at the second sample, but nothing stops it attending to the first.
    assert packing_leak(model, samples) > LEAK_TOLERANCE


def test_samples_kept_apart_give_each_its_own_loss(tiny_model_dir, samples):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert packing_leak(model, samples, block_mask=True) <= LEAK_TOLERANCE


def test_without_a_gpu_there_is_no_flash_attention_so_the_trainer_does_not_pack():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: flash-attention may be")
    assert flash_attention_available() is None
