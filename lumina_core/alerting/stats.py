"""Window statistics of LLM calls per scope, for alert rules: one reader per evaluation cycle.

Rules that group and filter only by service, model and span name (most of them) share one query per
window: the window's hourly sums and spans (``summed_source``) by service, model and span name, rolled up
in Python. Rules that look at users or attributes, latency percentiles, single calls or quality results
query for themselves; every query is cached for the cycle, so rules with the same window share it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumina_core.plugin_api import WindowStats
from lumina_core.storage.filters import SpanFilter, attribute_value
from lumina_core.storage.hours import summed_source
from lumina_core.storage.models import TOKEN_COLUMNS, quality_results_table, spans_table

SUMMED_DIMENSIONS = {"service": "service_name", "model": "model", "span_name": "name"}
SPAN_COLUMNS = {**SUMMED_DIMENSIONS, "user_id": "user_id"}
NONE = "(none)"
"""How a scope shows a dimension the calls did not report (a span without a model)."""

Scope = tuple[str, ...]
_s, _q = spans_table.c, quality_results_table.c


def dimension(name: str, dialect: str) -> sa.ColumnElement[Any]:
    """The SQL expression of a scope dimension on ``spans``."""
    if name.startswith("attribute:"):
        return attribute_value(_s, name.removeprefix("attribute:"), dialect)
    return _s[SPAN_COLUMNS[name]]


def _conditions(where: dict[str, str], dialect: str) -> list[sa.ColumnElement[bool]]:
    return [dimension(name, dialect) == value for name, value in where.items()]


def _scope(values: Iterable[Any]) -> Scope:
    return tuple(NONE if v is None else str(v) for v in values)


def _keyed_scope(row: dict[str, Any], dimensions: int) -> Scope:
    """The scope of a row grouped by the labels ``d0``, ``d1`` … (see ``WindowReader._keys``)."""
    return _scope(row[f"d{i}"] for i in range(dimensions))


@dataclass
class _Sums:
    calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    max_call_cost: float | None = None
    checked: int = 0
    changed: int = 0
    score_sum: float = 0.0

    def stats(self, start: int, end: int) -> WindowStats:
        return WindowStats(
            start,
            end,
            self.calls,
            self.errors,
            self.cost_usd,
            self.tokens,
            _p95(self.latencies),
            self.max_call_cost,
            self.checked,
            self.changed,
            self.score_sum,
        )


def _p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


@dataclass(frozen=True)
class WindowQuery:
    """What one rule asks of one window."""

    project_id: str
    start: int
    end: int
    group_by: tuple[str, ...]
    where: tuple[tuple[str, str], ...]
    measures: frozenset[str]


class WindowReader:
    """Reads window statistics, caching every query for the life of the reader (one evaluation cycle)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._cache: dict[Any, Any] = {}

    async def stats(self, q: WindowQuery) -> dict[Scope, WindowStats]:
        """Statistics per scope (values in ``group_by`` order) of the LLM calls in ``[start, end)``."""
        sums: dict[Scope, _Sums] = {}
        where = dict(q.where)
        if set(q.group_by) | set(where) <= set(SUMMED_DIMENSIONS):
            for row in await self._summed_rows(q.project_id, q.start, q.end):
                if all(row[name] == value for name, value in where.items()):
                    self._add(sums, _scope(row[d] for d in q.group_by), row)
        else:
            for row in await self._span_sums(q):
                self._add(sums, row["scope"], row)
        if q.measures & {"latency", "max_call_cost"}:
            for scope, latency, cost in await self._calls(q):
                entry = sums.setdefault(scope, _Sums())
                entry.latencies.append(latency)
                if cost is not None and (entry.max_call_cost is None or cost > entry.max_call_cost):
                    entry.max_call_cost = cost
        if "quality" in q.measures:
            for scope, checked, changed, score_sum in await self._quality(q):
                entry = sums.setdefault(scope, _Sums())
                entry.checked, entry.changed, entry.score_sum = checked, changed, score_sum
        return {scope: entry.stats(q.start, q.end) for scope, entry in sums.items()}

    @staticmethod
    def _add(sums: dict[Scope, _Sums], scope: Scope, row: dict[str, Any]) -> None:
        entry = sums.setdefault(scope, _Sums())  # PostgreSQL sums integers as NUMERIC (Decimal)
        entry.calls += int(row["calls"])
        entry.errors += int(row["errors"] or 0)
        entry.cost_usd += float(row["cost_usd"] or 0.0)
        entry.tokens += int(row["tokens"] or 0)

    async def _cached(self, key: Any, query: sa.Select[Any] | Callable[[AsyncConnection], Awaitable[Any]]) -> list[Any]:
        """The rows of ``query`` (or of the query ``query(conn)`` builds), read once per cycle."""
        if key not in self._cache:
            async with self.engine.connect() as conn:
                statement = await query(conn) if callable(query) else query
                self._cache[key] = [dict(r) for r in (await conn.execute(statement)).mappings()]
        return self._cache[key]

    async def _summed_rows(self, project_id: str, start: int, end: int) -> list[dict[str, Any]]:
        async def build(conn: Any) -> sa.Select[Any]:
            src = await summed_source(conn, project_id, SpanFilter(start_ns=start, end_ns=end, llm=True), True)
            keys = [src.c[column].label(name) for name, column in SUMMED_DIMENSIONS.items()]
            sums = _measures(sa.func.sum(src.c.requests), sa.func.sum(src.c.errors), src.c)
            return sa.select(*keys, *sums).group_by(*keys)

        return await self._cached(("summed", project_id, start, end), build)

    def _span_where(self, q: WindowQuery) -> list[sa.ColumnElement[bool]]:
        return [
            _s.project_id == q.project_id,
            _s.start_time_unix_nano >= q.start,
            _s.start_time_unix_nano < q.end,
            _s.is_llm,
            _s.counted,
            *_conditions(dict(q.where), self.dialect),
        ]

    def _keys(self, q: WindowQuery) -> list[sa.ColumnElement[Any]]:
        return [dimension(d, self.dialect).label(f"d{i}") for i, d in enumerate(q.group_by)]

    async def _span_sums(self, q: WindowQuery) -> list[dict[str, Any]]:
        keys = self._keys(q)
        errors = sa.case((_s.status == "error", 1), else_=0)
        query = (
            sa.select(*keys, *_measures(sa.func.count(), sa.func.sum(errors), _s))
            .where(*self._span_where(q))
            .group_by(*keys)
        )
        rows = await self._cached(("spans", q.project_id, q.start, q.end, q.group_by, q.where), query)
        return [{**row, "scope": _keyed_scope(row, len(keys))} for row in rows]

    async def _calls(self, q: WindowQuery) -> list[tuple[Scope, float, float | None]]:
        keys = self._keys(q)
        query = sa.select(*keys, _s.latency_ms, _s.cost_usd).where(*self._span_where(q))
        rows = await self._cached(("calls", q.project_id, q.start, q.end, q.group_by, q.where), query)
        return [(_keyed_scope(r, len(keys)), r["latency_ms"], r["cost_usd"]) for r in rows]

    async def _quality(self, q: WindowQuery) -> list[tuple[Scope, int, int, float]]:
        keys = self._keys(q)
        changed = sa.case((_q.verdict == "changed", 1), else_=0)
        query = (
            sa.select(
                *keys,
                sa.func.count().label("checked"),
                sa.func.sum(changed).label("changed"),
                sa.func.sum(sa.func.coalesce(_q.score, 0.0)).label("score_sum"),
            )
            .select_from(
                quality_results_table.join(
                    spans_table,
                    (_s.project_id == _q.project_id) & (_s.trace_id == _q.trace_id) & (_s.span_id == _q.span_id),
                )
            )
            .where(
                _q.project_id == q.project_id,
                _q.span_start_unix_nano >= q.start,
                _q.span_start_unix_nano < q.end,
                _q.verdict != "baseline",
                *_conditions(dict(q.where), self.dialect),
            )
            .group_by(*keys)
        )
        rows = await self._cached(("quality", q.project_id, q.start, q.end, q.group_by, q.where), query)
        return [
            (
                _keyed_scope(r, len(keys)),
                int(r["checked"]),
                int(r["changed"] or 0),
                float(r["score_sum"] or 0.0),
            )
            for r in rows
        ]


def _measures(calls: sa.ColumnElement[Any], errors: sa.ColumnElement[Any], columns: Any) -> list[sa.ColumnElement[Any]]:
    """Calls, errors, cost and tokens summed over ``columns`` (a ``summed_source`` or ``spans``)."""
    tokens = sum((sa.func.coalesce(sa.func.sum(columns[name]), 0) for name in TOKEN_COLUMNS), sa.literal(0))
    return [
        calls.label("calls"),
        errors.label("errors"),
        sa.func.sum(columns.cost_usd).label("cost_usd"),
        tokens.label("tokens"),
    ]
