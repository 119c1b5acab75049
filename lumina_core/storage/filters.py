"""The filters shared by the trace list, the span search and analytics, as SQL conditions.

A span matches a filter on its own columns. A trace matches on its rollup for status, time, cost and
duration, and for every other field when *any* of its spans matches (each field on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lumina_core.storage.models import spans_table, traces_table

STATUSES = ("ok", "error", "degraded")


@dataclass(frozen=True)
class SpanFilter:
    service: str | None = None
    span_name: str | None = None
    model: str | None = None
    provider: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    status: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    min_cost: float | None = None
    max_cost: float | None = None
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    """``(key, value)`` pairs; a span (or its resource) must carry each key with that value."""
    text: str | None = None
    """Case-insensitive substring of the span name, system prompt, or input or output messages."""
    llm: bool | None = None


def span_keys(columns: Any, project_id: str, keys: Sequence[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """Rows (spans, or quality verdicts) of these ``(trace_id, span_id)`` pairs. The trace ids are named
    on their own too: without them SQLite matches the pairs against every row of the project (seen: a
    retention sweep slowing to 140 spans/s on a 4-million-span file); with them it seeks the primary key."""
    return sa.and_(
        columns.project_id == project_id,
        columns.trace_id.in_(sorted({trace_id for trace_id, _ in keys})),
        sa.tuple_(columns.trace_id, columns.span_id).in_([tuple(key) for key in keys]),
    )


def _json_text(column: sa.Column[Any], key: str, dialect: str) -> sa.ColumnElement[Any]:
    """The JSON value at top-level ``key`` as text (``'42'``, ``'true'``, ``'gpt-4o'``), NULL if absent."""
    if dialect == "postgresql":
        return column.op("->>")(sa.literal(key, sa.Text))
    path = sa.literal('$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"', sa.Text)
    value = sa.func.json_extract(column, path)
    kind = sa.func.json_type(column, path)
    return sa.case((kind == "true", "true"), (kind == "false", "false"), else_=sa.cast(value, sa.Text))


def attribute_value(span: Any, key: str, dialect: str) -> sa.ColumnElement[Any]:
    """A span attribute as text, falling back to its resource attribute (e.g. ``deployment.environment``)."""
    return sa.func.coalesce(
        _json_text(span.attributes, key, dialect), _json_text(span.resource_attributes, key, dialect)
    )


def _contains(column: sa.ColumnElement[Any], text: str, dialect: str) -> sa.ColumnElement[bool]:
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if dialect == "postgresql":
        return sa.cast(column, sa.Text).ilike(pattern, escape="\\")
    return sa.cast(column, sa.Text).like(pattern, escape="\\")  # SQLite's LIKE ignores ASCII case


def span_field_conditions(flt: SpanFilter, span: Any, dialect: str) -> list[sa.ColumnElement[bool]]:
    """Conditions on what a span is: service, name, model, provider, attributes, text, LLM or not."""
    out: list[sa.ColumnElement[bool]] = []
    for column, value in (
        ("service_name", flt.service),
        ("name", flt.span_name),
        ("model", flt.model),
        ("provider", flt.provider),
        ("user_id", flt.user_id),
        ("session_id", flt.session_id),
    ):
        if value is not None:
            out.append(span[column] == value)
    for key, value in flt.attributes:
        out.append(attribute_value(span, key, dialect) == value)
    if flt.text:
        out.append(
            sa.or_(
                *(
                    _contains(column, flt.text, dialect)
                    for column in (span.name, span.system_prompt, span.input_messages, span.output_messages)
                )
            )
        )
    if flt.llm is not None:
        out.append(span.is_llm == flt.llm)
    return out


def _ranges(flt: SpanFilter, start: Any, cost: Any, latency: Any) -> list[sa.ColumnElement[bool]]:
    out = []
    for column, low, high in (
        (start, flt.start_ns, None),
        (cost, flt.min_cost, flt.max_cost),
        (latency, flt.min_latency_ms, flt.max_latency_ms),
    ):
        if low is not None:
            out.append(column >= low)
        if high is not None:
            out.append(column <= high)
    if flt.end_ns is not None:
        out.append(start < flt.end_ns)
    return out


def span_conditions(flt: SpanFilter, dialect: str, span: Any = spans_table.c) -> list[sa.ColumnElement[bool]]:
    """Every condition of ``flt`` on one span."""
    out = span_field_conditions(flt, span, dialect)
    if flt.status is not None:
        out.append(span.status == flt.status)
    return out + _ranges(flt, span.start_time_unix_nano, span.cost_usd, span.latency_ms)


def trace_conditions(
    flt: SpanFilter, dialect: str, sort_key: sa.ColumnElement[Any] | None = None
) -> list[sa.ColumnElement[bool]]:
    """Every condition of ``flt`` on a trace: its rollup, and for span fields, any of its spans.

    On SQLite, ranges on columns other than ``sort_key`` are kept off their indexes (``+ 0``): its planner
    cannot tell how much of a table a range selects, and would sort most of the traces rather than walk
    the sort order until a page is full.
    """
    t = traces_table.c

    def walked(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return column + 0 if dialect == "sqlite" and sort_key is not None and column is not sort_key else column

    out = _ranges(flt, walked(t.start_time_unix_nano), t.cost_usd, walked(t.duration_ms))
    if flt.status is not None:
        out.append(t.status == flt.status)
    for condition in span_field_conditions(flt, spans_table.c, dialect):
        out.append(spans_of_trace(condition))
    return out


def spans_of_trace(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """The trace has a span that meets ``condition``."""
    s, t = spans_table.c, traces_table.c
    return sa.exists().where(s.project_id == t.project_id, s.trace_id == t.trace_id, condition)
