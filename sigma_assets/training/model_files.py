"""Trained model folders on the storage root: `<root>/models/<variant>/`, read back locally.

No Dagster imports.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from upath import UPath

from sigma_assets.data.storage import StorageRoot
from sigma_assets.training.train import TRAINING_RUN_FILE


def model_path(root: StorageRoot, variant: str) -> UPath:
    return root.path("models", variant)


def training_run(folder: str | Path) -> dict[str, Any]:
    """What the trainer recorded about the run that wrote `folder` (its id, steps, losses)."""
    path = Path(folder) / TRAINING_RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished trained model (no {TRAINING_RUN_FILE})")
    return json.loads(path.read_text())


@contextmanager
def local_model_dir(root: StorageRoot, variant: str) -> Iterator[Path]:
    """The trained model of `variant` as a local folder: in place on a local root, else a download."""
    remote = model_path(root, variant)
    if not root.is_s3:
        folder = Path(str(remote.path))
        training_run(folder)  # fails with a clear message when the model is missing or partial
        yield folder
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"sigma-model-{variant}-"))
    try:
        if not remote.joinpath(TRAINING_RUN_FILE).exists():
            raise FileNotFoundError(f"{remote} is not a finished trained model (no {TRAINING_RUN_FILE})")
        base = str(remote.path).rstrip("/") + "/"
        # The model's own files: not the training checkpoints kept under it.
        files = [f for f in remote.fs.find(base) if not f[len(base) :].startswith("checkpoints/")]
        local = [scratch / f[len(base) :] for f in files]
        for path in local:
            path.parent.mkdir(parents=True, exist_ok=True)
        remote.fs.get(files, [str(path) for path in local])
        training_run(scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reload_and_generate(
    folder: str | Path, prompt: str = "What is 2 + 3?", max_new_tokens: int = 8
) -> tuple[str, int]:
    """Load the folder with `AutoModelForCausalLM`/`AutoTokenizer` and greedily answer `prompt`.

    Returns the generated text and the number of new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    chat = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    new = out[0, ids["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True), int(new.numel())
