"""The public plugin API: everything a plugin may import from Lumina, re-exported by ``lumina_core``.

Built-in plugins, contrib packages and third-party plugins import only these names; the rest of
``lumina_core`` is internal and may change between releases.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import pluggy
from pydantic import BaseModel, ConfigDict

PROJECT_NAME = "lumina"
PLUGIN_API_VERSION = 1
"""Bumped when a hookspec or component protocol changes incompatibly."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

ComponentKind = Literal["extractor", "queue_backend", "pricing_provider", "detector"]
Stability = Literal["stable", "beta", "alpha"]


class LuminaError(Exception):
    """Base class of the errors Lumina raises on purpose."""


class ConfigError(LuminaError):
    """Configuration is invalid; ``errors`` holds one ``(key path, message)`` pair per problem."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors))


class QueueFull(LuminaError):
    """The queue is at capacity; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str = "queue is full", retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class QueueUnavailable(LuminaError):
    """The queue (or the storage behind it) cannot take data now; the client should retry."""

    def __init__(self, message: str = "queue unavailable", retry_after: float = 2.0):
        super().__init__(message)
        self.retry_after = retry_after


class BatchRejected(LuminaError):
    """The batch can never be stored (data the pipeline or the database refuses); do not retry it."""


class ComponentConfig(BaseModel):
    """Base of every component's typed config: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=ComponentConfig)


@dataclass(frozen=True)
class ComponentContext:
    """What a component factory is given besides its own config.

    ``name`` is the instance name from ``type/name`` in ``lumina.toml``; ``data_dir`` is where a
    component may keep files.
    """

    name: str
    data_dir: str


@dataclass(frozen=True)
class ComponentFactory(Generic[ConfigT]):
    """How a plugin registers one component type (an extractor, a queue backend, ...).

    ``type`` is the name operators use in ``lumina.toml``; ``config_model`` validates the instance's
    config table; ``create(ctx, config)`` builds the component once at start-up.
    """

    type: str
    create: Callable[[ComponentContext, ConfigT], Any]
    config_model: builtins.type[ConfigT]
    description: str
    stability: Stability = "stable"


# ---------------------------------------------------------------------------------------------
# Spans as the pipeline sees them
# ---------------------------------------------------------------------------------------------

AttributeValue = str | bool | int | float | list[Any] | dict[str, Any] | None


@dataclass(slots=True)
class SpanRecord:
    """One OTLP span, decoded and validated at intake. Ids are lowercase hex; times are Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str
    status_message: str | None
    service_name: str
    scope_name: str | None
    attributes: dict[str, AttributeValue]
    resource_attributes: dict[str, AttributeValue]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]


@dataclass(slots=True)
class SpanBatch:
    """The unit that travels through the queue: spans of one project from one export request."""

    project_id: str
    spans: list[SpanRecord]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for queue backends that carry bytes."""
        return {"project_id": self.project_id, "spans": [dataclasses.asdict(s) for s in self.spans]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpanBatch:
        return cls(data["project_id"], [SpanRecord(**s) for s in data["spans"]])


@dataclass(slots=True)
class LLMFields:
    """The canonical LLM record that extractors fill. ``None`` means "not reported", never zero.

    Token counts are *as reported* by the instrumentation: ``input_tokens`` includes cache reads and
    writes, ``output_tokens`` includes reasoning (see DESIGN §6). ``input_includes_cache`` is False only
    for conventions that report Anthropic-native usage. The pipeline turns these into disjoint buckets.
    """

    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    input_includes_cache: bool = True
    cost_usd: float | None = None
    input_messages: list[dict[str, Any]] | None = None
    output_messages: list[dict[str, Any]] | None = None
    system_prompt: str | None = None
    invocation_parameters: dict[str, Any] | None = None
    finish_reasons: list[str] | None = None
    response_id: str | None = None
    error_type: str | None = None

    def merge_missing(self, other: LLMFields) -> None:
        """Fill every field still unknown here from ``other``: the receiver has precedence."""
        if self.input_tokens is None and other.input_tokens is not None:
            self.input_includes_cache = other.input_includes_cache
        for f in _LLM_FIELD_NAMES:
            if getattr(self, f) is None:
                value = getattr(other, f)
                if value is not None:
                    setattr(self, f, value)

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in _LLM_FIELD_NAMES)


_LLM_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(LLMFields) if f.name != "input_includes_cache")


@runtime_checkable
class Extractor(Protocol):
    """Recognises one instrumentation convention and reads its attributes into :class:`LLMFields`.

    ``extract`` is called for every span, so it must be cheap and return ``None`` quickly for spans
    that do not use its convention.
    """

    def extract(self, span: SpanRecord) -> LLMFields | None: ...


TOKEN_BUCKETS = ("input", "cache_read", "cache_write", "output", "reasoning")
"""The disjoint token buckets, in the order every price and cost uses them."""


@dataclass(frozen=True)
class PriceRule:
    """Prices of one model in USD per 1,000,000 tokens of each bucket, and where they came from.

    ``None`` means the provider publishes no separate price for that bucket: cache reads and writes
    then cost the input price, reasoning the output price. ``tiers`` are (threshold, prices) pairs:
    when a call's prompt (input + cache read + cache write) exceeds a threshold, that tier's prices
    apply to the whole call. ``rule`` names the rule for people ("genai-prices:openai/gpt-4o").
    """

    source: str
    rule: str
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    tiers: tuple[tuple[int, PriceRule], ...] = ()

    def for_prompt(self, prompt_tokens: int) -> PriceRule:
        """The prices that apply to a call with this many prompt tokens (cliff tiers)."""
        chosen = self
        for threshold, tier in self.tiers:
            if prompt_tokens > threshold:
                chosen = tier
        return chosen

    def per_mtok(self, bucket: str) -> float:
        price = getattr(self, bucket)
        if price is None:
            price = self.output if bucket == "reasoning" else self.input
        return float(price)


@runtime_checkable
class PricingProvider(Protocol):
    """Knows the prices of some models.

    ``lookup`` is called for every LLM span, so it answers from memory; ``provider`` is the
    normalised provider name or ``None``, ``model`` the model name as reported, ``at`` the call's
    start time. Return ``None`` for an unknown model, never a guess.
    """

    def lookup(self, provider: str | None, model: str, at: datetime) -> PriceRule | None: ...


class Delivery(Protocol):
    """One batch handed to a worker; it must be acked after commit or nacked on failure."""

    batch: SpanBatch

    async def ack(self) -> None: ...

    async def nack(self, error: Exception, *, retryable: bool = True) -> None: ...


@runtime_checkable
class QueueBackend(Protocol):
    """Carries span batches from intake to workers.

    ``put`` resolves once the batch is durable (for the in-process queue: committed by a worker),
    raising :class:`QueueFull` or :class:`QueueUnavailable` when it cannot take it. ``consume`` yields
    groups of deliveries, each to be acked after commit. ``depth`` is the number of spans waiting.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def put(self, batch: SpanBatch) -> None: ...

    def consume(self, max_spans: int) -> AsyncIterator[list[Delivery]]: ...

    def depth(self) -> int: ...


@runtime_checkable
class Detector(Protocol):
    """Scores how close an LLM response is to the baseline responses of the same prompt fingerprint.

    ``mode`` is ``"inline"`` (cheap: runs in the worker right after a batch is stored) or ``"deferred"``
    (runs in a background task over stored spans, so intake and the worker never wait for it).
    ``score`` gets ``(output, baseline_outputs)`` pairs and returns one score per pair, from 0 (nothing
    alike) to 1 (the same); Lumina keeps the score and calls 1 a ``match``, anything lower ``changed``.
    A span's quality is the best score of its service's detectors; under the service's threshold the
    span becomes ``degraded``.
    """

    mode: str

    async def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]: ...


@dataclass(frozen=True)
class NavItem:
    """A link a plugin adds to the dashboard's navigation bar (after the built-in pages)."""

    label: str
    href: str
    """A path on the Lumina server (e.g. one a plugin route serves) or an absolute URL."""


@dataclass(frozen=True)
class SpanPanel:
    """A panel a plugin adds to the span view of the trace page.

    ``rows(span)`` gets the span as ``GET /api/v1/spans/{trace_id}/{span_id}`` returns it and gives
    ``(label, value)`` rows to show, or ``None`` to leave the panel out for this span. The dashboard
    escapes both, so a panel cannot inject markup. It runs when a span is viewed, never on ingest; an
    exception shows as an error in the panel and does not break the page.
    """

    title: str
    rows: Callable[[dict[str, Any]], list[tuple[str, str]] | None]


__all__ = [
    "PLUGIN_API_VERSION",
    "TOKEN_BUCKETS",
    "AttributeValue",
    "BatchRejected",
    "ComponentConfig",
    "ComponentContext",
    "ComponentFactory",
    "ComponentKind",
    "ConfigError",
    "Delivery",
    "Detector",
    "Extractor",
    "LLMFields",
    "LuminaError",
    "NavItem",
    "PriceRule",
    "PricingProvider",
    "QueueBackend",
    "QueueFull",
    "QueueUnavailable",
    "SpanBatch",
    "SpanPanel",
    "SpanRecord",
    "hookimpl",
    "hookspec",
]
