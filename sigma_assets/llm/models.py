"""Which backend serves a model role (policy or critic), built from plain settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sigma_assets.llm.generation import Backend
from sigma_assets.settings import BUNDLED_SMOLLM2, PROJECT_ROOT

DEFAULT_MODEL_CACHE = PROJECT_ROOT / ".cache" / "models"


def model_cache_dir() -> Path:
    return Path(os.environ.get("SIGMA_MODEL_CACHE", str(DEFAULT_MODEL_CACHE)))


def resolve_local_model(model: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """A local model folder for `model`: the bundled SmolLM2 is converted once into the model cache, a
    folder named by URL (`s3://...`, reached with `storage_options`) is fetched once into it."""
    if model == BUNDLED_SMOLLM2:
        from sigma_assets.llm.local_models import ensure_smollm2

        return str(ensure_smollm2(model_cache_dir()))
    from sigma_assets.llm.remote_models import fetch_model, is_remote

    if is_remote(model):
        return str(fetch_model(model, model_cache_dir() / "remote", storage_options))
    return model


def build_backend(
    backend: str,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    device: str = "auto",
    max_batch: int = 64,
    server: str = "openai",
    http_transport: str = "aiohttp",
) -> Backend:
    """`server` (openai backend): "openai" for any OpenAI-compatible server (OpenAI, vLLM), or
    "transformers" for `transformers serve`, which samples only through its generation config."""
    if backend == "transformers":
        from sigma_assets.llm.backends.hf_local import TransformersBackend

        return TransformersBackend(
            resolve_local_model(model), device=device, max_batch=max_batch, model_name=model
        )
    if backend == "openai":
        from sigma_assets.llm.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(
            model,
            base_url=base_url,
            api_key=api_key,
            transport=http_transport,
            generation_config_sampling=server == "transformers",
        )
    if backend == "vllm":
        from sigma_assets.llm.backends.vllm_engine import VLLMBackend

        return VLLMBackend(resolve_local_model(model), model_name=model)
    raise ValueError(f"unknown backend {backend!r}: expected transformers, openai or vllm")
