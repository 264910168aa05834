"""Resources as the settings build them: one class per kind, secrets as env references resolved in the
step, one storage resource shared by the IO manager, and keys that reach no stored file or event."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.search.assets import mcts_trees
from sigma_assets.defs.shared.io_manager import AtomicParquetIOManager
from sigma_assets.defs.shared.resources import (
    OpenAIModelResource,
    S3StorageResource,
    StorageResource,
    TransformersModelResource,
    VLLMEngineResource,
)
from sigma_assets.settings import Settings
from sigma_assets.testing.fault_server import FaultServer
from sigma_assets_tests.support import (
    SEARCH_CONFIG,
    ShardRun,
    arithmetic_policy,
    materialize_shard,
    shard_with_problems,
)

SERVED = {"SIGMA_POLICY_BACKEND": "openai", "SIGMA_POLICY_BASE_URL": "http://127.0.0.1:9/v1"}


def test_each_backend_kind_gets_its_own_resource_class():
    assert isinstance(build_resources(Settings.from_env({}))["policy"], TransformersModelResource)
    vllm = build_resources(Settings.from_env({"SIGMA_POLICY_BACKEND": "vllm"}))["policy"]
    assert isinstance(vllm, VLLMEngineResource)
    served = build_resources(Settings.from_env(SERVED))["policy"]
    assert isinstance(served, OpenAIModelResource) and served.base_url == SERVED["SIGMA_POLICY_BASE_URL"]


def test_policy_and_critic_concurrency_come_from_their_own_settings():
    resources = build_resources(
        Settings.from_env({**SERVED, "SIGMA_POLICY_CONCURRENCY": "256", "SIGMA_CRITIC_CONCURRENCY": "8"})
    )
    assert (resources["policy"].concurrency, resources["critic"].concurrency) == (256, 8)
    assert build_resources(Settings.from_env({}))["policy"].concurrency == 16


def test_secrets_are_env_references_whether_or_not_the_code_server_has_them(monkeypatch):
    for name in ("SIGMA_POLICY_API_KEY", "OPENAI_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env(
        SERVED | {"SIGMA_CRITIC_BACKEND": "openai", "SIGMA_STORAGE_URL": "s3://bucket/prefix"}
    )
    resources = build_resources(settings)
    policy, critic, storage = resources["policy"], resources["critic"], resources["storage"]
    assert policy.api_key == dg.EnvVar("SIGMA_POLICY_API_KEY")
    assert critic.api_key == dg.EnvVar("OPENAI_API_KEY")
    assert isinstance(storage, S3StorageResource)
    assert (storage.access_key_id, storage.secret_access_key) == (
        dg.EnvVar("AWS_ACCESS_KEY_ID"),
        dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
    )
    # One object owns endpoint and credentials: the IO manager holds the same storage resource.
    io_manager = resources["io_manager"]
    assert isinstance(io_manager, AtomicParquetIOManager) and io_manager.storage is storage
    local = build_resources(Settings.from_env({}))["storage"]
    assert type(local) is StorageResource


def _search(settings: Settings, tmp_path: Path) -> ShardRun:
    key = shard_with_problems(settings)
    home = tmp_path / "dagster_home"
    home.mkdir()
    return materialize_shard(
        [raw_problems, mcts_trees],
        key,
        resources=build_resources(settings),
        instance=dg.DagsterInstance.local_temp(str(home)),
        run_config={"ops": {"mcts_trees": {"config": SEARCH_CONFIG}}},
        raise_on_error=False,
    )


def test_a_missing_policy_key_stops_the_run_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("SIGMA_POLICY_API_KEY", raising=False)
    with FaultServer(responder=arithmetic_policy) as server:
        settings = Settings.from_env(
            SERVED | {"SIGMA_POLICY_BASE_URL": server.base_url, "SIGMA_STORAGE_URL": str(tmp_path / "data")}
        )
        # Resolved when the run starts, before any step sends anything.
        with pytest.raises(dg.DagsterInvalidConfigError, match='variable "SIGMA_POLICY_API_KEY"'):
            _search(settings, tmp_path)
        assert server.stats()["total"] == 0


def test_the_policy_key_reaches_the_server_and_nothing_stored_or_logged(tmp_path, monkeypatch):
    secret = "sk-policy-secret-2f9c"
    monkeypatch.setenv("SIGMA_POLICY_API_KEY", secret)
    with FaultServer(responder=arithmetic_policy, api_key=secret) as server:
        settings = Settings.from_env(
            SERVED | {"SIGMA_POLICY_BASE_URL": server.base_url, "SIGMA_STORAGE_URL": str(tmp_path / "data")}
        )
        run = _search(settings, tmp_path)
        assert run.success
        assert server.stats()["total"] > 0  # the server refuses any other key
    assert all(secret not in str(event) for event in run.all_events)
    for path in tmp_path.rglob("*"):  # tables, responses, and the instance's event log and run storage
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_settings_read_the_process_environment_and_keep_no_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-settings-secret-77")
    monkeypatch.setenv("SIGMA_TEMPERATURES", "0.2, 0.9")
    monkeypatch.setenv("SIGMA_PROBLEMS", "")  # blank reads as unset
    settings = Settings.from_env()
    assert settings.temperatures == ("0.2", "0.9") and settings.problems == "arithmetic:12"
    assert settings.critic_backend == "openai"  # the key's presence picks the critic's default
    assert "sk-settings-secret-77" not in repr(settings) + str(settings.model_dump())
