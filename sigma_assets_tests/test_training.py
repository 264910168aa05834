"""sft_dataset and finetuned_model through Dagster: real TRL training of the tiny model in a Pipes
subprocess, the model published under <root>/models/<variant>/, and a failing trainer's own error."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import datasets
import polars as pl
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from sigma_assets.defs.evaluation.resources import EvaluationResource
from sigma_assets.defs.shared.io_manager import AtomicParquetIOManager
from sigma_assets.defs.shared.partitions import SHARD_TEMPERATURE, SHARDS
from sigma_assets.defs.shared.resources import StorageResource
from sigma_assets.defs.training.assets import (
    chat_format_valid,
    finetuned_model,
    no_heldout_problem,
    reloads_and_generates,
    sft_dataset,
)
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets_tests.sft_fixtures import write_search_outputs

REPO = Path(__file__).resolve().parent.parent
# The search stages' tables are already on the storage root (written by the fixture).
TRAINING_ASSETS = [
    dg.AssetSpec("raw_problems", partitions_def=SHARDS),
    dg.AssetSpec("refined_paths", partitions_def=SHARD_TEMPERATURE),
    sft_dataset,
    finetuned_model,
    chat_format_valid,
    no_heldout_problem,
    reloads_and_generates,
]
# The fixture's 24 problems hold out 2: under the default floor of 20 nothing would be held out.
SMALL_HELDOUT = {"sft_dataset": {"config": {"min_heldout_problems": 1}}}
# Three optimizer steps of two samples: seconds on the tiny model.
FEW_STEPS = {
    "ops": {"finetuned_model": {"config": {"max_steps": 3, "per_device_batch": 2, "effective_batch": 2}}}
}


def resources(root: Path, base_model: str | Path) -> dict:
    storage = StorageResource(url=str(root))
    return {
        "storage": storage,
        "io_manager": AtomicParquetIOManager(storage=storage),
        "training": TrainingResource(base_model=str(base_model), profile="cpu"),
        "evaluation": EvaluationResource(),
        # The trainer process imports this checkout, wherever the tests run from.
        "pipes_subprocess_client": dg.PipesSubprocessClient(
            env={"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        ),
    }


def materialize(
    root: Path, base_model, variant: str, selection, run_config=None, raise_on_error=True, instance=None
):
    return dg.materialize(
        TRAINING_ASSETS,
        selection=selection,
        partition_key=variant,
        resources=resources(root, base_model),
        run_config=run_config or {},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    """Both variants' SFT sets and models, trained once for the module."""
    root = tmp_path_factory.mktemp("storage")
    written = write_search_outputs(root)
    instance = dg.DagsterInstance.ephemeral()
    results = {}
    for variant in ("sigma", "mcts"):
        results[variant] = materialize(
            root,
            tiny_model_dir,
            variant,
            dg.AssetSelection.assets(sft_dataset, finetuned_model)
            | dg.AssetSelection.checks_for_assets(sft_dataset, finetuned_model),
            run_config={"ops": {**FEW_STEPS["ops"], **SMALL_HELDOUT}},
            instance=instance,
        )
    return {"root": root, "results": results, "written": written, "instance": instance}


def test_sft_dataset_combines_both_temperatures_checked_and_deduplicated(trained):
    root = trained["root"]
    sigma = pl.read_parquet(root / "assets" / "sft_dataset" / "sigma.parquet")
    mcts = pl.read_parquet(root / "assets" / "sft_dataset" / "mcts.parquet")
    heldout = pl.read_parquet(root / "sft" / "heldout" / "sigma.parquet")
    assert heldout.equals(pl.read_parquet(root / "sft" / "heldout" / "mcts.parquet"))
    assert heldout.height >= 1 and not set(heldout["problem_id"]) & set(sigma["problem_id"])
    # Per shard: problem 0 (wrong answer) and 1 (no explicit answer) never become samples.
    written = trained["written"]
    wrong = {rows[i]["problem_id"] for rows in written.values() for i in (0, 1)}
    assert not wrong & set(sigma["problem_id"]) and not wrong & set(mcts["problem_id"])
    assert set(sigma["temperature"]) == {"0.4", "0.7"}
    texts = [tuple(m["content"] for m in ms) for ms in sigma["messages"].to_list()]
    assert len(texts) == len(set(texts))  # problem 3's identical paths at both temperatures: kept once
    assert sigma["kept_original"].any()  # problem 2 drifted
    assert not mcts["kept_original"].any()
    # A kept original is its mcts sample word for word; every other sigma sample was revised.
    kept = sigma.filter(pl.col("kept_original"))
    mcts_texts = {tuple(m["content"] for m in ms) for ms in mcts["messages"].to_list()}
    assert all(tuple(m["content"] for m in ms) in mcts_texts for ms in kept["messages"].to_list())
    assert {m["content"].split("\n\n")[0].split(":")[0] for m in (ms[1] for ms in mcts["messages"])} == {
        "We work out (T=0.4)",
        "We work out (T=0.7)",
        "We work out",
    }
    metadata = trained["results"]["sigma"].asset_materializations_for_node("sft_dataset")[0].metadata
    assert metadata["samples"].value == sigma.height
    assert metadata["tokens"].value > 0
    assert metadata["kept_original_share"].value == pytest.approx(sigma["kept_original"].mean(), abs=1e-4)
    assert metadata["kept_original"].value == kept.height
    assert metadata["revised"].value == sigma.height - kept.height > 0
    assert metadata["heldout_note"].value.endswith("problems held out")
    mcts_metadata = trained["results"]["mcts"].asset_materializations_for_node("sft_dataset")[0].metadata
    assert mcts_metadata["revised"].value == 0
    assert metadata["duplicates_removed"].value >= 1
    assert metadata["length_histogram"].value.startswith("![lengths](data:image/png;base64,")
    loaded = datasets.load_dataset(
        "parquet", data_files=str(root / "assets" / "sft_dataset" / "sigma.parquet")
    )
    assert loaded["train"][0]["messages"][0]["role"] == "user"


def test_models_train_through_pipes_and_reload(trained):
    root = trained["root"]
    for variant, result in trained["results"].items():
        assert result.success
        folder = root / "models" / variant
        assert (folder / "model.safetensors").is_file()
        assert not list(folder.glob("*.bin")), "no pickle on shared storage"
        args = json.loads((folder / "training_args.json").read_text())
        assert args["profile"]["name"] == "cpu" and args["sft_config"]["max_steps"] == 3
        assert args["sft_config"]["completion_only_loss"] is True
        losses = [e["loss"] for e in json.loads((folder / "loss_log.json").read_text()) if "loss" in e]
        assert len(losses) == 3
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert model.num_parameters() > 0 and tokenizer.chat_template
        metadata = result.asset_materializations_for_node("finetuned_model")[0].metadata
        assert metadata["steps"].value == 3
        assert metadata["tokens_per_s"].value > 0
        assert metadata["path"].value == str(folder)
        assert metadata["loss_curve"].value.startswith("![loss](data:image/png;base64,")
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {
            "chat_format_valid": True,
            "no_heldout_problem": True,
            "reloads_and_generates": True,
        }
    # The trainer's logged steps were streamed back through Pipes into the run's log.
    run_id = trained["results"]["sigma"].run_id
    logs = [r.user_message for r in trained["instance"].all_logs(run_id) if r.user_message]
    assert any("step 3/3" in m for m in logs), logs[-10:]
    # Nothing half-written is left beside the published models.
    assert sorted(p.name for p in (root / "models").iterdir()) == ["mcts", "sigma"]


def test_a_failing_trainer_fails_the_asset_with_its_own_error(trained, tmp_path: Path, tiny_model_dir: Path):
    # A base model whose weights file was cut short: the tokenizer loads, the weights do not.
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    result = materialize(
        trained["root"],
        broken,
        "sigma",
        dg.AssetSelection.assets(finetuned_model),
        FEW_STEPS,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert "the trainer failed" in message
    # The trainer's own exception, type and text, with its traceback.
    assert "SafetensorError: Error while deserializing header" in message
    assert "sigma_assets/training/train.py" in message
    # The model trained before is still there, untouched.
    assert (trained["root"] / "models" / "sigma" / "model.safetensors").is_file()


def test_an_evaluation_problem_in_the_training_data_is_removed_and_counted(tmp_path: Path, tiny_model_dir):
    root = tmp_path / "storage"
    written = write_search_outputs(root)
    raw = pl.concat(pl.read_parquet(p) for p in (root / "assets" / "raw_problems").glob("*.parquet"))
    trainable = [pid for rows in written.values() for pid in (r["problem_id"] for r in rows[3:])]
    problem = dict(zip(raw["problem_id"], raw["problem"], strict=True))
    long = [pid for pid in sorted(set(trainable)) if len(problem[pid].split()) >= 10]
    exact, restated = long[:2]
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"problem": problem[exact], "answer": "1"},  # the same text
                {"problem": f"Problem 7. {problem[restated].upper()} Explain.", "answer": "1"},  # an 8-gram
                {"problem": "What is the capital of the moon's smallest crater?", "answer": "0"},
            ]
        )
    )
    result = dg.materialize(
        TRAINING_ASSETS,
        selection=[sft_dataset],
        partition_key="sigma",
        resources={
            **resources(root, tiny_model_dir),
            "evaluation": EvaluationResource(eval_sets=f"bench={benchmark}"),
        },
        run_config={"ops": SMALL_HELDOUT},
        instance=dg.DagsterInstance.ephemeral(),
    )
    frame = result.output_for_node("sft_dataset")
    assert not {exact, restated} & set(frame["problem_id"])
    metadata = result.asset_materializations_for_node("sft_dataset")[0].metadata
    removed = metadata["decontaminated_problems"].value["bench"]
    assert {exact, restated} <= set(removed)  # and problems of the same template, sharing 8 words
    assert metadata["decontaminated_per_set"].value["bench"] == len(removed)
    assert not set(removed) & set(frame["problem_id"])
    assert set(metadata["decontaminated_per_set"].value) == {"heldout", "bench"}


# -- long trainings: checkpoints and resume, more than one process -------------------------------------


def _trained(tmp_path: Path, tiny_model_dir, config: dict, training=None, raise_on_error=True, instance=None):
    res = resources(tmp_path / "storage", tiny_model_dir)
    if training is not None:
        res["training"] = training
    return dg.materialize(
        TRAINING_ASSETS,
        selection=[finetuned_model],
        partition_key="sigma",
        resources=res,
        run_config={"ops": {"finetuned_model": {"config": config}}},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


@pytest.fixture
def sft_ready(tmp_path: Path, tiny_model_dir) -> Path:
    """A storage root with both variants' SFT sets materialised."""
    root = tmp_path / "storage"
    write_search_outputs(root)
    for variant in ("sigma", "mcts"):
        materialize(root, tiny_model_dir, variant, [sft_dataset])
    return root


def test_a_killed_trainer_resumes_from_its_last_complete_checkpoint(
    sft_ready: Path, tmp_path, tiny_model_dir
):
    import signal
    import threading
    import time

    config = {
        "max_steps": 40,
        "per_device_batch": 2,
        "effective_batch": 2,
        "max_length": 96,
        "checkpoint_steps": 2,
    }
    checkpoints = sft_ready / "models" / "sigma" / "checkpoints"
    first: list = []

    def first_attempt() -> None:
        with dg.DagsterInstance.ephemeral() as instance:  # its SQLite lives and dies in this thread
            result = _trained(tmp_path, tiny_model_dir, config, raise_on_error=False, instance=instance)
            first.append(result.success)

    thread = threading.Thread(target=first_attempt)
    thread.start()
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*/checkpoint-*/.complete")) and time.monotonic() < deadline:
        time.sleep(0.05)
    progress = json.loads(next(checkpoints.glob("*/progress.json")).read_text())
    os.kill(progress["pid"], signal.SIGKILL)  # the pod is gone, mid-training
    thread.join(timeout=300)
    assert first == [False]
    saved = sorted(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("*/checkpoint-*/.complete"))
    assert saved and saved[-1] < 40

    again = _trained(tmp_path, tiny_model_dir, config)
    metadata = again.asset_materializations_for_node("finetuned_model")[0].metadata
    assert metadata["resumed_from_step"].value == saved[-1]  # from the newest complete checkpoint
    assert metadata["steps_lost"].value >= 0
    assert metadata["steps"].value == 40
    run = json.loads((sft_ready / "models" / "sigma" / "training_run.json").read_text())
    assert [step for step, _ in run["losses"]] == list(range(1, 41))  # the loss log continues, no restart
    assert len(list(checkpoints.glob("*/checkpoint-*/.complete"))) <= 2  # the last two kept

    # Another profile is another training: it starts fresh and says why.
    changed = _trained(tmp_path, tiny_model_dir, {**config, "max_steps": 4, "learning_rate": 1e-4})
    fresh = changed.asset_materializations_for_node("finetuned_model")[0].metadata
    assert fresh["resumed_from_step"].value == 0
    assert (
        "the profile changed" in fresh["fresh_because"].value
        and "learning_rate" in fresh["fresh_because"].value
    )


def test_two_processes_train_with_the_profiles_effective_batch_and_rank_0_reports(
    sft_ready: Path, tmp_path, tiny_model_dir
):
    torchrun = Path(sys.executable).parent / "torchrun"
    training = TrainingResource(
        base_model=str(tiny_model_dir), profile="cpu", launcher=f"{torchrun} --nproc-per-node 2"
    )
    instance = dg.DagsterInstance.ephemeral()
    config = {"max_steps": 2, "per_device_batch": 2, "effective_batch": 8, "max_length": 96}
    result = _trained(tmp_path, tiny_model_dir, config, training=training, instance=instance)
    args = json.loads((sft_ready / "models" / "sigma" / "training_args.json").read_text())["sft_config"]
    assert args["per_device_train_batch_size"] * 2 * args["gradient_accumulation_steps"] == 8
    logs = [
        r.dagster_event.message if r.dagster_event else r.user_message
        for r in instance.all_logs(result.run_id)
    ]
    assert sum("training " in m and " samples, profile cpu" in m for m in logs if m) == 1  # once, from rank 0
    assert result.asset_materializations_for_node("finetuned_model")[0].metadata["steps"].value == 2


def test_a_rank_that_dies_fails_the_asset_with_its_traceback(sft_ready: Path, tmp_path, tiny_model_dir):
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = f"{torchrun} --nproc-per-node 2 -m sigma_assets_tests.failing_rank"
    training = TrainingResource(base_model=str(tiny_model_dir), profile="cpu", launcher=launcher)
    result = _trained(tmp_path, tiny_model_dir, {"max_steps": 2}, training=training, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "rank 1" in message and "ran out of memory" in message and "Traceback" in message
