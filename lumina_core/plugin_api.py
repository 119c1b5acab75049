"""The public plugin API: everything a plugin may import from Lumina, re-exported by ``lumina_core``.

Built-in plugins, contrib packages and third-party plugins import only these names; the rest of
``lumina_core`` is internal and may change between releases.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import pluggy
from pydantic import BaseModel, ConfigDict, Field

PROJECT_NAME = "lumina"
PLUGIN_API_VERSION = 2
"""Bumped when a hookspec or component protocol changes incompatibly."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

ComponentKind = Literal[
    "extractor",
    "queue_backend",
    "pricing_provider",
    "detector",
    "alert_rule",
    "alert_sink",
    "archiver",
    "sampler",
    "replay_executor",
]
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


class AlertRejected(LuminaError):
    """An alert sink's receiver refused the alert for good (a malformed request, a deleted channel): Lumina
    stops retrying it. Any other exception from ``AlertSink.send`` is retried."""


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
        """The batch :meth:`to_dict` gave."""
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


@dataclass(frozen=True)
class QueueStatus:
    """What readiness and ``/metrics`` show of a queue: whether it can take and deliver batches now (and
    why not), and what waits in it — spans where the backend counts them, else batches (messages)."""

    ok: bool
    waiting_spans: int | None = None
    waiting_batches: int | None = None
    error: str | None = None


@runtime_checkable
class QueueBackend(Protocol):
    """Carries span batches from intake to workers.

    ``start`` connects (every process role starts its queue); ``put`` resolves once the batch is durable
    (for the in-process queue: committed by a worker; for a broker: stored by it), raising
    :class:`QueueFull` or :class:`QueueUnavailable` when it cannot take it. ``consume`` (worker processes
    only) yields groups of deliveries, each to be acked after commit. ``status`` answers from memory.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def put(self, batch: SpanBatch) -> None: ...

    def consume(self, max_spans: int) -> AsyncIterator[list[Delivery]]: ...

    def status(self) -> QueueStatus: ...


@runtime_checkable
class Sampler(Protocol):
    """Decides which traces Lumina keeps; ``keep`` gets a trace id and span rows as stored (extracted and
    priced: ``status``, ``cost_usd``, ``model``, ``service_name``, ``name``, ``attributes`` …).

    A ``"head"`` sampler runs in the worker on every batch before it is stored, and must decide on the
    trace id alone, so that every batch of a trace, in every process, gets the same answer. A ``"tail"``
    sampler judges whole traces from their stored spans once none arrived for
    ``sampling.decision_wait_seconds``. Either way, what is dropped is counted (spans, traces, tokens
    and cost per service, model and minute), so analytics totals stay those of all the traffic.
    """

    stage: Literal["head", "tail"]

    def keep(self, trace_id: str, spans: Sequence[dict[str, Any]]) -> bool: ...


def trace_ratio(trace_id: str) -> float:
    """Where a trace id falls in [0, 1): its lower 64 bits, as OpenTelemetry's ratio sampler reads them.
    A trace is kept at ratio ``r`` when this is below ``r``; the same in every process."""
    return int(trace_id[-16:], 16) / 2**64


@dataclass(frozen=True)
class ReplayCall:
    """One captured LLM call to run again, with a replay run's overrides applied. ``messages`` are
    ``{"role", "content"}`` dicts (roles ``user``, ``assistant``, ``tool``; the system prompt is apart);
    ``extra`` holds further request parameters, passed to the provider as they are."""

    provider: str
    model: str
    messages: list[dict[str, Any]]
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayAnswer:
    """What the provider answered. Token counts are as the provider reports them, with
    ``input_includes_cache`` saying whether ``input_tokens`` counts cache reads and writes (OpenAI: yes;
    Anthropic: no), as in :class:`LLMFields`; Lumina prices them through its pricing chain."""

    output_text: str
    model: str | None = None
    input_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    input_includes_cache: bool = True
    finish_reason: str | None = None
    response_id: str | None = None


class ReplayRetryable(LuminaError):
    """The provider could not answer now (rate limited, overloaded, a 5xx, a timeout, a lost connection);
    the replay engine retries after ``retry_after`` seconds when the provider said, else with backoff."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@runtime_checkable
class ReplayExecutor(Protocol):
    """Sends replayed LLM calls to a provider's API (through its official SDK) and returns its answer.

    ``providers`` names the providers whose calls it runs (``"openai"``, ``"anthropic"``, or a name of
    your own for an OpenAI-compatible server). ``execute`` raises :class:`ReplayRetryable` when trying
    again may help, any other exception when it cannot (a bad request, an unknown model). It must not
    retry by itself: the engine paces requests and counts the attempts. API keys come from the executor's
    config (``${env:…}``), never from spans, and must not appear in what it returns or raises.
    """

    providers: tuple[str, ...]

    async def execute(self, call: ReplayCall, timeout: float) -> ReplayAnswer: ...


@runtime_checkable
class Archiver(Protocol):
    """Keeps the spans the retention sweep is about to delete, so that ``lumina import`` can load them again.

    ``archive`` gets one project's spans of one UTC day — every column as stored, JSON columns as Python
    values — and returns where it put them, once they are durably written. If it raises, the sweep deletes
    nothing of those spans. It may be called several times for one day (the sweep deletes in batches):
    add to what is there. ``read`` gives back, in chunks, the rows of an archive it wrote, or ``None``
    when ``path`` is not one of its files.
    """

    async def archive(self, project_id: str, day: date, spans: list[dict[str, Any]]) -> str: ...

    def read(self, path: Path) -> Iterator[list[dict[str, Any]]] | None: ...


@dataclass(frozen=True)
class DeadLetter:
    """A batch a queue set aside after it failed for good (refused, undecodable, or delivered too often)."""

    id: str
    reason: str
    failed_at: datetime
    deliveries: int
    size_bytes: int
    project_id: str | None = None
    spans: int | None = None
    """``None`` when the message could not be decoded at all."""


@runtime_checkable
class DeadLetterStore(Protocol):
    """Implemented by queue backends that keep dead letters (the in-process queue answers the client with
    the error instead). The API and dashboard list them, put them back on the queue, or discard them."""

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    async def redrive(self, ids: Sequence[str]) -> int:
        """Put these dead letters back on the queue (then drop them here); returns how many went back."""
        ...

    async def discard(self, ids: Sequence[str]) -> int: ...


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


# ---------------------------------------------------------------------------------------------
# Alerting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """What the LLM calls of one scope (a service, a model, a user …) did in one time window.

    ``latency_p95_ms`` and ``max_call_cost_usd`` are filled only for rule kinds that measure
    ``"latency"`` or ``"max_call_cost"``, the ``quality_*`` counts only for kinds that measure
    ``"quality"`` (they need the spans or the quality results, not just the hourly sums).
    ``quality_checked`` counts responses compared with a baseline (not the baselines themselves).
    """

    start_unix_nano: int
    end_unix_nano: int
    calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    latency_p95_ms: float | None = None
    max_call_cost_usd: float | None = None
    quality_checked: int = 0
    quality_changed: int = 0
    quality_score_sum: float = 0.0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    @property
    def cost_per_call(self) -> float | None:
        return self.cost_usd / self.calls if self.calls else None

    @property
    def quality_score(self) -> float | None:
        return self.quality_score_sum / self.quality_checked if self.quality_checked else None

    @property
    def changed_rate(self) -> float | None:
        return self.quality_changed / self.quality_checked if self.quality_checked else None


@dataclass(frozen=True)
class AlertVerdict:
    """A rule's judgement of one scope in one window.

    ``firing`` is ``None`` when there is too little data to judge (below ``min_samples``, or no
    baseline yet): the alert state does not change then, except as ``no_data`` says. ``value`` is the
    measured metric, ``threshold`` the value it was compared with, ``baseline`` what it was compared
    against (e.g. the rolling mean), and ``summary`` one line for people.
    """

    firing: bool | None
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    summary: str = ""


class AlertThresholds(ComponentConfig):
    """Settings every alert rule kind has; a kind's config model extends this one.

    They cascade like every per-service setting: ``[alerts.defaults]`` → ``[alerts.services."svc"]`` →
    ``[alerts.services."svc/model"]`` → the rule's ``params`` → the rule's own ``services`` overrides.
    """

    min_samples: int = Field(10, ge=0, description="calls a window needs before the rule judges it")
    cooldown_seconds: float = Field(900, ge=0, description="after an alert resolves, no new one for this long")
    renotify_seconds: float = Field(3600, ge=0, description="repeat a firing alert this often (0: never)")
    severity: Literal["info", "warning", "critical"] = "warning"
    no_data: Literal["keep", "resolve"] = Field(
        "keep", description="what a firing alert does when its scope has too little data to judge"
    )


@runtime_checkable
class AlertRuleKind(Protocol):
    """Judges one scope's current window, given the same scope's baseline windows (oldest first).

    ``measures`` names what the judgement needs beyond calls, errors, cost and tokens (a subset of
    ``{"latency", "max_call_cost", "quality"}``), so the engine fetches no more than that. ``metric``
    is the value a chart of the rule shows for one window. ``judge`` is a pure function: no I/O.
    """

    measures: frozenset[str]

    def metric(self, stats: WindowStats) -> float | None: ...

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict: ...


@runtime_checkable
class ImmediateAlertRuleKind(AlertRuleKind, Protocol):
    """A rule kind that is also checked on every stored LLM call, not only on the schedule.

    ``exceeds(cost_usd, latency_ms)`` says whether one call alone makes the rule fire; it is called
    for every LLM call the worker stores, so it must be cheap.
    """

    def exceeds(self, cost_usd: float | None, latency_ms: float) -> bool: ...


@dataclass(frozen=True)
class Alert:
    """One notification an alert sink is asked to send.

    ``event`` is ``firing`` (new), ``repeat`` (still firing, re-notified) or ``resolved``.
    ``dedup_key`` is stable for one rule and scope across events, so receivers (PagerDuty) can
    group them; ``event_id`` is unique per notification, so receivers can drop a retried duplicate.
    ``scope`` maps dimensions (``service``, ``model``, ``span_name``, ``user_id``, ``attribute:…``)
    to values. ``url`` opens the alert in the dashboard, when ``alerts.dashboard_url`` is set.
    """

    alert_id: int
    event_id: int
    event: Literal["firing", "repeat", "resolved"]
    dedup_key: str
    rule: str
    kind: str
    project_id: str
    scope: dict[str, str]
    severity: str
    summary: str
    value: float | None
    threshold: float | None
    baseline: float | None
    started_at: datetime
    at: datetime
    url: str | None = None

    def title(self) -> str:
        """A short headline: ``[FIRING] cost-spike (service=checkout)``."""
        where = ", ".join(f"{k}={v}" for k, v in self.scope.items()) or "all"
        return f"[{self.event.upper()}] {self.rule} ({where})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that webhooks receive and the outbox stores (times in RFC 3339)."""
        data = dataclasses.asdict(self)
        data["started_at"], data["at"] = self.started_at.isoformat(), self.at.isoformat()
        data["title"] = self.title()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """The alert :meth:`to_dict` gave (extra keys, such as ``title``, are ignored)."""
        values = {k: v for k, v in data.items() if k in _ALERT_FIELDS}
        values["started_at"] = datetime.fromisoformat(data["started_at"])
        values["at"] = datetime.fromisoformat(data["at"])
        return cls(**values)


_ALERT_FIELDS = frozenset(f.name for f in dataclasses.fields(Alert))


@runtime_checkable
class AlertSink(Protocol):
    """Delivers alerts somewhere (a log, a webhook, Slack, e-mail, PagerDuty …).

    ``send`` raises on any failure (the receiver refused, timed out, was unreachable); Lumina keeps
    the alert in its outbox and retries with backoff, so a sink does not retry by itself. It may be
    called again with the same ``event_id`` after a failure. Raise :class:`AlertRejected` when retrying
    cannot help (the receiver refused the request as invalid).
    """

    async def send(self, alert: Alert) -> None: ...


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
    "Alert",
    "AlertRejected",
    "AlertRuleKind",
    "AlertSink",
    "AlertThresholds",
    "AlertVerdict",
    "Archiver",
    "AttributeValue",
    "BatchRejected",
    "ComponentConfig",
    "ComponentContext",
    "ComponentFactory",
    "ComponentKind",
    "ConfigError",
    "DeadLetter",
    "DeadLetterStore",
    "Delivery",
    "Detector",
    "Extractor",
    "ImmediateAlertRuleKind",
    "LLMFields",
    "LuminaError",
    "NavItem",
    "PriceRule",
    "PricingProvider",
    "QueueBackend",
    "QueueFull",
    "QueueStatus",
    "QueueUnavailable",
    "ReplayAnswer",
    "ReplayCall",
    "ReplayExecutor",
    "ReplayRetryable",
    "Sampler",
    "SpanBatch",
    "SpanPanel",
    "SpanRecord",
    "WindowStats",
    "hookimpl",
    "hookspec",
    "trace_ratio",
]
