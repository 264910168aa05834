"""Training checkpoints on an object store (the real S3 server): staged locally, uploaded marker last,
pruned, and fetched back by another machine; a checkpoint without its marker is never resumed from."""

from __future__ import annotations

from pathlib import Path

from sigma_assets.data.storage import StorageRoot
from sigma_assets.training.checkpoints import COMPLETE, CheckpointStore, training_fingerprint


def _s3_root(env: dict[str, str]) -> StorageRoot:
    return StorageRoot(
        url=env["SIGMA_STORAGE_URL"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region=env["AWS_REGION"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).prepare()


def _save(store: CheckpointStore, step: int) -> None:
    """What the trainer leaves in its output folder at a save, then the callback."""
    folder = store.output_dir / f"checkpoint-{step}"
    (folder / "nested").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(f"weights at {step}".encode())
    (folder / "nested" / "optimizer.pt").write_bytes(b"\0" * 1000)
    (folder / "training_args.bin").write_bytes(b"pickle")
    store.saved(step)


def test_checkpoints_on_an_object_store_resume_on_another_machine(s3_env: dict[str, str], tmp_path: Path):
    dataset = tmp_path / "sft.parquet"
    dataset.write_bytes(b"the data set")
    fingerprint = training_fingerprint(str(dataset), "base-model", {"learning_rate": 1e-5, "launcher": []})
    base = _s3_root(s3_env).path("models", "sigma", "checkpoints")

    store = CheckpointStore(base, fingerprint, tmp_path / "pod-1", keep=2)
    assert not store.local and store.output_dir == tmp_path / "pod-1"
    first = store.resume()
    assert first.checkpoint is None and first.fresh_because is None
    for step in (2, 4, 6):
        _save(store, step)
    assert store.complete_steps() == [4, 6]  # the oldest pruned from the store
    remote = base / fingerprint["key"] / "checkpoint-6"
    assert sorted(p.name for p in remote.iterdir()) == [COMPLETE, "model.safetensors", "nested"]
    assert (remote / "nested" / "optimizer.pt").read_bytes() == b"\0" * 1000  # no pickle went up
    # The pod dies uploading checkpoint 8, after step 9: its files are there, its marker is not.
    (base / fingerprint["key"] / "checkpoint-8" / "model.safetensors").write_bytes(b"half")
    store.progress(9, force=True)

    other = CheckpointStore(base, fingerprint, tmp_path / "pod-2", keep=2)
    resume = other.resume()
    assert (resume.step, resume.steps_lost) == (6, 3)
    assert resume.checkpoint == str(tmp_path / "pod-2" / "checkpoint-6")
    assert (Path(resume.checkpoint) / "model.safetensors").read_bytes() == b"weights at 6"
    assert (Path(resume.checkpoint) / "nested" / "optimizer.pt").stat().st_size == 1000

    changed = training_fingerprint(str(dataset), "base-model", {"learning_rate": 2e-5, "launcher": []})
    fresh = CheckpointStore(base, changed, tmp_path / "pod-3").resume()
    assert fresh.checkpoint is None
    assert fresh.fresh_because == (
        "starting fresh: the profile changed (learning_rate: 1e-05 -> 2e-05) since the last checkpoints"
    )
    # A launcher is not what is trained: the same training, resumed.
    relaunched = training_fingerprint(str(dataset), "base-model", {"learning_rate": 1e-5, "launcher": ["x"]})
    assert CheckpointStore(base, relaunched, tmp_path / "pod-4").resume().step == 6
