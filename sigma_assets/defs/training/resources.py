"""The training resource: which base model is fine-tuned, with which profile, started how."""

from __future__ import annotations

import shlex

import dagster as dg

from sigma_assets.defs.shared.resources import StorageResource
from sigma_assets.llm.models import resolve_local_model
from sigma_assets.llm.remote_models import storage_options_for
from sigma_assets.settings import BUNDLED_SMOLLM2
from sigma_assets.training.profiles import PROFILES


class TrainingResource(dg.ConfigurableResource):
    """SIGMA_BASE_MODEL (a local folder, the bundled SmolLM2, or a folder URL such as
    `s3://bucket/models/deepseek-math-7b-base`) and SIGMA_TRAINING_PROFILE; `launcher` starts the
    trainer, e.g. `accelerate launch` or `torchrun --nproc-per-node 8` on a GPU machine (empty: the
    profile's launcher, else this Python)."""

    base_model: str = BUNDLED_SMOLLM2
    profile: str = "cpu"
    launcher: str = ""
    # Where a base model named by URL is fetched from (the storage root's endpoint and keys).
    storage: StorageResource | None = None

    def base_model_dir(self) -> str:
        """The base model as a local folder; a URL is fetched once per machine into the model cache."""
        root = self.storage.location() if self.storage else None
        return resolve_local_model(self.base_model, storage_options_for(self.base_model, root))

    def checked_profile(self, name: str | None = None) -> str:
        name = name or self.profile
        if name not in PROFILES:
            raise dg.Failure(
                f"training profile {name!r} (SIGMA_TRAINING_PROFILE or run config) is not one of "
                f"{', '.join(PROFILES)}"
            )
        return name

    def launcher_args(self) -> list[str]:
        return shlex.split(self.launcher)
