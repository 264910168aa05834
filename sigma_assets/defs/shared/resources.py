"""Dagster resources: typed, configurable views of the settings.

One class per storage kind and per model backend kind, so a resource holds only the fields its kind
uses, and secrets are `dg.EnvVar` fields the kind requires (resolved in the step, never in config).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from sigma_assets.data.problems import ColumnNames, LoadedProblems, load_problems
from sigma_assets.data.storage import StorageRoot
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import Backend
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.llm.remote_models import storage_options_for
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.llm.retry import RequestFailed, RetrySettings
from sigma_assets.settings import BUNDLED_SMOLLM2


class StorageResource(dg.ConfigurableResource):
    """A storage root on a local or mounted file system: tables, the response store and models."""

    url: str

    def location(self) -> StorageRoot:
        """The root, as is (reads and writes of existing objects)."""
        return StorageRoot(url=self.url)

    def root(self) -> StorageRoot:
        """The root, created if missing; fails early, naming the URL, when it cannot be reached."""
        return self.location().prepare()


class S3StorageResource(StorageResource):
    """A storage root in an S3-compatible bucket (`s3://bucket/prefix`), with its endpoint and keys."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str  # EnvVar("AWS_ACCESS_KEY_ID")
    secret_access_key: str  # EnvVar("AWS_SECRET_ACCESS_KEY")

    def location(self) -> StorageRoot:
        return StorageRoot(
            url=self.url,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )


class ProblemsResource(dg.ConfigurableResource):
    """Where problems come from (SIGMA_PROBLEMS) and how they are sharded (SIGMA_NUM_SHARDS)."""

    source: str = "arithmetic"
    num_shards: int = 4
    problem_column: str | None = None
    answer_column: str | None = None
    id_column: str | None = None

    def load(self, storage: StorageRoot) -> LoadedProblems:
        columns = ColumnNames(
            problem=self.problem_column, answer=self.answer_column, problem_id=self.id_column
        )
        return load_problems(self.source, columns, storage.storage_options)


class ModelResource(dg.ConfigurableResource):
    """One model role (policy or critic) and its limits; every call goes through `LLMClient`, with
    responses kept in the store under `<root>/responses/<namespace>/`. Subclasses say what serves it."""

    model: str = BUNDLED_SMOLLM2
    concurrency: int = 16
    max_attempts: int = 6
    timeout_s: float = 600.0
    max_usd_per_run: float | None = None  # SIGMA_MAX_USD_PER_RUN: a stage projected over it refuses to start
    # A local tokenizer folder for the model's chat template (SIGMA_POLICY_TOKENIZER); unset, the local
    # model folder's own (in-process backends) or none (a server).
    tokenizer: str | None = None

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def local_model_path(self) -> str | None:
        """The model's own folder, where the model runs in this process; None for a server."""
        return None

    def load_tokenizer(self) -> tuple[Any | None, str]:
        """The model's tokenizer and its name, or (None, why there is none)."""
        path = self.tokenizer or self.local_model_path()
        if path is None:
            return None, "no tokenizer for a server model (SIGMA_POLICY_TOKENIZER names a local one)"
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(path), self.tokenizer or self.model
        except (OSError, ValueError) as exc:
            if self.tokenizer:
                raise ValueError(
                    f"SIGMA_POLICY_TOKENIZER={self.tokenizer!r} is not a tokenizer: {exc}"
                ) from exc
            return None, f"no tokenizer found for {self.model}"

    @property
    def batch_api(self) -> bool:
        """Whether a stage's first call goes out as one OpenAI Batch API file."""
        return False

    def build_backend(self) -> Backend:
        raise NotImplementedError

    @contextmanager
    def client(self, storage: StorageRoot, namespace: str, retry_failed: bool = False) -> Iterator[LLMClient]:
        """A client on the stage's response store. When the stage succeeds, the calls it gave up on are
        recorded so that a replay takes the same branch; `retry_failed` sends those calls again."""
        store = ResponseStore(storage.path(), namespace).load()
        client = LLMClient(
            self.build_backend(),
            store,
            self.concurrency,
            RetrySettings(max_attempts=self.max_attempts, timeout_s=self.timeout_s),
            retry_failed=retry_failed,
        )
        try:
            yield client
            client.record_failures()
        except RequestFailed as exc:
            # Its retry budget is spent: the step's RetryPolicy may rerun the shard only when a lost
            # connection may have healed; anything else would fail the same way and pay again.
            raise dg.Failure(description=str(exc), allow_retries=exc.heals) from exc
        finally:
            client.close()
        # Many small segments slow the next load; one merged segment per namespace keeps it quick.
        if store.segments_written + store.loaded_segments > 16:
            store.compact()


class InProcessModelResource(ModelResource):
    """A model that runs in the step's process, from a local folder, the bundled SmolLM2, or a folder
    named by URL on the storage root (fetched once into the local model cache)."""

    # Where a model named by URL (`s3://...`) is fetched from, with the root's endpoint and keys; unset,
    # a URL is read with its filesystem's own standard settings.
    storage: StorageResource | None = None

    def _local_folder(self, model: str) -> str:
        """`model` as a local folder: the bundled model converted, a URL fetched once into the cache."""
        root = self.storage.location() if self.storage else None
        return resolve_local_model(model, storage_options_for(model, root))


class TransformersModelResource(InProcessModelResource):
    """A local model folder (or the bundled SmolLM2) run in the step's process with transformers."""

    device: str = "auto"

    @property
    def kind(self) -> str:
        return "transformers"

    def local_model_path(self) -> str | None:
        return self._local_folder(self.model)

    def build_backend(self) -> Backend:
        from sigma_assets.llm.backends.hf_local import TransformersBackend

        return TransformersBackend(self._local_folder(self.model), device=self.device, model_name=self.model)


class VLLMEngineResource(InProcessModelResource):
    """A local model folder run in the step's process by vLLM's engine (a GPU machine)."""

    @property
    def kind(self) -> str:
        return "vllm"

    def local_model_path(self) -> str | None:
        return self._local_folder(self.model)

    def build_backend(self) -> Backend:
        from sigma_assets.llm.backends.vllm_engine import VLLMBackend

        return VLLMBackend(self._local_folder(self.model), model_name=self.model)


class OpenAIModelResource(ModelResource):
    """A model behind an OpenAI-compatible API: OpenAI itself, `vllm serve`, or `transformers serve`."""

    base_url: str | None = None  # None: api.openai.com
    api_key: str  # EnvVar(...): servers without auth accept any value, e.g. EMPTY
    # "openai" (OpenAI, vLLM, any compatible server) or "transformers" (`transformers serve`, which
    # samples only through its generation config).
    server: str = "openai"
    http_transport: str = "aiohttp"  # the openai SDK's transport: "aiohttp" (fast) or "httpx"
    # The OpenAI Batch API (half price, answers within 24 h): each stage's first call goes out as batches.
    use_batch_api: bool = False
    batch_poll_s: float = 30.0
    batch_rounds: int = 3  # batches per request at most (an expired line goes in the next one), then online

    @property
    def kind(self) -> str:
        return "openai"

    @property
    def batch_api(self) -> bool:
        return self.use_batch_api

    def build_backend(self) -> Backend:
        from sigma_assets.llm.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(
            self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            transport=self.http_transport,
            generation_config_sampling=self.server == "transformers",
        )
