"""A tiny model for fast offline tests and benchmarks: useless as a solver, real as a model.

A randomly initialised 2-layer Qwen2 with its own 512-token BPE vocabulary, trained on a few KB of
text in under a second: it exercises the whole generation and training path in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from sigma_assets.llm.local_models import CHATML_TEMPLATE, build_atomically


def build_tiny_model(dest: Path) -> Path:
    """A ~100K-parameter random Qwen2 with a 512-token BPE tokenizer, for fast offline tests."""
    return build_atomically(Path(dest), _build_tiny)


def _tiny_corpus() -> str:
    # Deterministic, a few KB: the characters and pieces a math transcript is made of.
    lines = []
    for a in range(13):
        for b in range(0, 13, 3):
            lines.append(
                f"What is {a} + {b}? We add {a} and {b} to get {a + b}. The answer is \\boxed{{{a + b}}}."
            )
            lines.append(f"Step 1: {a} * {b} = {a * b}.\n\nStep 2: {a} - {b} = {a - b}.")
    lines.append("plus minus times divided equals sum product difference quotient fraction square root")
    lines.append("Let x be the number. Then 2x + 3 = 11, so x = 4. Therefore the final answer is \\boxed{4}.")
    return "\n".join(lines)


def _build_tiny(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_tiny_corpus()], trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # A wider init than the default 0.02 so logits are not near-uniform and outputs vary by prompt.
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
