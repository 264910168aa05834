"""The sigma code location: assets, checks, jobs and resources assembled from the environment settings."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from sigma_assets.data.storage import StorageRoot
from sigma_assets.defs.evaluation import assets as evaluation
from sigma_assets.defs.evaluation.assets import EvaluationResource
from sigma_assets.defs.operations.schedules import SCHEDULES
from sigma_assets.defs.operations.sensors import SENSORS
from sigma_assets.defs.problems import assets as problems
from sigma_assets.defs.refinement import assets as refinement
from sigma_assets.defs.search import assets as search
from sigma_assets.defs.shared.io_manager import AtomicParquetIOManager
from sigma_assets.defs.shared.partitions import SETTINGS
from sigma_assets.defs.shared.resources import LLMResource, ProblemsResource, StorageResource
from sigma_assets.defs.training import assets as training
from sigma_assets.defs.training.resources import TrainingResource
from sigma_assets.settings import Settings


def _secret(name: str) -> Any:
    # EnvVar keeps the value out of run config, the UI and logs; unset secrets fall back to the
    # standard credential chain of the client library.
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(settings: Settings) -> dict[str, Any]:
    if settings.is_s3 and (settings.aws_endpoint_url or "").startswith("http://"):
        # polars' object_store refuses plain-http endpoints unless told; every step process loads
        # these definitions, so this holds wherever the IO manager reads.
        os.environ.setdefault("AWS_ALLOW_HTTP", "true")
    # The IO manager gets the same fsspec options as the storage root, with secrets as env references
    # that dagster-polars resolves at run time (never values in config).
    storage_options = StorageRoot(
        settings.storage_url, settings.aws_endpoint_url, settings.aws_region
    ).storage_options
    if settings.is_s3:
        for option, variable in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY")):
            if os.environ.get(variable):
                storage_options[option] = {"env": variable}
    return {
        "storage": StorageResource(
            url=settings.storage_url,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region,
            access_key_id=_secret("AWS_ACCESS_KEY_ID"),
            secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        ),
        "io_manager": AtomicParquetIOManager(
            base_dir=settings.storage_url.rstrip("/") + "/assets", storage_options=storage_options
        ),
        "problems": ProblemsResource(source=settings.problems, num_shards=settings.num_shards),
        "policy": LLMResource(
            backend=settings.policy_backend,
            model=settings.policy_model,
            base_url=settings.policy_base_url,
            server=settings.policy_server,
            api_key=_secret("SIGMA_POLICY_API_KEY"),
            max_usd_per_run=settings.max_usd_per_run,
        ),
        "critic": LLMResource(
            backend=settings.critic_backend,
            model=settings.critic_model,
            base_url=settings.critic_base_url,
            api_key=_secret("OPENAI_API_KEY"),
            concurrency=settings.critic_concurrency,
            max_usd_per_run=settings.max_usd_per_run,
            batch_api=settings.critic_batch_api,
        ),
        "training": TrainingResource(base_model=settings.base_model, profile=settings.training_profile),
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
)
