"""The sigma code location: assets, checks, jobs and resources assembled from the environment settings."""

from __future__ import annotations

from typing import Any

import dagster as dg

from sigma_assets.defs.evaluation import assets as evaluation
from sigma_assets.defs.evaluation.resources import EvaluationResource
from sigma_assets.defs.operations.schedules import SCHEDULES
from sigma_assets.defs.operations.sensors import SENSORS
from sigma_assets.defs.problems import assets as problems
from sigma_assets.defs.refinement import assets as refinement
from sigma_assets.defs.search import assets as search
from sigma_assets.defs.shared.io_manager import AtomicParquetIOManager
from sigma_assets.defs.shared.k8s import step_executor
from sigma_assets.defs.shared.partitions import SETTINGS
from sigma_assets.defs.shared.resources import (
    ModelResource,
    OpenAIModelResource,
    ProblemsResource,
    S3StorageResource,
    StorageResource,
    TransformersModelResource,
    VLLMEngineResource,
)
from sigma_assets.defs.training import assets as training
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets.settings import Settings


def storage_resource(settings: Settings) -> StorageResource:
    if settings.is_s3:
        return S3StorageResource(
            url=settings.storage_url,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region,
            access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        )
    return StorageResource(url=settings.storage_url)


def model_resource(
    backend: str,
    model: str,
    *,
    base_url: str | None,
    api_key_variable: str,
    server: str = "openai",
    concurrency: int = 16,
    max_usd_per_run: float | None = None,
    use_batch_api: bool = False,
    tokenizer: str | None = None,
    storage: StorageResource | None = None,
) -> ModelResource:
    """The resource of one model role, by what serves it (SIGMA_POLICY_BACKEND / SIGMA_CRITIC_BACKEND)."""
    limits: dict[str, Any] = {
        "concurrency": concurrency,
        "max_usd_per_run": max_usd_per_run,
        "tokenizer": tokenizer,
    }
    if backend == "openai":
        # EnvVar: the key is read in the step that calls, never stored in config, the UI or logs.
        return OpenAIModelResource(
            model=model,
            base_url=base_url,
            api_key=dg.EnvVar(api_key_variable),
            server=server,
            use_batch_api=use_batch_api,
            **limits,
        )
    # In process, a model named by URL is fetched from the storage root.
    if backend == "vllm":
        return VLLMEngineResource(model=model, storage=storage, **limits)
    return TransformersModelResource(model=model, storage=storage, **limits)


def build_resources(settings: Settings) -> dict[str, Any]:
    storage = storage_resource(settings)
    return {
        "storage": storage,
        # The same storage resource, nested: tables live under `<root>/assets/`.
        "io_manager": AtomicParquetIOManager(storage=storage),
        "problems": ProblemsResource(source=settings.problems, num_shards=settings.num_shards),
        "policy": model_resource(
            settings.policy_backend,
            settings.policy_model,
            base_url=settings.policy_base_url,
            api_key_variable="SIGMA_POLICY_API_KEY",
            server=settings.policy_server,
            concurrency=settings.policy_concurrency,
            max_usd_per_run=settings.max_usd_per_run,
            tokenizer=settings.policy_tokenizer,
            storage=storage,
        ),
        "critic": model_resource(
            settings.critic_backend,
            settings.critic_model,
            base_url=settings.critic_base_url,
            api_key_variable="OPENAI_API_KEY",
            concurrency=settings.critic_concurrency,
            max_usd_per_run=settings.max_usd_per_run,
            use_batch_api=settings.critic_batch_api,
            storage=storage,
        ),
        "training": TrainingResource(
            base_model=settings.base_model,
            profile=settings.training_profile,
            launcher=settings.training_launcher,
            storage=storage,
        ),
        "evaluation": EvaluationResource(eval_sets=settings.eval_sets),
        # The trainer runs as its own process (python, accelerate or torchrun) and reports back.
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


ASSET_MODULES = [problems, search, refinement, training, evaluation]
ASSETS = dg.load_assets_from_modules(ASSET_MODULES)
CHECKS = dg.load_asset_checks_from_modules(ASSET_MODULES)

problems_job = dg.define_asset_job(
    "problems_job",
    selection=dg.AssetSelection.assets(problems.raw_problems),
    description="The problems of one shard, loaded and validated (one run per shard).",
)
generation_job = dg.define_asset_job(
    "generation_job",
    selection=dg.AssetSelection.assets(*ASSETS)
    - dg.AssetSelection.assets(problems.raw_problems)
    - dg.AssetSelection.groups("training", "evaluation"),
    description="Search, siblings, critiques and refined paths for one (shard, temperature) per run.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training"),
    description="The SFT set and the fine-tuned model of one variant (sigma or mcts) per run.",
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="The base model and both fine-tuned variants scored on every benchmark.",
)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[problems_job, generation_job, training_job, evaluation_job],
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(SETTINGS),
    executor=step_executor(SETTINGS),
)
