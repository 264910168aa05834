"""SFT through the `finetuned_model` asset (Dagster run + Pipes subprocess) against a bare TRL script
on the same data, base model and profile, in the same run.

    python bench/bench_training.py [--model smollm2-135m-instruct] [--samples 32] [--max-steps 4]

Both sides start a fresh Python process that loads the model, trains and saves safetensors; the ratio
is bare wall time / asset wall time (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import dagster as dg

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=4)
    args = parser.parse_args()
    model_dir = resolve_local_model(args.model)
    chosen = profile("cpu", max_steps=args.max_steps)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = sft_frame(args.samples)
        (root / "assets" / "sft_dataset").mkdir(parents=True)
        frame.write_parquet(root / "assets" / "sft_dataset" / "sigma.parquet")

        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                BARE_SCRIPT,
                str(root / "assets" / "sft_dataset" / "sigma.parquet"),
                model_dir,
                str(root / "bare"),
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
        bare = time.perf_counter() - t0

        t0 = time.perf_counter()
        result = dg.materialize(
            [dg.AssetSpec("sft_dataset", partitions_def=VARIANTS), finetuned_model],
            selection=[finetuned_model],
            partition_key="sigma",
            resources={
                "storage": StorageResource(url=str(root)),
                "io_manager": AtomicParquetIOManager(storage=StorageResource(url=str(root))),
                "training": TrainingResource(base_model=args.model, profile="cpu"),
                "pipes_subprocess_client": dg.PipesSubprocessClient(env={"PYTHONPATH": env["PYTHONPATH"]}),
            },
            run_config={"ops": {"finetuned_model": {"config": {"max_steps": args.max_steps}}}},
            instance=dg.DagsterInstance.ephemeral(),
        )
        asset = time.perf_counter() - t0
        metadata = result.asset_materializations_for_node("finetuned_model")[0].metadata
    print(f"model {args.model}, {frame.height} samples, profile cpu, {args.max_steps} steps")
    print(f"bare TRL script: {bare:6.1f} s")
    print(
        f"finetuned_model asset (Dagster + Pipes): {asset:6.1f} s "
        f"(trainer: {metadata['train_runtime_s'].value} s, {metadata['tokens_per_s'].value} tokens/s)"
    )
    print(f"ratio bare/asset: {bare / asset:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
