"""Aggregates over spans: totals and time series grouped by a dimension, and the catalogue of services and
models seen. A call reported twice (same response id) counts once (only its ``counted`` span)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage.filters import SpanFilter, attribute_value, span_conditions
from lumina_core.storage.models import TOKEN_COLUMNS, spans_table
from lumina_core.storage.queries import iso

_s = spans_table.c
GROUPS: dict[str, sa.ColumnElement[Any]] = {
    "model": _s.model,
    "provider": _s.provider,
    "service": _s.service_name,
    "span_name": _s.name,
}
ATTRIBUTE_GROUP = "attribute:"
"""``group_by=attribute:<key>`` groups by a span (or resource) attribute."""
BUCKETS = {"minute": 60 * 10**9, "hour": 3600 * 10**9, "day": 86400 * 10**9}
PERCENTILES = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
"""Nearest-rank percentiles: the smallest latency with at least that share of calls at or below it."""


def group_expression(group_by: str, dialect: str) -> sa.ColumnElement[Any]:
    if group_by.startswith(ATTRIBUTE_GROUP):
        return attribute_value(_s, group_by.removeprefix(ATTRIBUTE_GROUP), dialect)
    return GROUPS[group_by]


async def aggregate(
    engine: AsyncEngine,
    project_id: str,
    flt: SpanFilter,
    group_by: str | None = None,
    bucket: str | None = None,
    latency: bool = True,
) -> list[dict[str, Any]]:
    """Requests, errors, cost, token buckets and (with ``latency``) latency percentiles of the spans
    matching ``flt``, per ``group_by`` value and per time ``bucket`` (UTC-aligned), in time order."""
    dialect = engine.dialect.name
    group = group_expression(group_by, dialect) if group_by else sa.null()
    width = BUCKETS[bucket] if bucket else None
    slot = (_s.start_time_unix_nano // width) * width if width else sa.null()
    columns = [group.label("grp"), slot.label("slot"), _s.status, _s.cost_usd, _s.latency_ms]
    columns += [_s[name] for name in TOKEN_COLUMNS]
    if latency:
        partition = [e for e, used in ((group, group_by), (slot, width)) if used] or None
        columns.append(sa.func.row_number().over(partition_by=partition, order_by=_s.latency_ms).label("rank"))
        columns.append(sa.func.count().over(partition_by=partition).label("calls"))
    source = (
        sa.select(*columns)
        .where(_s.project_id == project_id, _s.counted, *span_conditions(flt, dialect))
        .subquery("matching")
    )
    m = source.c
    measures = [
        sa.func.count().label("requests"),
        sa.func.sum(sa.case((m.status == "error", 1), else_=0)).label("errors"),
        sa.func.sum(m.cost_usd).label("cost_usd"),
        *(sa.cast(sa.func.sum(m[name]), sa.BigInteger).label(name) for name in TOKEN_COLUMNS),
    ]
    if latency:
        measures += [
            sa.func.min(sa.case((m.rank >= share * m.calls, m.latency_ms))).label(name)
            for name, share in PERCENTILES.items()
        ]
    query = sa.select(m.grp, m.slot, *measures).group_by(m.grp, m.slot).order_by(m.slot, m.grp)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item: dict[str, Any] = {"bucket": iso(row["slot"]) if row["slot"] is not None else None}
        if width:
            item["bucket_unix_nano"] = row["slot"]
        item["group"] = row["grp"]
        item.update({k: v for k, v in row.items() if k not in ("grp", "slot")})
        item["errors"] = int(item["errors"] or 0)
        item["error_rate"] = item["errors"] / item["requests"] if item["requests"] else None
        out.append(item)
    return out


async def services(engine: AsyncEngine, project_id: str) -> list[dict[str, Any]]:
    """Services that sent spans, with span counts and first and last seen."""
    query = (
        sa.select(
            _s.service_name,
            sa.func.count().label("span_count"),
            sa.func.min(_s.start_time_unix_nano).label("first_seen_unix_nano"),
            sa.func.max(_s.start_time_unix_nano).label("last_seen_unix_nano"),
        )
        .where(_s.project_id == project_id)
        .group_by(_s.service_name)
        .order_by(_s.service_name)
    )
    return await _seen(engine, query)


async def models(engine: AsyncEngine, project_id: str, pricing_status: str | None = None) -> list[dict[str, Any]]:
    """Models called, per provider, with request counts, token and cost totals, first and last seen;
    ``pricing_status="unpriced"`` lists the models no pricing rule knows."""
    conditions = [_s.pricing_status == pricing_status] if pricing_status else []
    query = (
        sa.select(
            _s.provider,
            _s.model,
            sa.func.count().label("requests"),
            sa.func.sum(_s.cost_usd).label("cost_usd"),
            *(sa.cast(sa.func.sum(_s[name]), sa.BigInteger).label(name) for name in TOKEN_COLUMNS),
            sa.func.min(_s.start_time_unix_nano).label("first_seen_unix_nano"),
            sa.func.max(_s.start_time_unix_nano).label("last_seen_unix_nano"),
        )
        .where(_s.project_id == project_id, _s.is_llm, _s.counted, *conditions)
        .group_by(_s.provider, _s.model)
        .order_by(sa.func.count().desc(), _s.model)
    )
    return await _seen(engine, query)


async def _seen(engine: AsyncEngine, query: sa.Select[Any]) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        {**row, "first_seen": iso(row["first_seen_unix_nano"]), "last_seen": iso(row["last_seen_unix_nano"])}
        for row in rows
    ]
