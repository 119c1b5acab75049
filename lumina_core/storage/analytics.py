"""Aggregates over spans: totals and time series grouped by a dimension, and the catalogue of services and
models seen. A call reported twice (same response id) counts once (only its ``counted`` span).

Whatever the hourly sums can answer (no latency percentiles, no attribute, text, cost or latency
conditions, no minute buckets) is read from them (``lumina_core.storage.hours``); the rest from spans.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage import hours
from lumina_core.storage.filters import SpanFilter, attribute_value, span_conditions
from lumina_core.storage.models import DAY_NS, HOUR_NS, MINUTE_NS, TOKEN_COLUMNS, spans_table
from lumina_core.storage.queries import iso

_s = spans_table.c
GROUPS = {"model": "model", "provider": "provider", "service": "service_name", "span_name": "name"}
"""``group_by`` values and the column each groups by."""
ATTRIBUTE_GROUP = "attribute:"
"""``group_by=attribute:<key>`` groups by a span (or resource) attribute."""
BUCKETS = {"minute": MINUTE_NS, "hour": HOUR_NS, "day": DAY_NS}
PERCENTILES = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
"""Nearest-rank percentiles: the smallest latency with at least that share of calls at or below it."""


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
    width = BUCKETS[bucket] if bucket else None
    summable = hours.can_sum(flt) and (group_by is None or group_by in GROUPS) and bucket != "minute"
    async with engine.connect() as conn:
        percentiles: dict[tuple[Any, Any], dict[str, Any]] = {}
        if summable and latency:  # counts and sums from the hours (sampled-out calls included), percentiles
            query = _span_query(project_id, flt, group_by, width, True, engine.dialect.name)  # from kept spans
            for row in (await conn.execute(query)).mappings():
                percentiles[(row["grp"], row["slot"])] = {name: row[name] for name in PERCENTILES}
        if summable:
            source = await hours.summed_source(conn, project_id, flt, counted_only=True)
            group = source.c[GROUPS[group_by]] if group_by else None
            slot = (source.c.start // width) * width if width else None
            used = [e for e in (slot, group) if e is not None]
            query = sa.select(
                (group if group is not None else sa.null()).label("grp"),
                (slot if slot is not None else sa.null()).label("slot"),
                *hours.summed_measures(source),
            )
            query = query.group_by(*used).order_by(*used)
        else:
            query = _span_query(project_id, flt, group_by, width, latency, engine.dialect.name)
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item: dict[str, Any] = {"bucket": iso(row["slot"]) if row["slot"] is not None else None}
        if width:
            item["bucket_unix_nano"] = row["slot"]
        item["group"] = row["grp"]
        item.update({k: v for k, v in row.items() if k not in ("grp", "slot", *_SEEN)})
        if summable and latency:
            item.update(percentiles.get((row["grp"], row["slot"]), dict.fromkeys(PERCENTILES)))
        item["requests"] = int(item["requests"] or 0)  # SUM over no rows is NULL
        item["errors"] = int(item["errors"] or 0)
        item["error_rate"] = item["errors"] / item["requests"] if item["requests"] else None
        out.append(item)
    return out


_SEEN = ("first_seen_unix_nano", "last_seen_unix_nano")


def _span_query(
    project_id: str, flt: SpanFilter, group_by: str | None, width: int | None, latency: bool, dialect: str
) -> sa.Select[Any]:
    """The aggregate computed from the spans themselves (with latency percentiles if asked)."""
    if group_by and group_by.startswith(ATTRIBUTE_GROUP):
        group = attribute_value(_s, group_by.removeprefix(ATTRIBUTE_GROUP), dialect)
    else:
        group = _s[GROUPS[group_by]] if group_by else sa.null()
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
    return sa.select(m.grp, m.slot, *measures).group_by(m.grp, m.slot).order_by(m.slot, m.grp)


async def services(engine: AsyncEngine, project_id: str) -> list[dict[str, Any]]:
    """Services that sent spans, with span counts and first and last seen."""
    return await _seen(engine, project_id, SpanFilter(), ("service_name",), counted_only=False)


async def models(engine: AsyncEngine, project_id: str, pricing_status: str | None = None) -> list[dict[str, Any]]:
    """Models called, per provider, with request counts, token and cost totals, first and last seen;
    ``pricing_status="unpriced"`` lists the models no pricing rule knows."""
    rows = await _seen(engine, project_id, SpanFilter(llm=True), ("provider", "model"), True, pricing_status)
    return sorted(rows, key=lambda row: (-row["requests"], row["model"] or ""))


async def _seen(
    engine: AsyncEngine,
    project_id: str,
    flt: SpanFilter,
    keys: tuple[str, ...],
    counted_only: bool,
    pricing_status: str | None = None,
) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        source = await hours.summed_source(conn, project_id, flt, counted_only, pricing_status)
        columns = [source.c[key].label(key) for key in keys]
        query = sa.select(*columns, *hours.summed_measures(source)).group_by(*columns).order_by(*columns)
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        item["first_seen"], item["last_seen"] = iso(row["first_seen_unix_nano"]), iso(row["last_seen_unix_nano"])
        if counted_only:
            del item["errors"]
        else:  # every span counts, reported twice or not
            item["span_count"] = item.pop("requests")
            for name in ("errors", "cost_usd", *TOKEN_COLUMNS):
                del item[name]
        out.append(item)
    return out
