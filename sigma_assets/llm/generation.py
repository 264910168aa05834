"""What a model call is: requests, samples and the backend interface every model call goes through.

Plain data with no Dagster or HTTP imports, so search, critique and evaluation code can be written
and tested against any backend, including a scripted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
# "stop": a stop string (or, where a server cannot tell, the end of the text); "end": the model ended the
# text itself; "length": cut at max_tokens; "context_overflow": the prompt alone exceeds the model's
# context, so nothing was generated (a server's HTTP 400 "maximum context length", mapped per request).
FinishReason = Literal["stop", "end", "length", "context_overflow"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Every sampling setting that shapes a response; all of them are part of the response-store key."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_output: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample `params.n` continuations of: a plain `prompt` (completion) or chat `messages`."""

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a GenerationRequest needs exactly one of `prompt` or `messages`")
        if self.params.n < 1:
            raise ValueError(f"n must be at least 1, got {self.params.n}")

    @property
    def kind(self) -> Literal["completion", "chat"]:
        return "completion" if self.prompt is not None else "chat"


@dataclass(frozen=True)
class Sample:
    """One generated continuation, with the tokens it cost (prompt tokens are counted once per sample)."""

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    # Why the caller's validation rejected this answer; rejected answers are stored too (they were paid
    # for), so a rerun does not ask for them again, but they are never returned as answers.
    rejected: str | None = None
    batch: bool = False  # answered through the Batch API (billed at its half price)


class Backend(Protocol):
    """A model that answers batches of requests; `generate` returns, per request, its `n` samples in order."""

    name: str
    model: str
    endpoint: str
    # How many requests the client hands to one `generate` call: large for batched in-process engines,
    # 1 for HTTP servers (concurrency then comes from many calls in flight).
    max_batch: int

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]: ...

    async def close(self) -> None: ...


def user(content: str) -> tuple[Message, ...]:
    """A one-turn chat: the shape of every critique, revision and evaluation prompt."""
    return (Message("user", content),)
