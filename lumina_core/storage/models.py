"""Table definitions: one wide ``spans`` table of normalised columns, and ``traces`` as its rollup.

Times are Unix nanoseconds (BIGINT) so that both SQLite and PostgreSQL sort and bucket them cheaply.
Token columns are *disjoint* buckets (DESIGN §6): ``input_tokens`` excludes cache reads and writes,
``output_tokens`` excludes reasoning. NULL means the instrumentation did not report the value.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONColumn = sa.JSON().with_variant(JSONB(), "postgresql")

TOKEN_COLUMNS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(JSONColumn, nullable=nullable))


class Span(SQLModel, table=True):
    __tablename__ = "spans"
    __table_args__ = (
        sa.Index("ix_spans_project_start", "project_id", "start_time_unix_nano"),
        sa.Index("ix_spans_project_service_start", "project_id", "service_name", "start_time_unix_nano"),
        sa.Index("ix_spans_project_model_start", "project_id", "model", "start_time_unix_nano"),
        sa.Index("ix_spans_project_response_id", "project_id", "response_id"),
        *(
            sa.Index(
                f"ix_spans_project_{column}",
                "project_id",
                column,
                "start_time_unix_nano",
                sqlite_where=sa.text(f"{column} IS NOT NULL"),
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
            )
            for column in ("user_id", "session_id")
        ),
    )

    project_id: str = Field(primary_key=True)
    trace_id: str = Field(primary_key=True)
    span_id: str = Field(primary_key=True)
    parent_span_id: str | None = None
    name: str
    kind: str
    service_name: str
    scope_name: str | None = None
    start_time_unix_nano: int = Field(sa_type=sa.BigInteger)
    end_time_unix_nano: int = Field(sa_type=sa.BigInteger)
    latency_ms: float
    status_code: str
    status_message: str | None = None
    status: str = Field(description="ok, error or degraded")
    error_type: str | None = None
    user_id: str | None = Field(default=None, description="the end user, from user.id, enduser.id …")
    session_id: str | None = Field(default=None, description="the conversation, from session.id …")
    is_llm: bool = False
    operation: str | None = None
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    model: str | None = None
    input_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cache_read_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cache_write_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    output_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    reasoning_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cost_usd: float | None = None
    cost_source: str | None = Field(default=None, description="span, custom, or the pricing provider's name")
    pricing_status: str | None = Field(default=None, description="priced, unpriced or no_usage; NULL if not LLM")
    pricing_rule: str | None = None
    response_id: str | None = None
    counted: bool = Field(
        default=True, description="false for a second report of a call (same response id): not summed again"
    )
    finish_reasons: list[str] | None = _json()
    input_messages: list[dict[str, Any]] | None = _json()
    output_messages: list[dict[str, Any]] | None = _json()
    system_prompt: str | None = Field(default=None, sa_type=sa.Text)
    invocation_parameters: dict[str, Any] | None = _json()
    attributes: dict[str, Any] = _json(nullable=False)
    resource_attributes: dict[str, Any] = _json(nullable=False)
    events: list[dict[str, Any]] = _json(nullable=False)
    links: list[dict[str, Any]] = _json(nullable=False)


class TokenCounts(SQLModel):
    """The token buckets (DESIGN §6), as columns of the tables that keep or sum them."""

    input_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cache_read_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cache_write_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    output_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    reasoning_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)


class Trace(TokenCounts, table=True):
    """Rollup of a trace's spans, recomputed from ``spans`` whenever a batch touches the trace."""

    __tablename__ = "traces"
    __table_args__ = (
        sa.Index("ix_traces_project_start", "project_id", "start_time_unix_nano"),
        sa.Index("ix_traces_project_service_start", "project_id", "service_name", "start_time_unix_nano"),
        sa.Index("ix_traces_project_status_start", "project_id", "status", "start_time_unix_nano"),
    )

    project_id: str = Field(primary_key=True)
    trace_id: str = Field(primary_key=True)
    root_span_id: str | None = None
    name: str
    service_name: str
    start_time_unix_nano: int = Field(sa_type=sa.BigInteger)
    end_time_unix_nano: int = Field(sa_type=sa.BigInteger)
    duration_ms: float
    span_count: int
    llm_span_count: int
    error_count: int
    status: str
    cost_usd: float | None = None


spans_table: sa.Table = Span.__table__  # type: ignore[attr-defined]
traces_table: sa.Table = Trace.__table__  # type: ignore[attr-defined]
TRACE_COST_SORT = sa.func.coalesce(traces_table.c.cost_usd, sa.literal_column("-1.0"))
"""Traces by cost, unpriced (NULL) below every priced one; indexed as this very expression."""
sa.Index("ix_traces_project_cost", traces_table.c.project_id, TRACE_COST_SORT)
sa.Index("ix_traces_project_duration", traces_table.c.project_id, traces_table.c.duration_ms)

HOUR_NS = 3600 * 10**9
MINUTE_NS = 60 * 10**9
DAY_NS = 24 * HOUR_NS


class SpanSums(TokenCounts):
    """What ``span_hours`` and ``sampled_out`` sum spans over (``KEY_COLUMNS``) and sum (``MEASURES``)."""

    service_name: str
    name: str
    model: str | None = None
    provider: str | None = None
    status: str
    is_llm: bool
    counted: bool
    pricing_status: str | None = None
    requests: int = Field(sa_type=sa.BigInteger)
    errors: int = Field(sa_type=sa.BigInteger)
    cost_usd: float | None = None
    first_seen_unix_nano: int = Field(sa_type=sa.BigInteger)
    last_seen_unix_nano: int = Field(sa_type=sa.BigInteger)


class SpanHour(SpanSums, table=True):
    """Spans summed per project, UTC hour and kind of span (service, name, model, provider, status…).

    Analytics read these instead of millions of spans. An hour is only summed once it is settled; until
    then it is listed in ``stale_hours`` and read from ``spans`` (see ``lumina_core.storage.hours``).
    """

    __tablename__ = "span_hours"
    __table_args__ = (sa.Index("ix_span_hours_project_slot", "project_id", "slot_unix_nano"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str
    slot_unix_nano: int = Field(sa_type=sa.BigInteger, description="start of the UTC hour")


class StaleHour(SQLModel, table=True):
    """An hour whose spans changed after it was last summed; ``version`` goes up with every change."""

    __tablename__ = "stale_hours"

    project_id: str = Field(primary_key=True)
    slot_unix_nano: int = Field(primary_key=True, sa_type=sa.BigInteger)
    version: int = Field(default=1, sa_type=sa.BigInteger)
    changed_unix_nano: int = Field(sa_type=sa.BigInteger)


class SampledOut(SpanSums, table=True):
    """Spans a sampler dropped, summed per project, minute and the dimensions of ``span_hours`` (with the
    number of traces): analytics add these to what is stored, so totals stay those of all the traffic."""

    __tablename__ = "sampled_out"
    __table_args__ = (sa.Index("ix_sampled_out_project_slot", "project_id", "slot_unix_nano"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    project_id: str
    slot_unix_nano: int = Field(sa_type=sa.BigInteger, description="start of the UTC minute")
    traces: int = Field(sa_type=sa.BigInteger)
    sampler: str = Field(description="the sampler type that dropped them")


class SampledBatch(SQLModel, table=True):
    """A dropped batch already summed into ``sampled_out``: a redelivered batch is not summed again."""

    __tablename__ = "sampled_batches"

    batch_key: str = Field(primary_key=True, description="SHA-256 of the dropped spans' ids")
    created_unix_nano: int = Field(sa_type=sa.BigInteger)


class UndecidedTrace(SQLModel, table=True):
    """A trace that tail samplers have yet to judge, with when its spans last changed."""

    __tablename__ = "undecided_traces"
    __table_args__ = (sa.Index("ix_undecided_traces_changed", "changed_unix_nano"),)

    project_id: str = Field(primary_key=True)
    trace_id: str = Field(primary_key=True)
    changed_unix_nano: int = Field(sa_type=sa.BigInteger)


sampled_out_table: sa.Table = SampledOut.__table__  # type: ignore[attr-defined]
sampled_batches_table: sa.Table = SampledBatch.__table__  # type: ignore[attr-defined]
undecided_traces_table: sa.Table = UndecidedTrace.__table__  # type: ignore[attr-defined]
span_hours_table: sa.Table = SpanHour.__table__  # type: ignore[attr-defined]
stale_hours_table: sa.Table = StaleHour.__table__  # type: ignore[attr-defined]


class DailyUsage(SQLModel, table=True):
    """A project's traces admitted on one UTC day (``YYYY-MM-DD``), and the traces and spans refused
    once its daily limit was reached."""

    __tablename__ = "daily_usage"

    project_id: str = Field(primary_key=True)
    day: str = Field(primary_key=True)
    traces: int = Field(sa_type=sa.BigInteger)
    refused_traces: int = Field(sa_type=sa.BigInteger)
    refused_spans: int = Field(sa_type=sa.BigInteger)


class DailyTrace(SQLModel, table=True):
    """A trace admitted on a day: later spans of it are admitted too, even past the limit."""

    __tablename__ = "daily_traces"

    project_id: str = Field(primary_key=True)
    day: str = Field(primary_key=True)
    trace_id: str = Field(primary_key=True)


daily_usage_table: sa.Table = DailyUsage.__table__  # type: ignore[attr-defined]
daily_traces_table: sa.Table = DailyTrace.__table__  # type: ignore[attr-defined]


class CustomPrice(SQLModel, table=True):
    """An operator's price for a model (negotiated, fine-tuned, or not in any price list).

    ``model`` is an exact name, or with ``match = "regex"`` a pattern that must match the whole
    model name. Prices are USD per 1,000,000 tokens; ``None`` cache/reasoning prices fall back to the
    input/output price. The newest rule whose ``effective_from`` is at or before a call applies.
    """

    __tablename__ = "custom_prices"

    id: int | None = Field(default=None, primary_key=True)
    model: str
    match: str = "exact"
    provider: str | None = None
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    effective_from_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_unix_nano: int = Field(sa_type=sa.BigInteger)


custom_prices_table: sa.Table = CustomPrice.__table__  # type: ignore[attr-defined]


class Project(SQLModel, table=True):
    """A tenant: every span, trace and API key belongs to exactly one project.

    ``data_version`` goes up in every transaction that changes the project's spans, so that a cached
    query result knows it is stale, in this process or any other sharing the database.
    """

    __tablename__ = "projects"

    id: str = Field(primary_key=True)
    created_unix_nano: int = Field(sa_type=sa.BigInteger)
    data_version: int = Field(default=0, sa_type=sa.BigInteger)
    baselines_version: int = Field(
        default=0, sa_type=sa.BigInteger, description="goes up when a quality baseline is pinned"
    )


class ApiKey(SQLModel, table=True):
    """An API key of one project. Only its SHA-256 is stored; ``prefix`` lets people recognise it."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    name: str
    prefix: str
    key_hash: str = Field(unique=True)
    scopes: str = Field(description="comma-separated: ingest, read, admin")
    created_unix_nano: int = Field(sa_type=sa.BigInteger)
    revoked_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)


projects_table: sa.Table = Project.__table__  # type: ignore[attr-defined]
api_keys_table: sa.Table = ApiKey.__table__  # type: ignore[attr-defined]


class QualityBaseline(SQLModel, table=True):
    """A response that calls with the same prompt fingerprint are compared against.

    The first ``quality.baseline_size`` responses of a fingerprint become its baselines, unless one is
    pinned; pinning retires the active ones (``retired_unix_nano``), which stay as history.
    """

    __tablename__ = "quality_baselines"
    __table_args__ = (sa.Index("ix_quality_baselines_fingerprint", "project_id", "fingerprint"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str
    fingerprint: str = Field(description="SHA-256 of service, span name, model and normalised input")
    trace_id: str
    span_id: str
    output: str = Field(sa_type=sa.Text)
    pinned: bool = False
    created_unix_nano: int = Field(sa_type=sa.BigInteger)
    retired_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)


class QualityResult(SQLModel, table=True):
    """One detector's verdict on one LLM span: ``baseline`` (it became one), ``match`` or ``changed``."""

    __tablename__ = "quality_results"
    __table_args__ = (sa.Index("ix_quality_results_project_checked", "project_id", "span_start_unix_nano"),)

    project_id: str = Field(primary_key=True)
    trace_id: str = Field(primary_key=True)
    span_id: str = Field(primary_key=True)
    detector: str = Field(primary_key=True)
    fingerprint: str
    service_name: str
    span_name: str
    span_start_unix_nano: int = Field(sa_type=sa.BigInteger)
    baseline_id: int | None = None
    score: float | None = None
    verdict: str
    degraded: bool = False
    checked_unix_nano: int = Field(sa_type=sa.BigInteger)


quality_baselines_table: sa.Table = QualityBaseline.__table__  # type: ignore[attr-defined]
quality_results_table: sa.Table = QualityResult.__table__  # type: ignore[attr-defined]


class AlertRuleRow(SQLModel, table=True):
    """An alert rule created or edited at run time (``/api/v1/alerts/rules``); ``lumina.toml``'s rules are
    not stored. ``spec`` is the rule as ``AlertRuleSettings`` validates it."""

    __tablename__ = "alert_rules"

    project_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    spec: dict[str, Any] = _json(nullable=False)
    created_unix_nano: int = Field(sa_type=sa.BigInteger)
    updated_unix_nano: int = Field(sa_type=sa.BigInteger)


class AlertRow(SQLModel, table=True):
    """One alert: a rule firing for one scope, from its start until it resolves.

    ``state`` is ``firing``, ``acknowledged`` (still firing, not re-notified) or ``resolved``; at most one
    alert per ``dedup_key`` is not resolved. ``rule_spec`` keeps the rule as it was, for the chart.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index("ix_alerts_project_state", "project_id", "state"),
        sa.Index("ix_alerts_dedup_key", "dedup_key", "started_unix_nano"),
        sa.Index(  # one open alert per rule and scope, even when two processes raise it at once
            "ux_alerts_open_dedup_key",
            "dedup_key",
            unique=True,
            sqlite_where=sa.text("state != 'resolved'"),
            postgresql_where=sa.text("state != 'resolved'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: str
    rule: str
    kind: str
    dedup_key: str
    scope: dict[str, Any] = _json(nullable=False)
    rule_spec: dict[str, Any] = _json(nullable=False)
    state: str
    severity: str
    summary: str
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    started_unix_nano: int = Field(sa_type=sa.BigInteger)
    evaluated_unix_nano: int = Field(sa_type=sa.BigInteger)
    notified_unix_nano: int = Field(sa_type=sa.BigInteger)
    resolved_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)
    acknowledged_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)
    acknowledged_by: str | None = None


class AlertEventRow(SQLModel, table=True):
    """The history of an alert: ``firing``, ``repeat``, ``acknowledged``, ``resolved``."""

    __tablename__ = "alert_events"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(index=True)
    event: str
    at_unix_nano: int = Field(sa_type=sa.BigInteger)
    value: float | None = None
    summary: str
    actor: str | None = Field(default=None, description="who acknowledged or resolved it; none: the engine")


class AlertOutboxRow(SQLModel, table=True):
    """A notification to deliver to one sink, written in the transaction that raised it.

    ``state`` is ``pending`` (retried at ``next_attempt_unix_nano``), ``delivered`` or ``failed`` (gave up
    after the last attempt). ``claimed_until_unix_nano`` keeps two processes from sending one at once.
    """

    __tablename__ = "alert_outbox"
    __table_args__ = (sa.Index("ix_alert_outbox_due", "state", "next_attempt_unix_nano"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int
    alert_id: int
    sink: str
    payload: dict[str, Any] = _json(nullable=False)
    state: str = "pending"
    attempts: int = 0
    next_attempt_unix_nano: int = Field(sa_type=sa.BigInteger)
    claimed_until_unix_nano: int = Field(default=0, sa_type=sa.BigInteger)
    last_error: str | None = None
    delivered_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)


alert_rules_table: sa.Table = AlertRuleRow.__table__  # type: ignore[attr-defined]
alerts_table: sa.Table = AlertRow.__table__  # type: ignore[attr-defined]
alert_events_table: sa.Table = AlertEventRow.__table__  # type: ignore[attr-defined]
alert_outbox_table: sa.Table = AlertOutboxRow.__table__  # type: ignore[attr-defined]


class ReplaySetRow(SQLModel, table=True):
    """A frozen selection of LLM calls to replay; its items are copies, so retention does not change it."""

    __tablename__ = "replay_sets"
    __table_args__ = (sa.Index("ix_replay_sets_project", "project_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str
    name: str
    description: str = ""
    selection: dict[str, Any] = _json(nullable=False)
    item_count: int
    created_unix_nano: int = Field(sa_type=sa.BigInteger)


class ReplayItemRow(TokenCounts, table=True):
    """One captured LLM call of a set: the request, and what it answered and cost then."""

    __tablename__ = "replay_items"

    set_id: int = Field(primary_key=True)
    position: int = Field(primary_key=True)
    trace_id: str
    span_id: str
    service_name: str
    span_name: str
    provider: str | None = None
    model: str | None = None
    input_messages: list[dict[str, Any]] | None = _json()
    system_prompt: str | None = Field(default=None, sa_type=sa.Text)
    invocation_parameters: dict[str, Any] | None = _json()
    output_text: str | None = Field(default=None, sa_type=sa.Text)
    cost_usd: float | None = None
    latency_ms: float


class ReplayRunRow(SQLModel, table=True):
    """A set replayed with overrides: ``state`` is queued, running, done, cancelled or failed."""

    __tablename__ = "replay_runs"
    __table_args__ = (sa.Index("ix_replay_runs_project", "project_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: str
    set_id: int
    overrides: dict[str, Any] = _json(nullable=False)
    limits: dict[str, Any] = _json(nullable=False)
    state: str
    runner: str = Field(description="server (worker processes run it) or cli (the command that started it)")
    item_count: int
    created_unix_nano: int = Field(sa_type=sa.BigInteger)
    finished_unix_nano: int | None = Field(default=None, sa_type=sa.BigInteger)
    error: str | None = None


class ReplayResultRow(TokenCounts, table=True):
    """One replayed call: the answer (or the error), its tokens, cost and latency, and how it compares."""

    __tablename__ = "replay_results"

    run_id: int = Field(primary_key=True)
    position: int = Field(primary_key=True)
    status: str = Field(description="ok or error")
    output_text: str | None = Field(default=None, sa_type=sa.Text)
    model: str | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: int
    error: str | None = None
    identical: bool | None = None
    similarity: float | None = None
    finished_unix_nano: int = Field(sa_type=sa.BigInteger)


replay_sets_table: sa.Table = ReplaySetRow.__table__  # type: ignore[attr-defined]
replay_items_table: sa.Table = ReplayItemRow.__table__  # type: ignore[attr-defined]
replay_runs_table: sa.Table = ReplayRunRow.__table__  # type: ignore[attr-defined]
replay_results_table: sa.Table = ReplayResultRow.__table__  # type: ignore[attr-defined]
