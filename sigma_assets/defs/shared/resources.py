"""Dagster resources: typed, configurable views of the settings, with secrets taken through EnvVar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from sigma_assets.data.problems import ColumnNames, LoadedProblems, load_problems
from sigma_assets.data.storage import StorageRoot
from sigma_assets.llm.client import LLMClient, RequestFailed, RetrySettings
from sigma_assets.llm.models import build_backend
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.settings import BUNDLED_SMOLLM2


class StorageResource(dg.ConfigurableResource):
    """The storage root shared by tables, the response store and models."""

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def root(self) -> StorageRoot:
        return StorageRoot(
            url=self.url,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        ).prepare()


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


class LLMResource(dg.ConfigurableResource):
    """One model role (policy or critic): its backend, model and limits; every call goes through
    `LLMClient`, with responses kept in the store under `<root>/responses/<namespace>/`."""

    backend: str = "transformers"
    model: str = BUNDLED_SMOLLM2
    base_url: str | None = None
    api_key: str | None = None  # set through EnvVar("OPENAI_API_KEY"): never in config or logs
    concurrency: int = 16
    max_attempts: int = 6
    timeout_s: float = 600.0
    device: str = "auto"
    # openai backend: "openai" (OpenAI, vLLM, any compatible server) or "transformers" (`transformers serve`).
    server: str = "openai"
    http_transport: str = "aiohttp"  # the openai SDK's transport: "aiohttp" (fast) or "httpx"
    max_usd_per_run: float | None = None  # SIGMA_MAX_USD_PER_RUN: a stage projected over it refuses to start
    # The OpenAI Batch API (half price, answers within 24 h): each stage's first call goes out as one batch.
    batch_api: bool = False
    batch_poll_s: float = 30.0

    @contextmanager
    def client(self, storage: StorageRoot, namespace: str) -> Iterator[LLMClient]:
        backend = build_backend(
            self.backend,
            self.model,
            self.base_url,
            self.api_key,
            self.device,
            server=self.server,
            http_transport=self.http_transport,
        )
        store = ResponseStore(storage.path(), namespace).load()
        client = LLMClient(
            backend,
            store,
            self.concurrency,
            RetrySettings(max_attempts=self.max_attempts, timeout_s=self.timeout_s),
        )
        try:
            yield client
        except RequestFailed as exc:
            # Its retry budget is spent: the step's RetryPolicy may rerun the shard only when a lost
            # connection may have healed; anything else would fail the same way and pay again.
            raise dg.Failure(description=str(exc), allow_retries=exc.heals) from exc
        finally:
            client.close()
        # Many small segments slow the next load; one merged segment per namespace keeps it quick.
        if store.segments_written + store.loaded_segments > 16:
            store.compact()
