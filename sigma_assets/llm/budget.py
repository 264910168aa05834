"""The budget guard: what a stage is about to spend, projected before it sends a single request.

A stage's first batch of requests is planned by running the stage against a `generate` that records the
requests and stops (`plan_first_call`), so the projection sees exactly the prompts the stage will send.
Requests the response store already answers cost nothing. Prompt tokens are counted with the model's
tokenizer where one is at hand (a local model folder with `tokenizer.json`, or `tiktoken` with its
encoding cached), else estimated at 4 characters per token, and the projection says which. Completion
tokens are the request's `max_tokens` (an upper bound), or the mean of the answers already stored for the
same role and shard when there are some (capped by `max_tokens`). No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigma_assets.llm.accounting import price_of
from sigma_assets.llm.generation import GenerationRequest, Sample

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English and LaTeX with GPT-style tokenizers
TokenCounter = Callable[[str], int]


class BudgetExceeded(RuntimeError):
    """The projected spend of a stage is over the cap (SIGMA_MAX_USD_PER_RUN)."""


@dataclass(frozen=True)
class PlannedCall:
    """The first `generate` call of a stage: its requests and the validator it would pass."""

    requests: list[GenerationRequest]
    validate: Any = None


class _Planned(Exception):  # not an error: the stop signal of a dry run
    def __init__(self, call: PlannedCall):
        super().__init__("planned")
        self.call = call


def plan_first_call(stage: Callable[[Callable[..., Any]], Any]) -> PlannedCall:
    """The first `generate` call `stage` makes, without sending anything.

    `stage(generate)` runs the stage with the given generate function; it stops at its first call.
    """

    def record(requests: Sequence[GenerationRequest], validate: Any = None) -> list[list[Sample]]:
        raise _Planned(PlannedCall(list(requests), validate))

    try:
        stage(record)
    except _Planned as planned:
        return planned.call
    return PlannedCall([])  # the stage has nothing to ask


@dataclass(frozen=True)
class Projection:
    model: str
    requests: int  # requests still to send (store hits excluded)
    prompt_tokens: int
    completion_tokens: int
    usd: float
    prompt_count: str  # "tokenizer" or "estimate (4 chars/token)"
    completion_basis: str  # "max_tokens" or "running mean of N stored answers"
    batch: bool = False  # priced at the Batch API's half price

    def describe(self) -> str:
        mode = ", Batch API prices" if self.batch else ""
        return (
            f"projected spend: ${self.usd:.4f} for {self.requests} request(s) to {self.model}{mode}: "
            f"{self.prompt_tokens} prompt tokens ({self.prompt_count}) + {self.completion_tokens} "
            f"completion tokens ({self.completion_basis})"
        )

    def as_metadata(self, prefix: str = "") -> dict[str, float | int | str]:
        return {
            f"{prefix}projected_requests": self.requests,
            f"{prefix}projected_prompt_tokens": self.prompt_tokens,
            f"{prefix}projected_completion_tokens": self.completion_tokens,
            f"{prefix}projected_usd": round(self.usd, 6),
            f"{prefix}projection": self.describe(),
        }


def token_counter(model: str) -> TokenCounter | None:
    """The model's own tokenizer when one is available offline, else None."""
    folder = Path(model)
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return lambda text: len(tokenizer.encode(text).ids)
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
    except Exception:  # not installed, unknown model, or its encoding not cached (no network)
        return None
    return lambda text: len(encoding.encode(text))


def project(
    model: str,
    requests: Sequence[GenerationRequest],
    stored_completion_tokens: Sequence[int] = (),
    counter: TokenCounter | None = None,
    scale_to: int | None = None,
    batch: bool = False,
) -> Projection:
    """Tokens and dollars of sending `requests` once each (every sample of each).

    `stored_completion_tokens`: completion tokens of answers already stored for this role and shard (the
    running mean). `scale_to`: the number of requests the stage will send in all, when only its first
    call can be planned (later calls depend on earlier answers); the figures are scaled to it.
    """
    prompt_tokens = completion_tokens = 0
    mean = sum(stored_completion_tokens) / len(stored_completion_tokens) if stored_completion_tokens else None
    for request in requests:
        text = request.prompt if request.prompt is not None else _chat_text(request)
        tokens = counter(text) if counter is not None else len(text) // CHARS_PER_TOKEN + 1
        # A prompt is billed per call: once for its n samples.
        prompt_tokens += tokens
        limit = request.params.max_tokens
        per_sample = limit if mean is None else min(limit, round(mean))
        completion_tokens += per_sample * request.params.n
    count = len(requests)
    if scale_to is not None and count and scale_to != count:
        prompt_tokens = round(prompt_tokens * scale_to / count)
        completion_tokens = round(completion_tokens * scale_to / count)
        count = scale_to
    prompt_price, completion_price = price_of(model)
    discount = 0.5 if batch else 1.0
    usd = discount * (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1e6
    return Projection(
        model=model,
        requests=count,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usd=usd,
        prompt_count="tokenizer" if counter is not None else f"estimate ({CHARS_PER_TOKEN} chars/token)",
        completion_basis="max_tokens"
        if mean is None
        else f"running mean of {len(stored_completion_tokens)} stored answers, capped by max_tokens",
        batch=batch,
    )


def check_cap(projection: Projection, cap_usd: float | None, spent_usd: float = 0.0) -> None:
    """Raise `BudgetExceeded` when what was spent plus the projection goes over `cap_usd` (None: no cap)."""
    if cap_usd is None:
        return
    total = spent_usd + projection.usd
    if total > cap_usd:
        raise BudgetExceeded(
            f"refusing to start: {projection.describe()}"
            + (f", plus ${spent_usd:.4f} already spent in this run" if spent_usd else "")
            + f"; that is ${total - cap_usd:.4f} over the cap SIGMA_MAX_USD_PER_RUN=${cap_usd:g}. "
            "Raise the cap, lower max_tokens, or materialise fewer problems per shard."
        )


def _chat_text(request: GenerationRequest) -> str:
    # Chat formatting adds a few tokens per message; the estimate counts the contents only.
    return "\n".join(message.content for message in request.messages or ())
