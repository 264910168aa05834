"""The instance configuration (`dagster.yaml`) that the Dagster Helm chart 1.13 builds from values.

Neither helm nor the chart is available offline, so the parts of the chart's `configmap-instance.yaml`
that these values reach are followed here, key by key: the run coordinator (`dagsterDaemon.runCoordinator`
and its `queuedRunCoordinator` config), the concurrency block (`helpers/instance/_concurrency.tpl`,
rendered only with `concurrency.enabled`, and refused when a limit is set both there and on the run
coordinator), run monitoring, run retries (`dagsterDaemon.runRetries`), telemetry and
`additionalInstanceConfig`, which the chart appends as is. Storage and the run launcher are the chart's
own and left out.
"""

from __future__ import annotations

import re
from typing import Any


class ChartFailure(ValueError):
    """What the chart's `fail` would stop `helm template` with."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def render_instance(values: dict[str, Any]) -> dict[str, Any]:
    daemon = values.get("dagsterDaemon", {})
    instance: dict[str, Any] = {}
    coordinator = daemon.get("runCoordinator", {})
    queued = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
    if (
        daemon.get("enabled")
        and coordinator.get("enabled")
        and coordinator.get("type") == "QueuedRunCoordinator"
    ):
        instance["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": _snake_keys(queued),
        }
    concurrency = values.get("concurrency") or {}
    runs, pools = concurrency.get("runs") or {}, concurrency.get("pools") or {}
    if concurrency.get("enabled"):
        if "maxConcurrentRuns" in runs and "maxConcurrentRuns" in queued:
            raise ChartFailure(
                "Cannot set both concurrency.runs.maxConcurrentRuns and "
                "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns"
            )
        block: dict[str, Any] = {}
        rendered_pools = {
            _snake(k): pools[k]
            for k in ("defaultLimit", "granularity", "opGranularityRunBuffer")
            if k in pools
        }
        if rendered_pools:
            block["pools"] = rendered_pools
        rendered_runs = {_snake(k): runs[k] for k in ("maxConcurrentRuns",) if k in runs}
        if runs.get("tagConcurrencyLimits"):
            rendered_runs["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
        if rendered_runs:
            block["runs"] = rendered_runs
        if block:
            instance["concurrency"] = block
    monitoring = daemon.get("runMonitoring") or {}
    if daemon.get("enabled") and monitoring.get("enabled"):
        instance["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        }
    retries = daemon.get("runRetries") or {}
    if daemon.get("enabled") and retries.get("enabled"):
        instance["run_retries"] = {
            "enabled": True,
            **({"max_retries": retries["maxRetries"]} if retries.get("maxRetries") else {}),
        }
    instance["telemetry"] = {"enabled": bool((values.get("telemetry") or {}).get("enabled"))}
    extra = values.get("additionalInstanceConfig") or {}
    clash = sorted(set(extra) & set(instance))
    if clash:  # the chart appends them: a key twice is a YAML document Dagster refuses
        raise ChartFailure(f"additionalInstanceConfig repeats {', '.join(clash)}")
    return instance | extra
