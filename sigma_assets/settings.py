"""Every environment setting of the project, read once and validated in one place (DESIGN §3).

pydantic-settings reads the variables; what it cannot say by type alone (temperatures as partition keys,
storage URLs, node labels) is a validator, and the critic's defaults, which depend on another variable,
are properties.
Assets never read `os.environ`; they get these values through resources built in `definitions.py`.
Secrets are not stored here: `OPENAI_API_KEY` is only checked for presence (it picks the critic's
default backend), and resources take every secret through `dagster.EnvVar`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORAGE_DIR = PROJECT_ROOT / "data"

BUNDLED_SMOLLM2 = "smollm2-135m-instruct"
# The embedded run: 12 bundled problems in 2 shards, searched at both temperatures, fits minutes on 2 CPU
# cores with the bundled model (the README says how many); point SIGMA_PROBLEMS at real data for real runs.
DEFAULT_PROBLEMS = "arithmetic:12"
DEFAULT_NUM_SHARDS = 2

PolicyBackend = Literal["transformers", "openai", "vllm"]
CriticBackend = Literal["transformers", "openai"]
# What answers SIGMA_POLICY_BASE_URL: any OpenAI-compatible server, or `transformers serve`.
PolicyServer = Literal["openai", "transformers"]


class SettingsError(ValueError):
    """A configuration variable has a value the project cannot use; the message names the variable."""


def _env(name: str) -> Any:
    return Field(validation_alias=name)


class Settings(BaseSettings):
    """The project's settings; each field is read from the variable named beside it."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, frozen=True, extra="ignore", populate_by_name=False
    )

    storage_url: Annotated[str, _env("SIGMA_STORAGE_URL")] = str(DEFAULT_STORAGE_DIR)
    problems: Annotated[str, _env("SIGMA_PROBLEMS")] = DEFAULT_PROBLEMS
    num_shards: Annotated[PositiveInt, _env("SIGMA_NUM_SHARDS")] = DEFAULT_NUM_SHARDS
    policy_backend: Annotated[PolicyBackend, _env("SIGMA_POLICY_BACKEND")] = "transformers"
    policy_model: Annotated[str, _env("SIGMA_POLICY_MODEL")] = BUNDLED_SMOLLM2
    policy_base_url: Annotated[str | None, _env("SIGMA_POLICY_BASE_URL")] = None
    policy_server: Annotated[PolicyServer, _env("SIGMA_POLICY_SERVER")] = "openai"
    # Policy requests in flight at once: a server batches what it is sent, so set it to what it decodes
    # together (e.g. 256 for vLLM); the search keeps hundreds waiting. In process, the rows of a batch.
    policy_concurrency: Annotated[PositiveInt, _env("SIGMA_POLICY_CONCURRENCY")] = 16
    # A local tokenizer folder whose chat template formats the policy's prompt (for a server policy).
    policy_tokenizer: Annotated[str | None, _env("SIGMA_POLICY_TOKENIZER")] = None
    # As set; unset, `critic_backend` and `critic_model` derive them from whether OPENAI_API_KEY is set.
    critic_backend_set: Annotated[CriticBackend | None, _env("SIGMA_CRITIC_BACKEND")] = None
    critic_model_set: Annotated[str | None, _env("SIGMA_CRITIC_MODEL")] = None
    critic_base_url: Annotated[str | None, _env("SIGMA_CRITIC_BASE_URL")] = None
    critic_concurrency: Annotated[PositiveInt, _env("SIGMA_CRITIC_CONCURRENCY")] = 16
    # Sampling temperatures as partition keys, exactly as written ("0.4", "0.7").
    temperatures: Annotated[tuple[str, ...], NoDecode, _env("SIGMA_TEMPERATURES")] = ("0.4", "0.7")
    aws_endpoint_url: Annotated[str | None, _env("AWS_ENDPOINT_URL")] = None
    aws_region: Annotated[str | None, _env("AWS_REGION")] = None
    max_usd_per_run: Annotated[PositiveFloat | None, _env("SIGMA_MAX_USD_PER_RUN")] = None  # None: no cap
    # The critic's calls through the OpenAI Batch API (half price, answered within 24 h).
    critic_batch_api: Annotated[bool, _env("SIGMA_CRITIC_BATCH_API")] = False
    # Training and evaluation: the base model fine-tuned, the named training profile, benchmark files.
    # A model (base or policy) may be a local folder, the bundled SmolLM2, or a folder URL on the storage
    # root (`s3://bucket/models/NAME`), fetched once per machine into SIGMA_MODEL_CACHE.
    base_model: Annotated[str, _env("SIGMA_BASE_MODEL")] = BUNDLED_SMOLLM2
    training_profile: Annotated[str, _env("SIGMA_TRAINING_PROFILE")] = "cpu"
    # What starts the trainer: empty for this Python, else e.g. `torchrun --nproc-per-node 8` or
    # `accelerate launch --config_file infra/deploy/accelerate/fsdp.yaml`.
    training_launcher: Annotated[str, _env("SIGMA_TRAINING_LAUNCHER")] = ""
    eval_sets: Annotated[str, _env("SIGMA_EVAL_SETS")] = ""
    # Kubernetes: GPU pods' node labels (SIGMA_GPU_NODE_SELECTOR=key=value,...), GPUs of a training pod,
    # and whether each step runs in its own pod (so that those per-asset pod settings apply).
    gpu_node_selector: Annotated[tuple[tuple[str, str], ...], NoDecode, _env("SIGMA_GPU_NODE_SELECTOR")] = ()
    training_gpus: Annotated[PositiveInt, _env("SIGMA_TRAINING_GPUS")] = 1
    k8s_step_pods: Annotated[bool, _env("SIGMA_K8S_STEP_PODS")] = False
    # Whether OPENAI_API_KEY is set; the key itself is turned into this flag and never kept.
    openai_key_set: Annotated[bool, Field(validation_alias="OPENAI_API_KEY", exclude=True, repr=False)] = (
        False
    )

    @property
    def critic_backend(self) -> CriticBackend:
        """SIGMA_CRITIC_BACKEND, else `openai` when OPENAI_API_KEY is set, else the model in process."""
        return self.critic_backend_set or ("openai" if self.openai_key_set else "transformers")

    @property
    def critic_model(self) -> str:
        default = "gpt-4o-mini" if self.critic_backend == "openai" else BUNDLED_SMOLLM2
        return self.critic_model_set or default

    @property
    def is_s3(self) -> bool:
        return self.storage_url.startswith("s3://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of the process environment, or of `env` alone (unset and blank alike)."""
        try:
            if env is None:
                return cls()
            return cls.model_validate({k: v for k, v in env.items() if v.strip()})
        except ValidationError as exc:
            raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None

    @field_validator("openai_key_set", mode="before")
    @classmethod
    def _key_presence(cls, value: Any) -> bool:
        return value if isinstance(value, bool) else bool(str(value).strip())

    @field_validator("temperatures", mode="before")
    @classmethod
    def _temperatures(cls, value: Any) -> tuple[str, ...]:
        keys = tuple(part.strip() for part in value.split(",")) if isinstance(value, str) else tuple(value)
        for key in keys:
            try:
                number = float(key)
            except ValueError:
                raise ValueError(f"{key!r} is not a number") from None
            if not 0.0 <= number <= 2.0:
                raise ValueError(f"{key} is outside 0..2")
        if len({float(k) for k in keys}) != len(keys):
            raise ValueError("a temperature is given twice")
        return keys

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError("use a local path or s3://bucket/prefix")
        if value.startswith("s3://") and not value[len("s3://") :].strip("/"):
            raise ValueError("names no bucket")
        return value

    @field_validator("gpu_node_selector", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        """Kubernetes node labels written `key=value,key=value`."""
        if not isinstance(value, str):
            return value
        pairs = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, label = part.partition("=")
            if not sep or not key.strip():
                raise ValueError("expected key=value pairs separated by commas")
            pairs.append((key.strip(), label.strip()))
        return tuple(pairs)

    @model_validator(mode="after")
    def _policy_server_named(self) -> Settings:
        if self.policy_backend == "openai" and not self.policy_base_url:
            raise ValueError(
                "SIGMA_POLICY_BACKEND=openai needs SIGMA_POLICY_BASE_URL (an OpenAI-compatible server, "
                "e.g. http://127.0.0.1:8000/v1 from `vllm serve`)"
            )
        return self


# pydantic's wording of a type error, as docs/configuration.md words the variable's meaning.
_EXPECTED = {
    "int_parsing": "expected a positive integer",
    "greater_than": "expected a positive integer",
    "float_parsing": "expected a positive number",
}
_EXPECTED_BY_VARIABLE = {
    "SIGMA_MAX_USD_PER_RUN": "expected a positive number of US dollars (unset: no cap)",
    "bool_parsing": "expected true or false",
}


def _describe(error: Mapping[str, Any]) -> str:
    """`VARIABLE='value': what was expected`, or the message alone for a rule across variables."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        message = f"expected one of {error['ctx']['expected'].replace(' or ', ', ')}".replace("'", "")
    if not error["loc"]:
        return message
    variable = error["loc"][0]
    if error["type"] in _EXPECTED:
        message = _EXPECTED_BY_VARIABLE.get(str(variable), _EXPECTED[str(error["type"])])
    return f"{variable}={error['input']!r}: {message}"
