"""Read queries shared by the REST API and the dashboard; the only place that selects from storage."""

from __future__ import annotations

import base64
import binascii
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage.models import TOKEN_COLUMNS, spans_table, traces_table

MAX_PAGE = 500
MAX_TREE_DEPTH = 64
MAX_UNIX_NANO = 2**63 - 1


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class TraceFilter:
    """Filters of the trace list. ``service`` and ``model`` match any span of the trace."""

    service: str | None = None
    model: str | None = None
    status: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None


def iso(unix_nano: int) -> str:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(start_ns: int, trace_id: str) -> str:
    return base64.urlsafe_b64encode(f"{start_ns}:{trace_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        start, trace_id = text.split(":", 1)
        if not (start.isascii() and start.isdecimal() and int(start) <= MAX_UNIX_NANO):
            raise ValueError(start)
        return int(start), trace_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("invalid cursor") from None


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
    engine: AsyncEngine, project_id: str, flt: TraceFilter, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Traces newest first, with keyset pagination: the cursor is the last (start time, trace id) seen."""
    t, s = traces_table.c, spans_table.c
    query = sa.select(traces_table).where(t.project_id == project_id)
    if flt.status:
        query = query.where(t.status == flt.status)
    if flt.start_ns is not None:
        query = query.where(t.start_time_unix_nano >= flt.start_ns)
    if flt.end_ns is not None:
        query = query.where(t.start_time_unix_nano < flt.end_ns)
    for column, value in ((s.service_name, flt.service), (s.model, flt.model)):
        if value:
            query = query.where(
                sa.exists().where(s.project_id == t.project_id, s.trace_id == t.trace_id, column == value)
            )
    if cursor:
        start, trace_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                t.start_time_unix_nano < start,
                sa.and_(t.start_time_unix_nano == start, t.trace_id < trace_id),
            )
        )
    limit = max(1, min(limit, MAX_PAGE))
    query = query.order_by(t.start_time_unix_nano.desc(), t.trace_id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    page = [as_dict(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last["start_time_unix_nano"], last["trace_id"])
    return page, next_cursor


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


async def unpriced_models(engine: AsyncEngine, project_id: str) -> list[dict[str, Any]]:
    """Models seen on LLM spans that no pricing rule knows, with span counts and token totals."""
    s = spans_table.c
    query = (
        sa.select(
            s.provider,
            s.model,
            sa.func.count().label("span_count"),
            *(sa.cast(sa.func.sum(s[name]), sa.BigInteger).label(name) for name in TOKEN_COLUMNS),
            sa.func.min(s.start_time_unix_nano).label("first_seen_unix_nano"),
            sa.func.max(s.start_time_unix_nano).label("last_seen_unix_nano"),
        )
        .where(s.project_id == project_id, s.pricing_status == "unpriced")
        .group_by(s.provider, s.model)
        .order_by(sa.func.count().desc(), s.model)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        item["first_seen"] = iso(row["first_seen_unix_nano"])
        item["last_seen"] = iso(row["last_seen_unix_nano"])
        out.append(item)
    return out
