"""Hourly sums of spans (``span_hours``) and the hours not yet summed (``stale_hours``).

Analytics over days of data read a few thousand hourly rows instead of millions of spans, and stay
exact: every transaction that changes spans marks their hours stale (in that same transaction), a
background task sums an hour again once it has been quiet for a while, and a query reads an hour's
sums only while it is not stale — stale hours, and the partial hours at either end of a range, are
read from ``spans``. So a result never misses a span whose write was acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumina_core.storage.database import dialect_insert, writing
from lumina_core.storage.filters import SpanFilter, span_field_conditions
from lumina_core.storage.models import (
    HOUR_NS,
    TOKEN_COLUMNS,
    sampled_out_table,
    span_hours_table,
    spans_table,
    stale_hours_table,
)

KEY_COLUMNS = ("service_name", "name", "model", "provider", "status", "is_llm", "counted", "pricing_status")
"""What an hourly row sums over: the dimensions analytics filter and group by."""
MEASURES = ("requests", "errors", "cost_usd", *TOKEN_COLUMNS, "first_seen_unix_nano", "last_seen_unix_nano")
MAX_END_NS = 2**63 - 1

_s, _h, _stale = spans_table.c, span_hours_table.c, stale_hours_table.c


def _hour_of(start: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    return (start // HOUR_NS) * HOUR_NS


async def mark_stale(conn: AsyncConnection, project_id: str, trace_ids: list[str]) -> None:
    """Mark the hours that spans of these traces fall in as changed, inside the changing transaction."""
    select = (
        sa.select(
            _s.project_id,
            _hour_of(_s.start_time_unix_nano).label("slot"),
            sa.literal(1, sa.BigInteger).label("version"),
            sa.literal(time.time_ns(), sa.BigInteger).label("changed"),
        )
        .where(_s.project_id == project_id, _s.trace_id.in_(trace_ids))
        .distinct()
    )
    stmt = dialect_insert(conn.dialect.name, stale_hours_table).from_select(
        ["project_id", "slot_unix_nano", "version", "changed_unix_nano"], select
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["project_id", "slot_unix_nano"],
            set_={"version": _stale.version + 1, "changed_unix_nano": stmt.excluded.changed_unix_nano},
        )
    )


async def sum_settled_hours(engine: AsyncEngine, quiet_seconds: float, limit: int = 100) -> int:
    """Sum again the stale hours that have not changed for ``quiet_seconds``; returns how many.

    An hour that changes while it is being summed stays stale (its version moved on) and is summed again
    later. On PostgreSQL a lock per hour keeps two processes from summing one hour at once.
    """
    cutoff = time.time_ns() - int(quiet_seconds * 1e9)
    async with engine.connect() as conn:
        due = (
            await conn.execute(
                sa.select(_stale.project_id, _stale.slot_unix_nano, _stale.version)
                .where(_stale.changed_unix_nano <= cutoff)
                .order_by(_stale.changed_unix_nano)
                .limit(limit)
            )
        ).all()
    for project_id, slot, version in due:
        async with writing(engine) as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"span_hours/{project_id}/{slot}"},
                )
            here = (_h.project_id == project_id) & (_h.slot_unix_nano == slot)
            await conn.execute(sa.delete(span_hours_table).where(here))  # first, so SQLite takes the write lock
            await conn.execute(
                sa.insert(span_hours_table).from_select(
                    [*KEY_COLUMNS, *MEASURES, "project_id", "slot_unix_nano"], _sums(project_id, slot)
                )
            )
            await conn.execute(
                sa.delete(stale_hours_table).where(
                    _stale.project_id == project_id, _stale.slot_unix_nano == slot, _stale.version == version
                )
            )
    return len(due)


def _sums(project_id: str, slot: int) -> sa.Select[Any]:
    keys = [_s[name] for name in KEY_COLUMNS]
    return (
        sa.select(
            *keys,
            *_span_measures(),
            sa.literal(project_id).label("project_id"),
            sa.literal(slot, sa.BigInteger).label("slot_unix_nano"),
        )
        .where(
            _s.project_id == project_id,
            _s.start_time_unix_nano >= slot,
            _s.start_time_unix_nano < slot + HOUR_NS,
        )
        .group_by(*keys)
    )


def _span_measures() -> list[sa.ColumnElement[Any]]:
    return [
        sa.func.count().label("requests"),
        sa.func.sum(sa.case((_s.status == "error", 1), else_=0)).label("errors"),
        sa.func.sum(_s.cost_usd).label("cost_usd"),
        *(sa.func.sum(_s[name]).label(name) for name in TOKEN_COLUMNS),
        sa.func.min(_s.start_time_unix_nano).label("first_seen_unix_nano"),
        sa.func.max(_s.start_time_unix_nano).label("last_seen_unix_nano"),
    ]


def can_sum(flt: SpanFilter) -> bool:
    """Whether ``flt`` only asks about what hourly rows keep (then :func:`summed_source` can serve it)."""
    return not (
        flt.attributes
        or flt.text
        or flt.user_id is not None
        or flt.session_id is not None
        or any(v is not None for v in (flt.min_cost, flt.max_cost, flt.min_latency_ms, flt.max_latency_ms))
    )


def _ranges(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(r for r in spans if r[0] < r[1]):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


async def summed_source(
    conn: AsyncConnection, project_id: str, flt: SpanFilter, counted_only: bool, pricing_status: str | None = None
) -> sa.Subquery:
    """Rows whose sums are the totals of the spans matching ``flt`` (which must pass :func:`can_sum`):
    hourly rows for the whole, settled hours of the range, and one row per span for the rest.

    Columns: the ``KEY_COLUMNS``, ``start`` (the span's start, or the hour's) and the ``MEASURES``.
    Each hour is read from one place only: its sums while it is not stale, else its spans. An hour
    turns stale before its new spans commit and is summed again only while stale, so a query never
    misses a span acknowledged before it started, and never counts one twice.
    """
    low = flt.start_ns if flt.start_ns is not None else 0
    high = flt.end_ns if flt.end_ns is not None else MAX_END_NS
    first_hour, end_hour = -(-low // HOUR_NS) * HOUR_NS, high // HOUR_NS * HOUR_NS
    stale: list[int] = []
    if first_hour < end_hour:
        stale = list(
            (
                await conn.execute(
                    sa.select(_stale.slot_unix_nano).where(
                        _stale.project_id == project_id,
                        _stale.slot_unix_nano >= first_hour,
                        _stale.slot_unix_nano < end_hour,
                    )
                )
            ).scalars()
        )
    else:
        first_hour = end_hour = high
    from_spans = _ranges([(low, first_hour), (end_hour, high), *((slot, slot + HOUR_NS) for slot in stale)])
    dialect = conn.dialect.name
    timeless = SpanFilter(**{**flt.__dict__, "start_ns": None, "end_ns": None})

    def where(table: Any) -> list[sa.ColumnElement[bool]]:
        out = [table.project_id == project_id, *span_field_conditions(timeless, table, dialect)]
        if flt.status is not None:
            out.append(table.status == flt.status)
        if counted_only:
            out.append(table.counted)
        if pricing_status is not None:
            out.append(table.pricing_status == pricing_status)
        return out

    start = _s.start_time_unix_nano
    parts = [
        sa.select(
            *(_s[name] for name in KEY_COLUMNS),
            start.label("start"),
            sa.literal(1, sa.BigInteger).label("requests"),
            sa.case((_s.status == "error", 1), else_=0).label("errors"),
            _s.cost_usd,
            *(_s[name] for name in TOKEN_COLUMNS),
            start.label("first_seen_unix_nano"),
            start.label("last_seen_unix_nano"),
        ).where(*where(_s), sa.or_(*((start >= a) & (start < b) for a, b in from_spans)) if from_spans else sa.false())
    ]
    o = sampled_out_table.c  # what samplers dropped, by the minute
    parts.append(
        sa.select(
            *(o[name] for name in KEY_COLUMNS), o.slot_unix_nano.label("start"), *(o[name] for name in MEASURES)
        ).where(*where(o), o.slot_unix_nano >= low, o.slot_unix_nano < high)
    )
    if first_hour < end_hour:
        slot = _h.slot_unix_nano
        hours = [slot >= first_hour, slot < end_hour] + ([slot.not_in(stale)] if stale else [])
        parts.append(
            sa.select(*(_h[name] for name in KEY_COLUMNS), slot.label("start"), *(_h[name] for name in MEASURES)).where(
                *where(_h), *hours
            )
        )
    return sa.union_all(*parts).subquery("source")


def summed_measures(source: sa.Subquery) -> list[sa.ColumnElement[Any]]:
    """The totals of a :func:`summed_source`, named as in ``MEASURES``."""
    m = source.c
    return [
        sa.cast(sa.func.sum(m.requests), sa.BigInteger).label("requests"),
        sa.cast(sa.func.sum(m.errors), sa.BigInteger).label("errors"),
        sa.func.sum(m.cost_usd).label("cost_usd"),
        *(sa.cast(sa.func.sum(m[name]), sa.BigInteger).label(name) for name in TOKEN_COLUMNS),
        sa.func.min(m.first_seen_unix_nano).label("first_seen_unix_nano"),
        sa.func.max(m.last_seen_unix_nano).label("last_seen_unix_nano"),
    ]
