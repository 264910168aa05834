"""Before a stage sends calls: project its spend, show it, refuse to start over the cap, and in Batch API
mode send its first call as batches through the client (the stage then reads the answers from the store)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from sigma_assets.defs.shared.resources import ModelResource
from sigma_assets.llm.backends.openai_batch import BatchAPIBackend
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.budget import BudgetExceeded, check_cap, plan_first_call, project, token_counter
from sigma_assets.llm.client import LLMClient


def guard_spend(
    context: dg.AssetExecutionContext,
    client: LLMClient,
    stage: Callable[[Callable[..., Any]], Any],
    resource: ModelResource,
    prefix: str,
    scale_to: int | None = None,
) -> dict[str, Any]:
    """Project what `stage(generate)` will spend before it sends anything; log it and return it as
    metadata, or fail the step (not retried: it would be refused again) when it is over the resource's
    `max_usd_per_run`. With `batch_api`, the stage's first call then goes out as one batch.

    `scale_to`: how many requests the stage sends in all when only its first call can be planned.
    """
    planned = plan_first_call(stage)
    missing = client.unanswered(planned.requests)
    if scale_to is not None and planned.requests:
        scale_to = round(scale_to * len(missing) / len(planned.requests))
    projection = project(
        client.backend.model,
        missing,
        client.stored_completion_tokens(),
        token_counter(client.backend.model),
        scale_to=scale_to,
        batch=resource.batch_api,
    )
    context.log.info(f"{prefix.rstrip('_')}: {projection.describe()}")
    try:
        check_cap(projection, resource.max_usd_per_run)
    except BudgetExceeded as exc:
        raise dg.Failure(
            description=str(exc), metadata=projection.as_metadata(prefix), allow_retries=False
        ) from exc
    metadata: dict[str, Any] = projection.as_metadata(prefix)
    if resource.batch_api and missing:
        assert client.store is not None and isinstance(client.backend, OpenAIBackend)
        batches = BatchAPIBackend(
            client.backend, client.store.directory / "batches", poll_s=resource.batch_poll_s
        )
        # Validated, stored and accounted by the client like online answers; what no batch answers in
        # `max_sends` rounds is left to the stage's online calls.
        report = client.prefill(missing, planned.validate, via=batches, max_sends=resource.batch_rounds)
        context.log.info(f"{prefix.rstrip('_')}: Batch API {report}, {batches.counts}")
        counts = batches.counts
        metadata |= {
            f"{prefix}batch_asked": report.asked,
            f"{prefix}batch_answered": report.answered,
            f"{prefix}batch_still_missing": report.still_missing,
            f"{prefix}batches_created": counts.batches_created,
            f"{prefix}batches_resumed": counts.batches_resumed,
            f"{prefix}batch_lines_sent": counts.lines_sent,
            f"{prefix}batch_lines_failed": counts.lines_failed,
        }
    return metadata
