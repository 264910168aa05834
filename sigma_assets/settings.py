"""Every environment setting of the project, read once and validated in one place (DESIGN §3).

Assets never read `os.environ`; they get these values through resources built in `definitions.py`.
Secrets (`OPENAI_API_KEY`, `AWS_SECRET_ACCESS_KEY`) are not stored here: resources take them through
`dagster.EnvVar`, so their values never reach run config, logs or metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORAGE_DIR = PROJECT_ROOT / "data"

POLICY_BACKENDS = ("transformers", "openai", "vllm")
CRITIC_BACKENDS = ("transformers", "openai")
# What answers SIGMA_POLICY_BASE_URL: any OpenAI-compatible server, or `transformers serve`.
POLICY_SERVERS = ("openai", "transformers")
BUNDLED_SMOLLM2 = "smollm2-135m-instruct"
# The embedded run: 12 bundled problems in 2 shards, searched at both temperatures, fits about 15 minutes
# on 2 CPU cores with the bundled model (see README); point SIGMA_PROBLEMS at real data for real runs.
DEFAULT_PROBLEMS = "arithmetic:12"
DEFAULT_NUM_SHARDS = 2


class SettingsError(ValueError):
    """A configuration variable has a value the project cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    storage_url: str
    problems: str
    num_shards: int
    policy_backend: str
    policy_model: str
    policy_base_url: str | None
    policy_server: str
    critic_backend: str
    critic_model: str
    critic_base_url: str | None
    critic_concurrency: int
    temperatures: tuple[str, ...]
    aws_endpoint_url: str | None
    aws_region: str | None
    max_usd_per_run: float | None = None  # None: no cap
    critic_batch_api: bool = False  # the critic's calls through the OpenAI Batch API (half price, <= 24 h)
    # Training and evaluation: the base model fine-tuned, the named training profile, benchmark files.
    base_model: str = BUNDLED_SMOLLM2
    training_profile: str = "cpu"
    eval_sets: str = ""
    # Kubernetes: GPU pods' node labels (SIGMA_GPU_NODE_SELECTOR=key=value,...), GPUs of a training pod,
    # and whether each step runs in its own pod (so that those per-asset pod settings apply).
    gpu_node_selector: tuple[tuple[str, str], ...] = ()
    training_gpus: int = 1
    k8s_step_pods: bool = False

    @property
    def is_s3(self) -> bool:
        return self.storage_url.startswith("s3://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        storage_url = get("SIGMA_STORAGE_URL", str(DEFAULT_STORAGE_DIR))
        assert storage_url is not None
        if "://" in storage_url and not storage_url.startswith(("s3://", "file://")):
            raise SettingsError(f"SIGMA_STORAGE_URL={storage_url!r}: use a local path or s3://bucket/prefix")
        if storage_url.startswith("s3://") and not storage_url[len("s3://") :].strip("/"):
            raise SettingsError(f"SIGMA_STORAGE_URL={storage_url!r} names no bucket")

        policy_backend = _choice(env, "SIGMA_POLICY_BACKEND", "transformers", POLICY_BACKENDS)
        has_key = bool(get("OPENAI_API_KEY"))
        critic_backend = _choice(
            env, "SIGMA_CRITIC_BACKEND", "openai" if has_key else "transformers", CRITIC_BACKENDS
        )
        critic_default = "gpt-4o-mini" if critic_backend == "openai" else BUNDLED_SMOLLM2
        policy_model = get("SIGMA_POLICY_MODEL", BUNDLED_SMOLLM2)
        policy_base_url = get("SIGMA_POLICY_BASE_URL")
        if policy_backend == "openai" and not policy_base_url:
            raise SettingsError(
                "SIGMA_POLICY_BACKEND=openai needs SIGMA_POLICY_BASE_URL (an OpenAI-compatible server, "
                "e.g. http://127.0.0.1:8000/v1 from `vllm serve`)"
            )
        return cls(
            storage_url=storage_url,
            problems=get("SIGMA_PROBLEMS", DEFAULT_PROBLEMS) or DEFAULT_PROBLEMS,
            num_shards=_positive_int(env, "SIGMA_NUM_SHARDS", DEFAULT_NUM_SHARDS),
            policy_backend=policy_backend,
            policy_model=policy_model or BUNDLED_SMOLLM2,
            policy_base_url=policy_base_url,
            policy_server=_choice(env, "SIGMA_POLICY_SERVER", "openai", POLICY_SERVERS),
            critic_backend=critic_backend,
            critic_model=get("SIGMA_CRITIC_MODEL", critic_default) or critic_default,
            critic_base_url=get("SIGMA_CRITIC_BASE_URL"),
            critic_concurrency=_positive_int(env, "SIGMA_CRITIC_CONCURRENCY", 16),
            temperatures=_temperatures(env, "SIGMA_TEMPERATURES", "0.4,0.7"),
            aws_endpoint_url=get("AWS_ENDPOINT_URL"),
            aws_region=get("AWS_REGION"),
            max_usd_per_run=_positive_float(env, "SIGMA_MAX_USD_PER_RUN"),
            critic_batch_api=_flag(env, "SIGMA_CRITIC_BATCH_API"),
            base_model=get("SIGMA_BASE_MODEL", BUNDLED_SMOLLM2) or BUNDLED_SMOLLM2,
            training_profile=get("SIGMA_TRAINING_PROFILE", "cpu") or "cpu",
            eval_sets=get("SIGMA_EVAL_SETS", "") or "",
            gpu_node_selector=_labels(env, "SIGMA_GPU_NODE_SELECTOR"),
            training_gpus=_positive_int(env, "SIGMA_TRAINING_GPUS", 1),
            k8s_step_pods=_flag(env, "SIGMA_K8S_STEP_PODS"),
        )


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive integer") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r}: expected a positive integer")
    return value


def _temperatures(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """Sampling temperatures as partition keys, exactly as written ("0.4", "0.7")."""
    raw = env.get(name, "").strip() or default
    keys = tuple(part.strip() for part in raw.split(","))
    for key in keys:
        try:
            value = float(key)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: {key!r} is not a number") from None
        if not 0.0 <= value <= 2.0:
            raise SettingsError(f"{name}={raw!r}: {key} is outside 0..2")
    if len(set(keys)) != len(keys) or len({float(k) for k in keys}) != len(keys):
        raise SettingsError(f"{name}={raw!r}: a temperature is given twice")
    return keys


def _positive_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of US dollars") from None
    if not value > 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of US dollars (unset: no cap)")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _labels(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """Kubernetes node labels written `key=value,key=value`."""
    raw = env.get(name, "").strip()
    pairs = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{name}={raw!r}: expected key=value pairs separated by commas")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)
