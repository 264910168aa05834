"""sft_dataset and finetuned_model: the paper's ablation as two partitions (`sigma`, `mcts`) of one graph.

`sft_dataset` turns every (shard, temperature) of `refined_paths` into chat samples of its variant;
`finetuned_model` trains the base model on them with TRL in its own process, started through Dagster
Pipes, so the same asset runs `python` on a laptop or `torchrun` across the GPUs of one machine.
"""

import functools
import io
import json
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl

# Not re-exported at the top level; it is what PipesSubprocessClient raises on a non-zero exit.
from dagster._core.errors import DagsterPipesExecutionError

from sigma_assets.data.storage import StorageRoot, write_atomic
from sigma_assets.defs.evaluation.resources import EvaluationResource
from sigma_assets.defs.shared.k8s import k8s_op_tags
from sigma_assets.defs.shared.partitions import ONE_RUN_PER_PARTITION
from sigma_assets.defs.shared.resources import StorageResource
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets.evaluation.scoring import HELDOUT_BENCHMARK
from sigma_assets.method.grading import AnswerChecker
from sigma_assets.method.previews import render_chat_samples_markdown
from sigma_assets.training import sft_data
from sigma_assets.training.charts import histogram_png, line_png, markdown_image
from sigma_assets.training.decontamination import EvalIndex, decontaminate
from sigma_assets.training.model_files import local_model_dir, model_path, reload_and_generate
from sigma_assets.training.profiles import TrainingProfile, profile
from sigma_assets.training.train import TRAINING_RUN_FILE, TrainingSpec

VARIANTS = dg.StaticPartitionsDefinition(list(sft_data.VARIANTS))
EVERY_PARTITION = {"allow_missing_partitions": True}
PIPES_EXCEPTION = "[pipes] external process pipes closed with exception"
CHECKPOINTS = "checkpoints"

variant_asset = functools.partial(
    dg.asset, partitions_def=VARIANTS, backfill_policy=ONE_RUN_PER_PARTITION, group_name="training"
)


def heldout_path(root: StorageRoot, variant: str):
    """Where a variant's held-out problems are recorded (the same problems for both variants)."""
    return root.path("sft", "heldout", f"{variant}.parquet")


def read_heldout(root: StorageRoot, variant: str) -> pl.DataFrame:
    path = heldout_path(root, variant)
    if not path.exists():
        raise dg.Failure(f"no held-out slice recorded for {variant} at {path}: materialise sft_dataset first")
    return pl.read_parquet(path.read_bytes())


class SFTDatasetConfig(dg.Config):
    """`max_samples` caps the set (the paper: 15K per temperature, 30K combined); `heldout_share` of
    the problems (at least one) is kept out of both variants for evaluation, unless that is fewer than
    `min_heldout_problems`: a smaller slice would be scored on too few problems to mean anything (one
    answer moves it by 100 / size points), so its problems are trained on instead."""

    max_samples: int = 30_000
    heldout_share: float = 0.1
    min_heldout_problems: int = 20
    seed: int = 0
    answer_timeout_s: float = 5.0
    preview_samples: int = 3


def _problems_by_id(raw_problems: dict[str, pl.DataFrame]) -> dict[str, tuple[str, str]]:
    return {
        r["problem_id"]: (r["problem"], r["answer"])
        for frame in raw_problems.values()
        for r in frame.select("problem_id", "problem", "answer").iter_rows(named=True)
    }


def _token_lengths(frame: pl.DataFrame, model_dir: str) -> list[int]:
    """Tokens per sample, chat template included, with the base model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chats = [[{"role": m["role"], "content": m["content"]} for m in ms] for ms in frame["messages"].to_list()]
    return [len(tokenizer.apply_chat_template(chat, tokenize=True)["input_ids"]) for chat in chats]


@variant_asset(
    ins={
        "refined_paths": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata=EVERY_PARTITION),
        "raw_problems": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata=EVERY_PARTITION),
    },
    kinds={"polars", "parquet"},
    description="Chat samples (user: problem, assistant: solution) of one variant: refined paths "
    "(`sigma`) or the unrefined selected paths (`mcts`), checked, deduplicated and capped.",
)
def sft_dataset(
    context: dg.AssetExecutionContext,
    config: SFTDatasetConfig,
    refined_paths: dict[str, pl.DataFrame],
    raw_problems: dict[str, pl.DataFrame],
    storage: StorageResource,
    training: TrainingResource,
    evaluation: EvaluationResource,
) -> pl.DataFrame:
    variant = context.partition_key
    root = storage.root()
    if not refined_paths:
        raise dg.Failure("no partition of refined_paths is materialised: run generation_job first")
    problems = _problems_by_id(raw_problems)
    records: list[sft_data.PathRecord] = []
    for key, frame in sorted(refined_paths.items()):
        shard, temperature = key.split("|")
        records += sft_data.path_records(frame, problems, variant, shard, temperature)
    heldout = sft_data.heldout_ids(problems, config.heldout_share, config.min_heldout_problems)
    would_hold = sft_data.heldout_count(len(problems), config.heldout_share)
    heldout_note = (
        f"{len(heldout)} of {len(problems)} problems held out"
        if heldout
        else f"nothing held out: {config.heldout_share:g} of {len(problems)} problems is {would_hold}, "
        f"under min_heldout_problems={config.min_heldout_problems}, too few to score; they train instead"
    )
    with AnswerChecker(timeout_s=config.answer_timeout_s) as checker:
        # No problem of an evaluation set (each SIGMA_EVAL_SETS file, and the held-out slice) is trained on.
        index = EvalIndex()
        index.add(HELDOUT_BENCHMARK, (problems[pid][0] for pid in sorted(heldout)))
        for eval_set in evaluation.sets(checker, root.storage_options):
            index.add(eval_set.name, (p.problem for p in eval_set.problems))
        training_problems = [(r.problem_id, r.problem) for r in records if r.problem_id not in heldout]
        removed = decontaminate(training_problems, index)
        records = [r for r in records if r.problem_id not in removed.problem_ids]
        build = sft_data.build_sft(
            records, variant, checker.check_many, heldout, cap=config.max_samples, seed=config.seed
        )
    buffer = io.BytesIO()
    sft_data.heldout_frame(problems, heldout).write_parquet(buffer)
    write_atomic(heldout_path(root, variant), buffer.getvalue())

    frame = build.frame
    lengths = _token_lengths(frame, training.base_model_dir()) if frame.height else []
    by_temperature = Counter(frame["temperature"].to_list())
    context.add_output_metadata(
        {
            "dagster/row_count": frame.height,
            "samples": frame.height,
            "problems": frame["problem_id"].n_unique(),
            "tokens": sum(lengths),
            "max_tokens_per_sample": max(lengths, default=0),
            # sigma: samples a revision changed, and those that are their original path (every
            # revision drifted, or the accepted one copied it): with no revised sample, sigma = mcts.
            "revised": build.revised,
            "kept_original": build.kept_original,
            "kept_original_share": round(build.kept_original_share, 4),
            "paths_read": build.paths,
            "rejected": dg.MetadataValue.json(dict(build.rejected)),
            "duplicates_removed": build.duplicates,
            "capped_out": build.capped,
            "samples_per_temperature": dg.MetadataValue.json(dict(by_temperature)),
            "heldout_problems": dg.MetadataValue.json(sorted(heldout)),
            "heldout_note": heldout_note,
            "heldout_paths_excluded": build.heldout_paths,
            "heldout_path": dg.MetadataValue.path(str(heldout_path(root, variant))),
            # Training problems that overlap an evaluation set (same text, or a shared 8-word run).
            "decontaminated_per_set": dg.MetadataValue.json(removed.counts),
            "decontaminated_problems": dg.MetadataValue.json(removed.removed),
            "partitions_read": len(refined_paths),
            "length_histogram": dg.MetadataValue.md(
                markdown_image(histogram_png(lengths, f"{variant}: tokens per sample", "tokens"), "lengths")
            ),
            "preview": dg.MetadataValue.md(
                render_chat_samples_markdown(frame.head(config.preview_samples).iter_rows(named=True))
            ),
        }
    )
    return frame


@dg.asset_check(
    asset=sft_dataset,
    partitions_def=VARIANTS,
    description="Every sample is a user turn then an assistant turn, neither empty.",
)
def chat_format_valid(sft_dataset: pl.DataFrame) -> dg.AssetCheckResult:
    problems = sft_data.format_problems(sft_dataset)
    return dg.AssetCheckResult(
        passed=not problems and sft_dataset.height > 0,
        metadata={"samples": sft_dataset.height, "problems": dg.MetadataValue.json(problems[:50])},
    )


@dg.asset_check(
    asset=sft_dataset,
    partitions_def=VARIANTS,
    description="No held-out problem is in the training samples.",
)
def no_heldout_problem(
    context: dg.AssetCheckExecutionContext, sft_dataset: pl.DataFrame, storage: StorageResource
) -> dg.AssetCheckResult:
    heldout = set(read_heldout(storage.root(), context.partition_key)["problem_id"])
    leaked = sorted(heldout & set(sft_dataset["problem_id"]))
    return dg.AssetCheckResult(
        passed=not leaked,
        metadata={"heldout_problems": len(heldout), "leaked": dg.MetadataValue.json(leaked)},
    )


# -- finetuned_model --------------------------------------------------------------------------------


class FinetuneConfig(dg.Config):
    """The named profile (SIGMA_TRAINING_PROFILE by default) and any of its fields overridden."""

    profile: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    per_device_batch: int | None = None
    effective_batch: int | None = None
    max_length: int | None = None
    seed: int | None = None
    checkpoint_steps: int | None = None
    checkpoint_minutes: float | None = None

    def to_profile(self, training: TrainingResource) -> TrainingProfile:
        overrides = self.model_dump(exclude={"profile"})
        chosen = profile(training.checked_profile(self.profile), **overrides)
        if training.launcher:
            chosen = replace(chosen, launcher=tuple(training.launcher_args()))
        return chosen


def _trainer_error(context: dg.AssetExecutionContext) -> str | None:
    """The exception the trainer reported through Pipes before it exited, as its own text."""
    records = context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for record in reversed(records):
        event = record.dagster_event
        if event is None or event.message != PIPES_EXCEPTION:
            continue
        error = event.engine_event_data.error
        if error is not None:
            return error.to_string()
    return None


def _is_torchrun(launcher: list[str]) -> bool:
    return Path(launcher[0]).name == "torchrun" or "torch.distributed.run" in launcher


def _rank_errors(log_dir: Path) -> str | None:
    """The error and traceback of each rank that raised, as torchrun's error files record them."""
    found = []
    for path in sorted(log_dir.rglob("error.json")):
        try:
            error = json.loads(path.read_text())["message"]
        except (OSError, ValueError, KeyError):
            continue
        if isinstance(error, dict):
            extra = error.get("extraInfo", {})
            text = f"{error.get('message', '')}\n{extra.get('py_callstack', '')}".strip()
        else:
            text = str(error)
        found.append(f"rank {path.parent.name}: {text}")
    return "\n\n".join(found) or None


def _storage_env(root: StorageRoot) -> dict[str, str]:
    """The storage keys for the trainer's process (its environment, never a file)."""
    env = {}
    if root.access_key_id:
        env["AWS_ACCESS_KEY_ID"] = root.access_key_id
    if root.secret_access_key:
        env["AWS_SECRET_ACCESS_KEY"] = root.secret_access_key
    return env


def _publish_model(root: StorageRoot, variant: str, built: Path) -> str:
    """Move a finished model folder to `<root>/models/<variant>/`: readers see the old or the new one. The
    training checkpoints under it stay."""
    dest = model_path(root, variant)
    if not root.is_s3:
        local = Path(str(dest.path))
        old = local.with_name(f".{variant}.old-{uuid.uuid4().hex[:8]}")
        if local.exists():
            local.rename(old)
            if (old / CHECKPOINTS).exists():
                (old / CHECKPOINTS).rename(built / CHECKPOINTS)
        built.rename(local)
        shutil.rmtree(old, ignore_errors=True)
        return str(local)
    # S3: every object is put whole; the training-run file goes last, so a model without it is partial.
    if dest.exists():
        for item in dest.iterdir():
            if item.name != CHECKPOINTS:
                item.unlink()
    files = sorted((p for p in built.rglob("*") if p.is_file()), key=lambda p: p.name == TRAINING_RUN_FILE)
    for file in files:
        dest.fs.put_file(str(file), str(dest.joinpath(file.relative_to(built).as_posix()).path))
    return str(dest)


@variant_asset(
    op_tags=k8s_op_tags("finetuned_model"),
    ins={"sft_dataset": dg.AssetIn()},
    pool="gpu",  # one model on the accelerator at a time, with eval_scores
    kinds={"transformers", "safetensors"},
    description="The base model fine-tuned with TRL's SFTTrainer on the variant's SFT set "
    "(safetensors, tokenizer, training arguments, loss log under <root>/models/<variant>/).",
)
def finetuned_model(
    context: dg.AssetExecutionContext,
    config: FinetuneConfig,
    sft_dataset: pl.DataFrame,
    storage: StorageResource,
    training: TrainingResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    variant = context.partition_key
    root = storage.root()
    if sft_dataset.height == 0:
        raise dg.Failure(f"sft_dataset {variant} has no samples: nothing to train on")
    chosen = config.to_profile(training)
    work = Path(tempfile.mkdtemp(prefix=f"sigma-train-{variant}-"))
    # On a local root the trainer writes next to the destination, so publishing is a rename.
    parent = Path(str(root.path("models").path)) if not root.is_s3 else work
    parent.mkdir(parents=True, exist_ok=True)
    output = parent / f".{variant}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        dataset = work / "sft.parquet"
        sft_dataset.select("messages").write_parquet(dataset)
        # Checkpoints under the variant's model folder, so a retried or re-executed run resumes; only the
        # endpoint and region travel in the spec, keys through the trainer's environment.
        options = {k: v for k, v in root.storage_options.items() if k not in ("key", "secret")}
        checkpoints = str(model_path(root, variant) / CHECKPOINTS)
        spec = TrainingSpec(
            str(dataset), training.base_model_dir(), str(output), chosen, checkpoints, options
        )
        (work / "spec.json").write_text(spec.to_json())
        launcher = list(chosen.launcher) or [sys.executable]
        if _is_torchrun(launcher):  # each rank's error and traceback, where the failure can read them
            launcher = [launcher[0], "--log-dir", str(work / "launch"), *launcher[1:]]
        module = ["-m", "sigma_assets.training.train", "--spec", str(work / "spec.json")]
        command = [*launcher, *module]
        context.log.info(f"trainer: {' '.join(command)}")
        try:
            invocation = pipes_subprocess_client.run(command=command, context=context, env=_storage_env(root))
        except DagsterPipesExecutionError as exc:
            reported = (
                _trainer_error(context)
                or _rank_errors(work / "launch")
                or "no exception reported; see its stderr"
            )
            raise dg.Failure(
                description=f"the trainer failed ({exc}): {reported}",
                metadata={"command": " ".join(command)},
            ) from exc
        reported = invocation.get_materialize_result()
        destination = _publish_model(root, variant, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(output, ignore_errors=True)
    metadata = dict(reported.metadata or {})
    losses = json.loads(json.dumps(metadata.pop("losses").value)) if "losses" in metadata else []
    chart = line_png([(s, v) for s, v in losses], f"{variant}: training loss", "step", "loss")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "path": dg.MetadataValue.path(destination),
            "profile": chosen.name,
            "hyperparameters": dg.MetadataValue.json(chosen.to_dict()),
            "base_model": training.base_model,
            "loss_curve": dg.MetadataValue.md(markdown_image(chart, "loss")),
        }
    )


@dg.asset_check(
    asset=finetuned_model,
    partitions_def=VARIANTS,
    description="The trained model reloads with AutoModelForCausalLM and generates.",
)
def reloads_and_generates(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    with local_model_dir(storage.root(), context.partition_key) as folder:
        text, new_tokens = reload_and_generate(folder)
    return dg.AssetCheckResult(
        passed=new_tokens > 0,
        metadata={"new_tokens": new_tokens, "sample": dg.MetadataValue.text(text[:500])},
    )
