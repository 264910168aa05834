"""Models on the storage root: a folder URL fetched once into the local cache, against the real S3 server.

Every fetch here goes to SeaweedFS on loopback (the suite's S3 server, which checks signatures); the
interrupted fetch is a real process killed by SIGKILL while a file is half written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from sigma_assets.data.storage import StorageRoot
from sigma_assets.defs.shared.resources import S3StorageResource, TransformersModelResource
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets.llm import remote_models
from sigma_assets.llm.local_models import MARKER, is_complete
from sigma_assets.llm.remote_models import SOURCE_FILE, fetch_model, is_remote, storage_options_for
from sigma_assets_tests.conftest import S3_KEY, S3_SECRET

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(s3_env: dict[str, str]) -> StorageRoot:
    return StorageRoot(
        url=s3_env["SIGMA_STORAGE_URL"],
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        region=s3_env["AWS_REGION"],
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
    ).prepare()


@pytest.fixture
def model_url(root: StorageRoot, tiny_model_dir: Path) -> str:
    """The tiny model uploaded under `<root>/models/base/tiny-<id>`, as a user would upload a base model."""
    url = f"{root.url}/models/base/tiny-{uuid.uuid4().hex[:6]}"
    remote = root.path("models", "base", url.rsplit("/", 1)[-1])
    remote.fs.put(str(tiny_model_dir).rstrip("/") + "/", str(remote.path), recursive=True)
    return url


@pytest.fixture(autouse=True)
def fresh_memory() -> None:
    """Each test starts as a new process would: nothing fetched in memory."""
    remote_models._fetched.clear()


def _files(folder: Path) -> dict[str, bytes]:
    skip = {MARKER, SOURCE_FILE}
    files = [p for p in folder.rglob("*") if p.is_file() and p.name not in skip]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _usable(cache: Path) -> list[Path]:
    """Folders a load could pick up: not a build folder, and complete."""
    return [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".") and is_complete(p)]


FETCH_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from sigma_assets.llm.remote_models import fetch_model

    url, cache, kill_after = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "kill"
    options = {
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]},
    }
    fetched = [0]

    def progress(done, total):
        fetched[0] = done
        if kill_after and 0 < done < total:
            os.kill(os.getpid(), signal.SIGKILL)  # a lost pod: no cleanup runs

    folder = fetch_model(url, cache, options, progress)
    print(json.dumps({"folder": str(folder), "fetched": fetched[0]}))
    """
)


def _fetch_in_process(url: str, cache: Path, *, kill: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", FETCH_SCRIPT, url, str(cache), "kill" if kill else "keep"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_urls_are_told_from_local_folders_and_hub_ids() -> None:
    assert is_remote("s3://bucket/models/deepseek-math-7b-base")
    assert is_remote("gs://bucket/models/m")
    assert not is_remote("/models/deepseek-math-7b-base")
    assert not is_remote("deepseek-ai/deepseek-math-7b-instruct")
    assert not is_remote("file:///models/m")


def test_the_storage_root_connection_goes_only_to_urls_of_its_kind(root: StorageRoot) -> None:
    assert storage_options_for("s3://other-bucket/m", root)["client_kwargs"]["endpoint_url"]
    assert storage_options_for("gs://bucket/m", root) == {}
    assert storage_options_for("s3://bucket/m", None) == {}


def test_a_model_on_the_storage_root_is_fetched_once_then_loaded_locally(
    root: StorageRoot, model_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "cache"
    reports: list[tuple[int, int]] = []
    folder = fetch_model(model_url, cache, root.storage_options, lambda d, t: reports.append((d, t)))
    assert is_complete(folder) and folder.parent == cache
    assert _files(folder) == _files(tiny_model_dir)
    total = sum(len(b) for b in _files(tiny_model_dir).values())
    assert reports[-1] == (total, total)
    assert json.loads((folder / SOURCE_FILE).read_text())["url"] == model_url
    AutoTokenizer.from_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(folder)

    # A second call in this process does nothing at all; another process lists the folder and finds it.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    reports.clear()
    assert fetch_model(model_url, cache, root.storage_options, lambda d, t: reports.append((d, t))) == folder
    assert reports == []
    again = _fetch_in_process(model_url, cache)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert json.loads(out) == {"folder": str(folder), "fetched": 0}
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert _usable(cache) == [folder]


def test_concurrent_fetchers_in_one_machine_fetch_once_and_agree(
    root: StorageRoot, model_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    processes = [_fetch_in_process(model_url, cache) for _ in range(3)]
    # Threads of this process at the same time, each as a first caller would be.
    folders: list[Path] = []
    threads = [
        threading.Thread(target=lambda: folders.append(fetch_model(model_url, cache, root.storage_options)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    for thread in threads:
        thread.join(timeout=120)
    (folder,) = {Path(r["folder"]) for r in results} | set(folders)
    # At most one process fetched the bytes; the others waited on the lock and found the folder done.
    assert sorted(r["fetched"] > 0 for r in results)[:-1] == [False, False]
    assert _files(folder) == _files(tiny_model_dir)
    assert _usable(cache) == [folder]
    assert not [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")]


def test_an_interrupted_fetch_leaves_no_usable_cache_and_the_next_one_completes(
    root: StorageRoot, model_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    killed = _fetch_in_process(model_url, cache, kill=True)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -9, err
    leftovers = [p for p in cache.iterdir() if p.is_dir()]
    assert leftovers and all(p.name.startswith(".") and not is_complete(p) for p in leftovers)
    half = [p for d in leftovers for p in d.rglob("*") if p.is_file()]
    assert half, "the process was killed after its first bytes arrived"
    assert _usable(cache) == []

    folder = fetch_model(model_url, cache, root.storage_options)
    assert is_complete(folder) and _files(folder) == _files(tiny_model_dir)
    assert [p for p in cache.iterdir() if p.is_dir()] == [folder]  # the dead fetch's folder is gone


def test_a_folder_uploaded_again_is_a_new_local_folder(
    root: StorageRoot, model_url: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = fetch_model(model_url, cache, root.storage_options)
    name = model_url.rsplit("/", 1)[-1]
    remote = root.path("models", "base", name, "config.json")
    config = json.loads((first / "config.json").read_text())
    remote.write_text(json.dumps({**config, "sigma_note": "uploaded again"}))
    remote_models._fetched.clear()  # another run, in a new process
    second = fetch_model(model_url, cache, root.storage_options)
    assert second != first and is_complete(first)
    assert json.loads((second / "config.json").read_text())["sigma_note"] == "uploaded again"


def test_a_missing_folder_is_an_error_naming_the_url(root: StorageRoot, tmp_path: Path) -> None:
    url = f"{root.url}/models/nothing-here"
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        fetch_model(url, tmp_path / "cache", root.storage_options)


def test_training_and_the_in_process_policy_fetch_their_model_from_the_storage_root(
    root: StorageRoot, model_url: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resources the code location builds: SIGMA_BASE_MODEL / SIGMA_POLICY_MODEL as a URL."""
    monkeypatch.setenv("SIGMA_MODEL_CACHE", str(tmp_path / "models"))
    storage = S3StorageResource(
        url=root.url,
        endpoint_url=root.endpoint_url,
        region=root.region,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
    )
    base = Path(TrainingResource(base_model=model_url, storage=storage).base_model_dir())
    policy = TransformersModelResource(model=model_url, storage=storage)
    assert Path(policy.local_model_path() or "") == base
    assert base.is_relative_to(tmp_path / "models") and _files(base) == _files(tiny_model_dir)
    tokenizer, name = policy.load_tokenizer()
    assert tokenizer is not None and name == model_url
    # Without the root's keys the server refuses: the connection really comes from the storage resource.
    remote_models._fetched.clear()
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    with pytest.raises(Exception):  # noqa: B017 - botocore's, s3fs's or fsspec's own error
        TrainingResource(base_model=model_url).base_model_dir()
