"""What the Dagster Helm chart 1.13 renders from the values in `infra/deploy/helm/values.yaml`.

Neither helm nor the chart is available offline, so the templates these values reach are followed here
from the chart's own text, condition by condition:

- `templates/configmap-instance.yaml`: the run coordinator (only with `dagsterDaemon.enabled` and
  `runCoordinator.enabled`), the concurrency block (only with `concurrency.enabled`), `run_monitoring`,
  `run_retries`, `sensors` and `schedules` (each only with the daemon enabled, the last two only with
  `useThreads`), `telemetry`, and `additionalInstanceConfig` appended as written. Where the 1.13 text of
  this file was not available, the chart's own tests (`schema_tests/test_concurrency.py`: the block is
  there when enabled, absent when not) and values schema (`RunRetries.retryOnAssetOrOpFailure`) say what
  it renders.
- `templates/helpers/instance/_run-coordinator.tpl`: a `config:` block only when some queued-coordinator
  value is set (the chart's own `dequeueUseThreads`/`dequeueNumWorkers` defaults are); in it
  `max_concurrent_runs` (-1 when unset) only without `concurrency.enabled` or when set explicitly.
- `templates/helpers/instance/_concurrency.tpl`: `pools` and `runs`, and its three `fail`s when a limit
  is set both there and on the queued coordinator.
- `templates/helpers/instance/_run-launcher.tpl`: the `K8sRunLauncher` config.
- `charts/dagster-user-deployments/templates/helpers/_helpers.tpl`: `k8sContainerContext`, the container
  context that `includeConfigInLaunchedRuns` hands to every run of the code location.

Values are merged over the chart's defaults (`CHART_DEFAULTS`, the keys those templates read) as Helm
merges them: maps key by key, anything else replaced, a `null` deleting the default. Storage, the
scheduler and compute logs are the chart's own (no value here sets them) and are not rendered; values
that reach a part not followed here (retention, python logs, the user deployment's node selector,
tolerations and pod security context) are refused rather than rendered wrong.
"""

from __future__ import annotations

import copy
from typing import Any

# The chart's defaults for the keys the templates above read, as its 1.13 values.yaml sets them. That
# file is not available offline to compare against, so the limits the tests promise do not lean on
# them (they hold with the dequeue defaults present and absent; the values set every monitoring key);
# only the rendered sensors, schedules and dequeue settings are the defaults' own.
CHART_DEFAULTS: dict[str, Any] = {
    "global": {
        "dagsterHome": "/opt/dagster/dagster_home",
        "postgresqlSecretName": "dagster-postgresql-secret",
    },
    "dagsterDaemon": {
        "enabled": True,
        "runCoordinator": {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": None,
                    "tagConcurrencyLimits": [],
                    "dequeueIntervalSeconds": None,
                    "dequeueUseThreads": True,
                    "dequeueNumWorkers": 4,
                }
            },
        },
        "runMonitoring": {
            "enabled": True,
            "startTimeoutSeconds": 300,
            "pollIntervalSeconds": 120,
            "maxResumeRunAttempts": 0,
            "freeSlotsAfterRunEndSeconds": 0,
        },
        "runRetries": {"enabled": True, "maxRetries": 0},
        "sensors": {"useThreads": True, "numWorkers": 4},
        "schedules": {"useThreads": True, "numWorkers": 4},
    },
    "concurrency": {
        "enabled": False,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": []},
    },
    "telemetry": {"enabled": True},
    "retention": {"enabled": False},
    "pythonLogs": {},
    "additionalInstanceConfig": {},
    "runLauncher": {
        "type": "K8sRunLauncher",
        "config": {
            "k8sRunLauncher": {
                "jobNamespace": None,
                "loadInclusterConfig": True,
                "kubeconfigFile": None,
                "envConfigMaps": [],
                "envSecrets": [],
                "envVars": [],
                "volumeMounts": [],
                "volumes": [],
                "labels": {},
                "resources": {},
                "failPodOnRunFailure": False,
            }
        },
    },
    "dagster-user-deployments": {"imagePullSecrets": []},
}


class ChartFailure(ValueError):
    """What the chart's `fail` would stop `helm template` with."""


class NotFollowed(ValueError):
    """The values reach a part of the chart that this renderer does not follow."""


def helm_merge(defaults: Any, values: Any) -> Any:
    """Helm's coalescing of user values over chart defaults."""
    if not (isinstance(defaults, dict) and isinstance(values, dict)):
        return copy.deepcopy(values)
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(merged.get(key), value)
    return merged


def chart_values(values: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    return helm_merge(CHART_DEFAULTS if defaults is None else defaults, values)


def _set(value: Any) -> bool:
    """Helm's `not (kindIs "invalid" x)`: present and not null (0 and false count as set)."""
    return value is not None


def _queued_coordinator(values: dict[str, Any]) -> dict[str, Any]:
    qrc = values["dagsterDaemon"]["runCoordinator"].get("config", {}).get("queuedRunCoordinator") or {}
    concurrency_enabled = bool(values["concurrency"].get("enabled"))
    block: dict[str, Any] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    # `if not (empty (compact (values $qrc)))`: some value that is neither null, false, 0 nor empty.
    if not any(v not in (None, False, 0, "", [], {}) for v in qrc.values()):
        return block
    config: dict[str, Any] = {}
    if not concurrency_enabled or _set(qrc.get("maxConcurrentRuns")):
        config["max_concurrent_runs"] = (
            -1 if qrc.get("maxConcurrentRuns") is None else qrc["maxConcurrentRuns"]
        )
    if qrc.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = qrc["tagConcurrencyLimits"]
    for key, rendered in (
        ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
        ("dequeueUseThreads", "dequeue_use_threads"),
        ("dequeueNumWorkers", "dequeue_num_workers"),
    ):
        if qrc.get(key):
            config[rendered] = qrc[key]
    blocking = qrc.get("blockOpConcurrencyLimitedRuns")
    if blocking:
        config["block_op_concurrency_limited_runs"] = {
            "enabled": blocking.get("enabled"),
            "op_concurrency_slot_buffer": blocking.get("opConcurrencySlotBuffer"),
        }
    block["config"] = config
    return block


def _concurrency(values: dict[str, Any]) -> dict[str, Any] | None:
    concurrency = values["concurrency"]
    pools, runs = concurrency.get("pools") or {}, concurrency.get("runs") or {}
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    if coordinator.get("enabled") and coordinator.get("type") == "QueuedRunCoordinator":
        qrc = coordinator.get("config", {}).get("queuedRunCoordinator") or {}
        if _set(runs.get("maxConcurrentRuns")) and _set(qrc.get("maxConcurrentRuns")):
            raise ChartFailure(
                "Cannot set both concurrency.runs.maxConcurrentRuns and "
                "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns"
            )
        if runs.get("tagConcurrencyLimits") and qrc.get("tagConcurrencyLimits"):
            raise ChartFailure(
                "Cannot set both concurrency.runs.tagConcurrencyLimits and "
                "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits"
            )
        blocking = qrc.get("blockOpConcurrencyLimitedRuns")
        if (
            _set(pools.get("opGranularityRunBuffer"))
            and blocking
            and _set(blocking.get("opConcurrencySlotBuffer"))
        ):
            raise ChartFailure(
                "Cannot set both concurrency.pools.opGranularityRunBuffer and dagsterDaemon.runCoordinator"
                ".config.queuedRunCoordinator.blockOpConcurrencyLimitedRuns.opConcurrencySlotBuffer"
            )
    block: dict[str, Any] = {}
    rendered_pools: dict[str, Any] = {}
    if _set(pools.get("defaultLimit")):
        rendered_pools["default_limit"] = pools["defaultLimit"]
    if pools.get("granularity"):
        rendered_pools["granularity"] = pools["granularity"]
    if _set(pools.get("opGranularityRunBuffer")):
        rendered_pools["op_granularity_run_buffer"] = pools["opGranularityRunBuffer"]
    if rendered_pools:
        block["pools"] = rendered_pools
    rendered_runs: dict[str, Any] = {}
    if _set(runs.get("maxConcurrentRuns")):
        rendered_runs["max_concurrent_runs"] = runs["maxConcurrentRuns"]
    if runs.get("tagConcurrencyLimits"):
        rendered_runs["tag_concurrency_limits"] = [
            {"key": t["key"], **({"value": t["value"]} if t.get("value") else {}), "limit": t["limit"]}
            for t in runs["tagConcurrencyLimits"]
        ]
    if rendered_runs:
        block["runs"] = rendered_runs
    return block or None  # `concurrency:` with nothing under it is a YAML null


def _threads(section: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"use_threads": section["useThreads"]}
    for key, rendered in (("numWorkers", "num_workers"), ("numSubmitWorkers", "num_submit_workers")):
        if section.get(key):
            block[rendered] = section[key]
    return block


def _refuse_unfollowed(values: dict[str, Any]) -> None:
    if values["retention"].get("enabled") or values["pythonLogs"]:
        raise NotFollowed("retention and pythonLogs are not followed by this renderer")


def render_chart_sections(
    values: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[tuple[str, Any]]:
    """The top-level keys of the chart's `dagster.yaml`, in the order the template writes them
    (`additionalInstanceConfig` last); a key may appear twice."""
    merged = chart_values(values, defaults)
    _refuse_unfollowed(merged)
    daemon = merged["dagsterDaemon"]
    sections: list[tuple[str, Any]] = [("run_launcher", render_run_launcher(values, defaults=defaults))]
    coordinator = daemon["runCoordinator"]
    if daemon.get("enabled") and coordinator.get("enabled"):
        if coordinator.get("type") != "QueuedRunCoordinator":
            raise NotFollowed(f"run coordinator {coordinator.get('type')}")
        sections.append(("run_coordinator", _queued_coordinator(merged)))
    monitoring = daemon.get("runMonitoring") or {}
    if daemon.get("enabled") and monitoring.get("enabled"):
        block = {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring.get("startTimeoutSeconds"),
        }
        if _set(monitoring.get("cancelTimeoutSeconds")):
            block["cancel_timeout_seconds"] = monitoring["cancelTimeoutSeconds"]
        if _set(monitoring.get("maxResumeRunAttempts")):
            block["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
        block["poll_interval_seconds"] = monitoring.get("pollIntervalSeconds")
        block["free_slots_after_run_end_seconds"] = monitoring.get("freeSlotsAfterRunEndSeconds")
        sections.append(("run_monitoring", block))
    retries = daemon.get("runRetries") or {}
    if daemon.get("enabled") and retries.get("enabled"):
        block = {"enabled": retries["enabled"]}
        if retries.get("maxRetries"):
            block["max_retries"] = retries["maxRetries"]
        if _set(retries.get("retryOnAssetOrOpFailure")):
            block["retry_on_asset_or_op_failure"] = retries["retryOnAssetOrOpFailure"]
        sections.append(("run_retries", block))
    for name in ("sensors", "schedules"):
        section = daemon.get(name) or {}
        if daemon.get("enabled") and section.get("useThreads"):
            sections.append((name, _threads(section)))
    sections.append(("telemetry", {"enabled": merged["telemetry"].get("enabled")}))
    if merged["concurrency"].get("enabled"):
        sections.append(("concurrency", _concurrency(merged)))
    sections.extend((merged["additionalInstanceConfig"] or {}).items())
    return sections


def render_instance(values: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's `dagster.yaml` as Dagster reads it: where a key is written twice, YAML keeps the last."""
    return dict(render_chart_sections(values, defaults))


def repeated_keys(values: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """Keys that `additionalInstanceConfig` writes again over a block the chart rendered itself (the
    chart's block is then silently dropped)."""
    names = [name for name, _ in render_chart_sections(values, defaults)]
    return sorted({name for name in names if names.count(name) > 1})


def _fullname(release: str, chart: str) -> str:
    return release if chart in release else f"{release}-{chart}"[:63].rstrip("-")


def render_run_launcher(
    values: dict[str, Any],
    release: str = "sigma",
    namespace: str = "dagster",
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `run_launcher` block (`_run-launcher.tpl`, K8sRunLauncher): `module`, `class`, `config`."""
    merged = chart_values(values, defaults)
    if merged["runLauncher"]["type"] != "K8sRunLauncher":
        raise NotFollowed(f"run launcher {merged['runLauncher']['type']}")
    launcher = merged["runLauncher"]["config"]["k8sRunLauncher"]
    fullname = _fullname(release, "dagster")
    config: dict[str, Any] = {"load_incluster_config": launcher["loadInclusterConfig"]}
    if launcher.get("kubeconfigFile"):
        config["kubeconfig_file"] = launcher["kubeconfigFile"]
    config["job_namespace"] = launcher.get("jobNamespace") or namespace
    config["image_pull_policy"] = launcher.get("imagePullPolicy")
    if merged.get("imagePullSecrets"):
        config["image_pull_secrets"] = merged["imagePullSecrets"]
    config["service_account_name"] = fullname
    if "image" in launcher:
        raise NotFollowed("runLauncher.config.k8sRunLauncher.image")
    config["dagster_home"] = merged["global"]["dagsterHome"]
    config["instance_config_map"] = f"{fullname}-instance"
    config["postgres_password_secret"] = merged["global"]["postgresqlSecretName"]
    if launcher.get("envConfigMaps"):
        config["env_config_maps"] = [c["name"] for c in launcher["envConfigMaps"] if "name" in c]
    if launcher.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in launcher["envSecrets"] if "name" in s]
    for key, rendered in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ):
        if launcher.get(key):
            config[rendered] = launcher[key]
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if launcher.get("schedulerName"):
        config["scheduler_name"] = launcher["schedulerName"]
    if launcher.get("securityContext"):
        config["security_context"] = launcher["securityContext"]
    run_k8s = launcher.get("runK8sConfig") or {}
    if run_k8s:
        config["run_k8s_config"] = {
            rendered: run_k8s[key]
            for key, rendered in (
                ("containerConfig", "container_config"),
                ("podSpecConfig", "pod_spec_config"),
                ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
                ("jobSpecConfig", "job_spec_config"),
                ("jobMetadata", "job_metadata"),
            )
            if run_k8s.get(key)
        }
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def render_container_context(
    values: dict[str, Any], deployment_name: str, release: str = "sigma", namespace: str = "dagster"
) -> dict[str, Any]:
    """The container context a user deployment passes to its runs (`includeConfigInLaunchedRuns`,
    enabled unless set false), or {} when it passes none."""
    merged = chart_values(values)
    subchart = merged["dagster-user-deployments"]
    (deployment,) = [d for d in subchart["deployments"] if d["name"] == deployment_name]
    if not (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True}).get("enabled"):
        return {}
    for key in ("nodeSelector", "tolerations", "podSecurityContext"):
        if deployment.get(key):  # passed to runs as of 1.13, in a form not followed here
            raise NotFollowed(f"user deployment {key}")
    fullname = _fullname(release, "dagster-user-deployments")
    k8s: dict[str, Any] = {"image_pull_policy": deployment["image"]["pullPolicy"]}
    if subchart.get("imagePullSecrets"):
        k8s["image_pull_secrets"] = subchart["imagePullSecrets"]
    k8s["env_config_maps"] = [f"{fullname}-{deployment['name']}-user-env"] + [
        c["name"] for c in deployment.get("envConfigMaps") or [] if "name" in c
    ]
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [s["name"] for s in deployment["envSecrets"] if "name" in s]
    for key, rendered in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(key):
            k8s[rendered] = deployment[key]
    k8s["namespace"] = namespace
    k8s["service_account_name"] = f"{fullname}-user-deployments"
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    pod_spec = {}
    if deployment.get("sidecarContainers"):
        pod_spec["containers"] = deployment["sidecarContainers"]
    if deployment.get("initContainers"):
        pod_spec["init_containers"] = deployment["initContainers"]
    if pod_spec:
        k8s["run_k8s_config"] = {"pod_spec_config": pod_spec}
    return {"k8s": k8s}
