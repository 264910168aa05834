"""Pod settings of the heavy assets on Kubernetes, as `dagster-k8s/config` op tags.

dagster-k8s applies them when each step runs in its own pod (`k8s_job_executor`, chosen by
SIGMA_K8S_STEP_PODS=true); on a laptop or in the compose stack they are inert tags. Whether a pod asks
for GPUs follows the settings: the search needs none when a policy server answers it, and the `cpu`
training profile (the bundled model) trains and evaluates without one.

dagster-k8s deep-merges a tag over the code location's container context (the Helm values' user
deployment `resources`, which every other pod gets): both requests set here replace its requests, and
the limits here are the only ones, as long as the values set requests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from sigma_assets.defs.shared.partitions import SETTINGS
from sigma_assets.settings import Settings

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
# GPU nodes are usually tainted so that only pods that ask for GPUs land on them.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class PodSize:
    cpu: str
    memory: str
    gpus: int = 0


def pod_size(asset: str, settings: Settings) -> PodSize:
    if asset == "mcts_trees":
        # With a policy server the step only grows trees and checks answers; in process it runs the model.
        return PodSize("4", "16Gi", 0 if settings.policy_backend == "openai" else 1)
    if asset == "finetuned_model":
        return PodSize("8", "64Gi", 0 if settings.training_profile == "cpu" else settings.training_gpus)
    if asset == "eval_scores":
        return PodSize("8", "32Gi", 0 if settings.training_profile == "cpu" else 1)
    raise KeyError(f"no pod size for {asset!r}")


def k8s_op_tags(asset: str, settings: Settings | None = None) -> dict[str, Any]:
    """The `dagster-k8s/config` tag of `asset`'s step pod: requests, GPUs, node selector, /dev/shm."""
    settings = settings or SETTINGS
    size = pod_size(asset, settings)
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": size.cpu, "memory": size.memory},
        "limits": {"memory": size.memory},
    }
    container: dict[str, Any] = {"resources": resources}
    pod_spec: dict[str, Any] = {}
    if size.gpus:
        resources["limits"][GPU_RESOURCE] = str(size.gpus)
        pod_spec["tolerations"] = [GPU_TOLERATION]
        if settings.gpu_node_selector:
            pod_spec["node_selector"] = dict(settings.gpu_node_selector)
        # NCCL and data loaders share tensors through /dev/shm, 64 MiB by default in a pod.
        pod_spec["volumes"] = [{"name": "dshm", "empty_dir": {"medium": "Memory"}}]
        container["volume_mounts"] = [{"name": "dshm", "mount_path": "/dev/shm"}]
    return {K8S_CONFIG_TAG: {"container_config": container, "pod_spec_config": pod_spec}}


def step_executor(settings: Settings) -> dg.ExecutorDefinition | None:
    """One pod per step on Kubernetes (so the tags above apply); None keeps Dagster's default."""
    if not settings.k8s_step_pods:
        return None
    from dagster_k8s import k8s_job_executor  # the `deploy` extra; only the cluster image needs it

    return k8s_job_executor
