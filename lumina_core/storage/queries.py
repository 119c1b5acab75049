"""Read queries shared by the REST API and the dashboard; the only place that selects from storage."""

from __future__ import annotations

import base64
import binascii
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage.filters import SpanFilter, span_conditions, trace_conditions
from lumina_core.storage.models import TOKEN_COLUMNS, TRACE_COST_SORT, spans_table, traces_table

MAX_PAGE = 500
MAX_TREE_DEPTH = 64
MAX_UNIX_NANO = 2**63 - 1
HEAVY_SPAN_COLUMNS = (
    "attributes",
    "resource_attributes",
    "events",
    "links",
    "input_messages",
    "output_messages",
    "system_prompt",
    "invocation_parameters",
)
"""Left out of span lists; the span and trace details carry them."""

_t, _s = traces_table.c, spans_table.c
TRACE_SORTS: dict[str, sa.ColumnElement[Any]] = {
    "start_time": _t.start_time_unix_nano,
    "duration": _t.duration_ms,
    "cost": TRACE_COST_SORT,
    "span_count": _t.span_count,
}
SPAN_SORTS: dict[str, sa.ColumnElement[Any]] = {
    "start_time": _s.start_time_unix_nano,
    "latency": _s.latency_ms,
    "cost": sa.func.coalesce(_s.cost_usd, -1.0),
}
"""Sort keys (``-key`` for descending); NULL costs sort as -1, below every priced row."""


class InvalidCursor(ValueError):
    pass


def iso(unix_nano: int) -> str:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(sort: str, values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([sort, *values])).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, kinds: tuple[type, ...]) -> list[Any]:
    """The position a cursor holds: one value of each kind in ``kinds`` (``float``: any number); it must
    come from the same sort."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidCursor("cursor: not a cursor returned by this API") from None
    if not (isinstance(decoded, list) and len(decoded) == len(kinds) + 1 and decoded[0] == sort):
        raise InvalidCursor("cursor: not a cursor of this list and sort order")
    values = decoded[1:]
    for value, kind in zip(values, kinds, strict=True):
        ok = isinstance(value, str) if kind is str else type(value) in (int, float) and abs(value) <= MAX_UNIX_NANO
        if not ok:
            raise InvalidCursor("cursor: not a cursor returned by this API")
    return values


def _after(keys: list[sa.ColumnElement[Any]], values: list[Any], descending: bool) -> sa.ColumnElement[bool]:
    """Rows strictly after ``values`` in the lexicographic order of ``keys``."""
    beyond = (lambda k, v: k < v) if descending else (lambda k, v: k > v)
    condition = beyond(keys[-1], values[-1])
    for key, value in zip(reversed(keys[:-1]), reversed(values[:-1]), strict=True):
        condition = sa.or_(beyond(key, value), sa.and_(key == value, condition))
    return condition


async def _keyset_page(
    engine: AsyncEngine,
    query: sa.Select[Any],
    sort_key: sa.ColumnElement[Any],
    ids: list[sa.Column[Any]],
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``query`` ordered by ``sort_key`` (``-`` in ``sort``: descending), then the ``ids``."""
    descending = sort.startswith("-")
    keys = [sort_key, *ids]
    labelled = query.add_columns(sort_key.label("_sort_value"))
    if cursor:
        labelled = labelled.where(_after(keys, decode_cursor(cursor, sort, (float, *(str for _ in ids))), descending))
    order = [key.desc() if descending else key.asc() for key in keys]
    limit = max(1, min(limit, MAX_PAGE))
    async with engine.connect() as conn:
        rows = (await conn.execute(labelled.order_by(*order).limit(limit + 1))).mappings().all()
    page = [as_dict(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(sort, [last["_sort_value"], *(last[column.name] for column in ids)])
    for row in page:
        del row["_sort_value"]
    return page, next_cursor


def as_dict(row: sa.RowMapping) -> dict[str, Any]:
    """A trace or span row for output: its columns plus ISO times and the total of its token buckets."""
    out = dict(row)
    out["start_time"] = iso(row["start_time_unix_nano"])
    out["end_time"] = iso(row["end_time_unix_nano"])
    out["total_tokens"] = _total_tokens(row)
    return out


def _total_tokens(row: Any) -> int | None:
    values = [row[name] for name in TOKEN_COLUMNS if row[name] is not None]
    return sum(values) if values else None


async def list_traces(
    engine: AsyncEngine,
    project_id: str,
    flt: SpanFilter,
    sort: str = "-start_time",
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Traces matching ``flt`` in ``sort`` order, a page at a time (keyset pagination: a cursor is the
    last row's sort value and id, so pages stay stable while new traces arrive)."""
    sort_key = TRACE_SORTS[sort.removeprefix("-")]
    few = await _few_traces(engine, project_id, flt)
    conditions: list[sa.ColumnElement[bool]] = []
    if few is not None:
        flt, trace_ids = few  # those traces meet the field that found them: no need to look again, span by span
        if not trace_ids:  # nothing has that user, session, model or service
            return [], None
        conditions.append(_t.trace_id.in_(trace_ids))
        sort_key = sort_key + 0  # fetch the few by id and sort them; walking the sort order to them reads many
    conditions += trace_conditions(flt, engine.dialect.name, sort_key)
    query = sa.select(traces_table).where(_t.project_id == project_id, *conditions)
    return await _keyset_page(engine, query, sort_key, [_t.trace_id], sort, limit, cursor)


FEW_TRACES = 1000
"""A filter on an indexed span column that selects spans of at most this many traces is looked up
through that index first; walking the traces in sort order to find them would read all of them."""


async def _few_traces(engine: AsyncEngine, project_id: str, flt: SpanFilter) -> tuple[SpanFilter, list[str]] | None:
    """The traces with a span of the filter's user, session, model or service, when there are few, and
    the filter without the field that found them."""
    indexed = [
        (_s.user_id, flt.user_id, replace(flt, user_id=None)),
        (_s.session_id, flt.session_id, replace(flt, session_id=None)),
        (_s.model, flt.model, replace(flt, model=None)),
        (_s.service_name, flt.service, replace(flt, service=None)),
    ]
    # On SQLite, DISTINCT of the bare trace_id lets the planner walk the primary key for its order and read
    # every span of the project (1.5 s on 1M spans) instead of the column's index (5 ms): hide the column.
    trace_id = _s.trace_id.concat("") if engine.dialect.name == "sqlite" else _s.trace_id
    for column, value, rest in indexed:
        if value is None:
            continue
        where = [_s.project_id == project_id, column == value]
        if flt.start_ns is not None:  # a trace's spans start no earlier than the trace
            where.append(_s.start_time_unix_nano >= flt.start_ns)
        query = sa.select(trace_id).where(*where).distinct().limit(FEW_TRACES + 1)
        async with engine.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
        if len(ids) <= FEW_TRACES:
            return rest, ids
    return None


async def list_spans(
    engine: AsyncEngine,
    project_id: str,
    flt: SpanFilter,
    sort: str = "-start_time",
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Spans matching ``flt``, without their attributes, events and messages (see :func:`get_span`)."""
    columns = [c for c in spans_table.columns if c.name not in HEAVY_SPAN_COLUMNS]
    query = sa.select(*columns).where(_s.project_id == project_id, *span_conditions(flt, engine.dialect.name))
    sort_key = SPAN_SORTS[sort.removeprefix("-")]
    return await _keyset_page(engine, query, sort_key, [_s.trace_id, _s.span_id], sort, limit, cursor)


async def get_span(engine: AsyncEngine, project_id: str, trace_id: str, span_id: str) -> dict[str, Any] | None:
    """One span with everything stored about it."""
    query = sa.select(spans_table).where(_s.project_id == project_id, _s.trace_id == trace_id, _s.span_id == span_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).mappings().first()
    return as_dict(row) if row else None


async def get_trace(engine: AsyncEngine, project_id: str, trace_id: str) -> dict[str, Any] | None:
    """The trace rollup with its spans as a tree (``children`` nested under their parents)."""
    t, s = traces_table.c, spans_table.c
    async with engine.connect() as conn:
        trace = (
            (await conn.execute(sa.select(traces_table).where(t.project_id == project_id, t.trace_id == trace_id)))
            .mappings()
            .first()
        )
        if trace is None:
            return None
        spans = (
            (
                await conn.execute(
                    sa.select(spans_table)
                    .where(s.project_id == project_id, s.trace_id == trace_id)
                    .order_by(s.start_time_unix_nano, s.span_id)
                )
            )
            .mappings()
            .all()
        )
    out = as_dict(trace)
    out["spans"] = span_tree([as_dict(span) for span in spans])
    return out


def span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest spans under their parents (``children``), in O(n) and without recursion.

    A span whose parent is missing, or whose ancestry loops back on itself, becomes a root; so does a
    span nested deeper than ``MAX_TREE_DEPTH`` (it keeps its ``parent_span_id``), which keeps the JSON
    of a pathological trace within what encoders and browsers handle.
    """
    by_id = {span["span_id"]: span for span in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    natural_roots = []
    for span in spans:
        span["children"] = []
        parent_id = span["parent_span_id"]
        if parent_id and parent_id in by_id and parent_id != span["span_id"]:
            children.setdefault(parent_id, []).append(span)
        else:
            natural_roots.append(span)
    roots: list[dict[str, Any]] = []
    placed: set[str] = set()

    def place(root: dict[str, Any]) -> None:
        placed.add(root["span_id"])
        roots.append(root)
        queue = deque([(root, 0)])
        while queue:
            node, depth = queue.popleft()
            for child in children.get(node["span_id"], ()):
                if child["span_id"] in placed:
                    continue
                placed.add(child["span_id"])
                if depth + 1 > MAX_TREE_DEPTH:
                    roots.append(child)
                    queue.append((child, 0))
                else:
                    node["children"].append(child)
                    queue.append((child, depth + 1))

    for span in natural_roots:
        place(span)
    for span in spans:  # spans on a parent loop were not reached from any root
        if span["span_id"] not in placed:
            place(span)
    return roots


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
