"""The SFT trainer process: TRL's SFTTrainer on a chat-format parquet, run under Dagster Pipes.

    python -m sigma_assets.training.train --spec spec.json
    accelerate launch -m sigma_assets.training.train --spec spec.json
    torchrun --nproc-per-node 8 -m sigma_assets.training.train --spec spec.json

The spec (a JSON file, so every rank of a multi-GPU launch reads the same one) names the dataset, the
base model, the output folder and the training profile. Launched by Dagster, rank 0 streams each
logged step back through Pipes and reports the materialization; an exception is reported with its
own text and traceback before the process exits non-zero. Launched by hand, it logs to stderr.

The loss is on the assistant turn only: each `messages` row becomes a conversational
prompt/completion pair, and TRL's completion-only loss masks the prompt (whatever the chat template).

Imports `dagster_pipes`, never `dagster`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from upath import UPath

from sigma_assets.training.checkpoints import CheckpointStore, Resume, training_fingerprint
from sigma_assets.training.packing import LEAK_TOLERANCE, flash_attention_available, packing_leak
from sigma_assets.training.profiles import TrainingProfile

# Files of a trained model folder besides the weights and tokenizer.
TRAINING_ARGS_FILE = "training_args.json"
LOSS_LOG_FILE = "loss_log.json"
# Written last: identifies this training run (evaluation keys its cached answers by it).
TRAINING_RUN_FILE = "training_run.json"


@dataclass(frozen=True)
class TrainingSpec:
    dataset_path: str  # a local parquet file with a `messages` column
    base_model: str  # a local model folder
    output_dir: str
    profile: TrainingProfile
    # Where checkpoints go (`<root>/models/<variant>/checkpoints`, a path or URL) and how to reach it
    # (endpoint and region only: keys come from the environment); None: no checkpoints.
    checkpoint_dir: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "profile": self.profile.to_dict()}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        data = json.loads(text)
        return cls(**{**data, "profile": TrainingProfile.from_dict(data["profile"])})


@dataclass(frozen=True)
class TrainingResult:
    output_dir: str
    steps: int
    samples: int
    train_runtime_s: float
    tokens: int
    tokens_per_s: float
    final_loss: float | None
    losses: list[tuple[int, float]]
    run_id: str

    # Resumption: the checkpoint step it started from (0: fresh), steps of the crashed run redone, and
    # why it started fresh although checkpoints were there (another data set or profile).
    resumed_from_step: int = 0
    steps_lost: int = 0
    fresh_because: str | None = None
    packing: str = ""  # packed, or why not
    checkpoints_saved: int = 0
    checkpoint_s: float = 0.0  # time spent writing them

    def metadata(self) -> dict[str, Any]:
        return {
            "resumed_from_step": self.resumed_from_step,
            "steps_lost": self.steps_lost,
            "fresh_because": self.fresh_because or "",
            "packing": self.packing,
            "checkpoints_saved": self.checkpoints_saved,
            "checkpoint_s": round(self.checkpoint_s, 2),
            "steps": self.steps,
            "samples": self.samples,
            "train_runtime_s": round(self.train_runtime_s, 2),
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "final_loss": self.final_loss,
            "losses": [[step, loss] for step, loss in self.losses],
            "training_run": self.run_id,
        }


def _chat_to_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    messages = row["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(
            f"a training row must end with an assistant turn, got roles {[m['role'] for m in messages]}"
        )
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _checkpointing(enabled: bool) -> dict[str, bool]:
    """Activation (gradient) checkpointing under the name the installed transformers uses: 5.x renamed
    `gradient_checkpointing` to `activation_checkpointing` and warns on the old name."""
    from transformers import TrainingArguments

    parameters = inspect.signature(TrainingArguments.__init__).parameters
    name = (
        "activation_checkpointing" if "activation_checkpointing" in parameters else "gradient_checkpointing"
    )
    return {name: enabled}


def _packing(
    profile: TrainingProfile, flash: str | None, model: Any, tokenizer: Any, data: Any
) -> tuple[bool, str]:
    """Whether to pack padding-free, and what to say about it: only with an attention implementation
    that keeps packed samples apart, checked on the model itself (`packing.packing_leak`)."""
    if not profile.packing:
        return False, "packing off (profile)"
    if flash is None:
        return False, "packing off: padding-free packing needs flash-attention on a GPU, which is not here"
    probe = [
        tokenizer(str(row["completion"][0]["content"]))["input_ids"][:64]
        for row in data.select(range(min(2, len(data))))
    ]
    leak = packing_leak(model, probe) if len(probe) == 2 else 0.0
    if leak > LEAK_TOLERANCE:
        return (
            False,
            f"packing off: packed samples attend to each other under {flash} (loss moves by {leak:.3g})",
        )
    return True, f"packed, padding-free, with {flash}"


def _liger_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def _checkpoint_store(spec: TrainingSpec, staging: Path) -> CheckpointStore | None:
    profile = spec.profile
    if spec.checkpoint_dir is None or (profile.checkpoint_steps <= 0 and profile.checkpoint_minutes <= 0):
        return None
    base = UPath(spec.checkpoint_dir, **spec.storage_options)
    fingerprint = training_fingerprint(spec.dataset_path, spec.base_model, profile.to_dict())
    return CheckpointStore(base, fingerprint, staging, keep=profile.keep_checkpoints)


def _wait_for_resume(store: CheckpointStore, timeout_s: float = 600.0) -> Resume:
    """Another rank of the launch: wait for rank 0 to have set up the checkpoint to resume from."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = store.ready()
        if ready is not None:
            return ready
        time.sleep(0.5)
    raise TimeoutError(f"rank 0 did not prepare the checkpoints in {store.dir} within {timeout_s:.0f} s")


def train(spec: TrainingSpec, log: Callable[[str], None] = print) -> TrainingResult:
    """Fine-tune `spec.base_model` on `spec.dataset_path` and save it to `spec.output_dir`."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    profile = spec.profile
    if not Path(spec.dataset_path).is_file():
        raise FileNotFoundError(f"training data {spec.dataset_path} does not exist")
    data = datasets.load_dataset("parquet", data_files=spec.dataset_path, split="train")
    if "messages" not in data.column_names:
        raise ValueError(
            f"{spec.dataset_path}: no `messages` column (columns: {', '.join(data.column_names)})"
        )
    if len(data) == 0:
        raise ValueError(f"{spec.dataset_path}: no training samples")
    data = data.map(_chat_to_prompt_completion, remove_columns=data.column_names)

    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if profile.bf16 else torch.float32
    flash = flash_attention_available() if profile.packing else None
    model = AutoModelForCausalLM.from_pretrained(
        spec.base_model, dtype=dtype, **({"attn_implementation": flash} if flash else {})
    )
    packing, packing_note = _packing(profile, flash, model, tokenizer, data)
    log(packing_note)

    store = _checkpoint_store(spec, Path(spec.output_dir).parent / f"{Path(spec.output_dir).name}.staging")
    resume = store.resume() if store is not None and is_main_process() else None
    if store is not None and not is_main_process():
        resume = _wait_for_resume(store)
    if resume is not None and resume.checkpoint:
        log(f"resuming from checkpoint {resume.step} ({resume.steps_lost} steps of the last run lost)")
    elif resume is not None and resume.fresh_because:
        log(resume.fresh_because)
    by_steps = profile.checkpoint_steps > 0
    config = SFTConfig(
        output_dir=str(store.output_dir if store is not None else Path(spec.output_dir) / ".checkpoints"),
        num_train_epochs=profile.epochs,
        max_steps=profile.max_steps,
        per_device_train_batch_size=profile.per_device_batch,
        gradient_accumulation_steps=profile.gradient_accumulation(world_size()),
        learning_rate=profile.learning_rate,
        lr_scheduler_type=profile.scheduler,
        warmup_steps=profile.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        bf16=profile.bf16,
        use_cpu=profile.use_cpu,
        max_length=profile.max_length,
        packing=packing,
        padding_free=packing,
        completion_only_loss=True,
        **_checkpointing(profile.gradient_checkpointing),
        use_liger_kernel=_liger_available(),
        torch_compile=False,  # minutes of compilation per launch, and fragile across versions
        ddp_find_unused_parameters=False if world_size() > 1 else None,
        logging_steps=profile.logging_steps,
        # A checkpoint every `checkpoint_steps`; the wall-clock interval is the callback's (below).
        save_strategy="steps" if by_steps and store is not None else "no",
        save_steps=profile.checkpoint_steps if by_steps else 500,  # 500: the default, unused
        save_total_limit=None,  # the checkpoint store keeps the last `keep_checkpoints` complete ones
        report_to=[],
        seed=profile.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    tokens = [0]
    saving = [0, 0.0]  # checkpoints saved, seconds spent saving them

    class StreamLogs(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any):
            if not logs or not state.is_world_process_zero:
                return
            if "num_tokens" in logs:
                tokens[0] = int(logs["num_tokens"])
            shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()}
            log(f"step {state.global_step}/{state.max_steps}: {json.dumps(shown)}")

    class Checkpoints(TrainerCallback):
        """Marks each saved checkpoint complete (after the trainer wrote all of it) and saves on a
        wall-clock interval too, for long steps."""

        def __init__(self) -> None:
            self.last_save = time.monotonic()
            self.step_end = self.last_save

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
            self.step_end = time.monotonic()
            minutes = profile.checkpoint_minutes
            if minutes > 0 and time.monotonic() - self.last_save >= 60 * minutes:
                control.should_save = True
            if state.is_world_process_zero and store is not None:
                store.progress(state.global_step)
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any):
            if state.is_world_process_zero and store is not None:
                store.saved(state.global_step)
            self.last_save = time.monotonic()
            # What the checkpoint cost: the trainer saves between a step's end and this call.
            saving[0] += 1
            saving[1] += self.last_save - self.step_end

    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[StreamLogs(), *([Checkpoints()] if store is not None else [])],
    )
    trainer.remove_callback(PrinterCallback)  # StreamLogs reports every logged step already
    log(
        f"training {spec.base_model} on {len(data)} samples, profile {profile.name} "
        f"(effective batch {profile.per_device_batch * config.gradient_accumulation_steps * world_size()})"
    )
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume.checkpoint if resume is not None else None)
    runtime = time.perf_counter() - started
    # The whole loss log, the resumed run's steps included.
    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]

    run_id = uuid.uuid4().hex
    out = Path(spec.output_dir)
    trainer.save_model(str(out))  # safetensors; every rank takes part (FSDP gathers), the main one writes
    if trainer.is_world_process_zero():
        # The Trainer also pickles its arguments; no pickle goes to shared storage (JSON below instead).
        (out / "training_args.bin").unlink(missing_ok=True)
        tokenizer.save_pretrained(str(out))
        (out / TRAINING_ARGS_FILE).write_text(
            json.dumps({"profile": profile.to_dict(), "sft_config": config.to_dict()}, indent=2, default=str)
        )
        (out / LOSS_LOG_FILE).write_text(json.dumps(trainer.state.log_history, indent=2))
    final = losses[-1][1] if losses else None
    if final is not None and not math.isfinite(final):
        raise FloatingPointError(f"training loss is {final} at step {losses[-1][0]}")
    result = TrainingResult(
        output_dir=str(out),
        steps=int(output.global_step),
        samples=len(data),
        train_runtime_s=runtime,
        tokens=tokens[0],
        tokens_per_s=tokens[0] / runtime if runtime > 0 else 0.0,
        final_loss=final,
        losses=losses,
        run_id=run_id,
        resumed_from_step=resume.step if resume is not None else 0,
        steps_lost=resume.steps_lost if resume is not None else 0,
        fresh_because=resume.fresh_because if resume is not None else None,
        packing=packing_note,
        checkpoints_saved=saving[0],
        checkpoint_s=saving[1],
    )
    if trainer.is_world_process_zero():
        (out / TRAINING_RUN_FILE).write_text(json.dumps(result.metadata(), indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="the training spec (JSON file)")
    args = parser.parse_args(argv)
    spec = TrainingSpec.from_json(Path(args.spec).read_text())
    if not is_main_process():  # rank 0 speaks for the launch: logs arrive once
        train(spec, log=lambda line: None)
        return 0
    if "DAGSTER_PIPES_CONTEXT" not in os.environ:
        train(spec, log=lambda line: print(line, file=sys.stderr, flush=True))
        return 0

    from dagster_pipes import open_dagster_pipes

    # An exception raised inside the block is reported to Dagster (type, text, traceback) and re-raised.
    with open_dagster_pipes() as pipes:
        result = train(spec, log=pipes.log.info)
        pipes.report_asset_materialization(metadata=result.metadata())
    return 0


if __name__ == "__main__":
    # Under torchrun, a rank that raises writes its error and traceback where the launcher reports them.
    from torch.distributed.elastic.multiprocessing.errors import record

    raise SystemExit(record(main)())
