"""The budget guard in the Dagster shell: project a stage's spend, show it, refuse to start over the cap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from sigma_assets.budget import BudgetExceeded, check_cap, plan_first_call, project, token_counter
from sigma_assets.llm_client import LLMClient


def guard_spend(
    context: dg.AssetExecutionContext,
    client: LLMClient,
    stage: Callable[[Callable[..., Any]], Any],
    cap_usd: float | None,
    prefix: str,
    scale_to: int | None = None,
) -> dict[str, Any]:
    """Project what `stage(generate)` will spend before it sends anything; log it and return it as
    metadata, or fail the step (not retried: it would be refused again) when it is over `cap_usd`.

    `scale_to`: how many requests the stage sends in all when only its first call can be planned.
    """
    planned = plan_first_call(stage)
    missing = client.unanswered(planned)
    if scale_to is not None and planned:
        scale_to = round(scale_to * len(missing) / len(planned))
    projection = project(
        client.backend.model,
        missing,
        client.stored_completion_tokens(),
        token_counter(client.backend.model),
        scale_to=scale_to,
    )
    context.log.info(f"{prefix.rstrip('_')}: {projection.describe()}")
    try:
        check_cap(projection, cap_usd)
    except BudgetExceeded as exc:
        raise dg.Failure(
            description=str(exc), metadata=projection.as_metadata(prefix), allow_retries=False
        ) from exc
    return projection.as_metadata(prefix)
