"""Shared fixtures: a real S3 server on loopback, storage roots, and local models made offline."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

# Tests never reach a model or data hub; fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra"))

from local_s3 import local_s3

S3_KEY = "sigma-test"
S3_SECRET = "sigma-test-secret"


def pytest_configure(config: pytest.Config) -> None:
    # Deselect with `-m "not slow"`.
    config.addinivalue_line("markers", "slow: needs the real SmolLM2 model or takes more than a few seconds")


@pytest.fixture(autouse=True)
def journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own response journal (a store on S3 journals answers locally before shipping them)."""
    folder = tmp_path / "journal"
    monkeypatch.setenv("SIGMA_JOURNAL_DIR", str(folder))
    return folder


# -- object storage -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1, with its own data folder."""
    with local_s3(tmp_path_factory.mktemp("s3"), S3_KEY, S3_SECRET) as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for an S3 storage root under a fresh prefix on the test server."""
    env = {
        "SIGMA_STORAGE_URL": f"s3://sigma-test/{uuid.uuid4().hex[:8]}",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# -- local models -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 + BPE tokenizer folder, built once per session (no network)."""
    from sigma_assets.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
