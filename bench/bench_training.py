"""SFT through the `finetuned_model` asset (Dagster run + Pipes subprocess, checkpoints on the storage
root) against a bare TRL script on the same data, base model and profile, ABBA order in one run; then
the cost of one checkpoint, as a share of the profiles' default interval.

    .venv/bin/python bench/bench_training.py [--model smollm2-135m-instruct] [--samples 32]
        [--max-steps 4] [--write docs/benchmarks.md]

Both sides start a fresh Python process that loads the model, trains and saves safetensors; the ratio
is bare wall time / asset wall time (1.0 = no overhead). The asset's runs save a checkpoint at their
last step (weights and optimizer, marked complete), so what checkpointing adds is in the asset's time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import dagster as dg
from common import report

from sigma_assets.data.arithmetic import arithmetic_problems
from sigma_assets.defs.shared.io_manager import AtomicParquetIOManager
from sigma_assets.defs.shared.resources import StorageResource
from sigma_assets.defs.training.assets import VARIANTS, finetuned_model
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.training.profiles import profile
from sigma_assets.training.sft_data import PathRecord, build_sft

REPO = Path(__file__).resolve().parent.parent

BARE_SCRIPT = textwrap.dedent(
    """
    import sys, torch, datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data_path, model_dir, out, max_steps, batch, accum, max_length, lr = sys.argv[1:]
    data = datasets.load_dataset("parquet", data_files=data_path, split="train")
    data = data.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                    remove_columns=data.column_names)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = SFTConfig(output_dir=out + "/ckpt", max_steps=int(max_steps),
                       per_device_train_batch_size=int(batch), gradient_accumulation_steps=int(accum),
                       learning_rate=float(lr), lr_scheduler_type="cosine",
                       bf16=False, use_cpu=True, max_length=int(max_length), packing=False,
                       completion_only_loss=True, logging_steps=1, save_strategy="no", report_to=[], seed=0,
                       disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(out)
    tokenizer.save_pretrained(out)
    """
)


def sft_frame(samples: int):
    problems = arithmetic_problems(samples)
    records = [
        PathRecord(
            pid, text, answer, (f"We work out: {text}", f"The answer is {answer}."), "shard-000", "0.7"
        )
        for pid, text, answer in problems
    ]
    with AnswerChecker() as checker:
        return build_sft(records, "sigma", checker.check_many, set()).frame


def bare_run(root: Path, model_dir: str, chosen, env: dict[str, str], name: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            BARE_SCRIPT,
            str(root / "assets" / "sft_dataset" / "sigma.parquet"),
            model_dir,
            str(root / name),
            str(chosen.max_steps),
            str(chosen.per_device_batch),
            str(chosen.gradient_accumulation(1)),
            str(chosen.max_length),
            str(chosen.learning_rate),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.perf_counter() - started


def asset_run(root: Path, model: str, env: dict[str, str], config: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    result = dg.materialize(
        [dg.AssetSpec("sft_dataset", partitions_def=VARIANTS), finetuned_model],
        selection=[finetuned_model],
        partition_key="sigma",
        resources={
            "storage": StorageResource(url=str(root)),
            "io_manager": AtomicParquetIOManager(storage=StorageResource(url=str(root))),
            "training": TrainingResource(base_model=model, profile="cpu"),
            "pipes_subprocess_client": dg.PipesSubprocessClient(env={"PYTHONPATH": env["PYTHONPATH"]}),
        },
        run_config={"ops": {"finetuned_model": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    seconds = time.perf_counter() - started
    metadata = result.asset_materializations_for_node("finetuned_model")[0].metadata
    wanted = ("train_runtime_s", "steps", "checkpoints_saved", "checkpoint_s")
    return seconds, {k: v.value for k, v in metadata.items() if k in wanted}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of this markdown file")
    args = parser.parse_args()
    model_dir = resolve_local_model(args.model)
    chosen = profile("cpu", max_steps=args.max_steps)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # Checkpointing on, at the GPU profiles' default interval (a short run reaches none of it); the cost
    # of one checkpoint is measured on its own below.
    default = profile("deepseekmath-7b")
    checkpointing = {
        "max_steps": args.max_steps,
        "checkpoint_steps": default.checkpoint_steps,
        "checkpoint_minutes": default.checkpoint_minutes,
    }
    times: dict[str, list[float]] = {"bare": [], "asset": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = sft_frame(args.samples)
        (root / "assets" / "sft_dataset").mkdir(parents=True)
        frame.write_parquet(root / "assets" / "sft_dataset" / "sigma.parquet")
        for i, side in enumerate(("bare", "asset", "asset", "bare")):  # ABBA
            if side == "bare":
                times["bare"].append(bare_run(root, model_dir, chosen, env, f"bare-{i}"))
            else:
                shutil.rmtree(root / "models", ignore_errors=True)  # a fresh training, not a resume
                seconds, trained = asset_run(root, args.model, env, checkpointing)
                times["asset"].append(seconds)
        # One checkpoint's cost, as the trainer times it: a run that saves one at its last step.
        shutil.rmtree(root / "models", ignore_errors=True)
        _, saved = asset_run(root, args.model, env, {**checkpointing, "checkpoint_steps": args.max_steps})
    bare, asset = sum(times["bare"]), sum(times["asset"])
    assert saved["checkpoints_saved"] == 1, saved
    checkpoint_s = saved["checkpoint_s"]
    step_s = trained["train_runtime_s"] / max(1, trained["steps"])
    interval_s = default.checkpoint_steps * step_s
    lines = [
        "## SFT through the asset (Dagster + Pipes) against a bare TRL script",
        "",
        "Command: `.venv/bin/python bench/bench_training.py --write docs/benchmarks.md` (bundled "
        f"{args.model}, {frame.height} chat samples, profile `cpu`, {args.max_steps} optimizer steps of "
        f"{chosen.per_device_batch} sequences, fp32 on CPU). Both sides start a fresh Python process that "
        "loads the model, trains with `SFTTrainer` (completion-only loss) and saves safetensors; the asset "
        "side adds the Dagster run, the Pipes session, the SFT parquet and the spec, checkpointing at the "
        f"GPU profiles' interval ({default.checkpoint_steps} steps or {default.checkpoint_minutes:.0f} min, "
        "which a short run does not reach) and the publish-by-rename. ABBA order in one run; then one "
        "checkpoint (weights, optimizer, marker on the storage root) as the trainer times it.",
        "",
        "| figure | measured | target |",
        "| --- | --- | --- |",
        f"| bare TRL script, two runs | {', '.join(f'{t:.1f} s' for t in times['bare'])} | |",
        "| `finetuned_model` asset, checkpointing on, two runs | "
        + ", ".join(f"{t:.1f} s" for t in times["asset"])
        + " | |",
        f"| ratio bare ÷ asset (two runs each) | **{bare / asset:.3f}** | ≥ 0.97 |",
        f"| one checkpoint of {args.model} (weights and optimizer) | {checkpoint_s:.1f} s | |",
        f"| at the GPU profiles' default interval ({default.checkpoint_steps} steps), at this step time "
        f"({step_s:.1f} s) | {100 * checkpoint_s / interval_s:.2f} % of the training time | |",
        "",
    ]
    report(lines, args.write, "## SFT through the asset")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
