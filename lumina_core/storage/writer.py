"""The hot write path: idempotent bulk upsert of span rows, then trace rollups recomputed in SQL."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumina_core.storage.bulk import BulkStatement, Statements
from lumina_core.storage.database import dialect_insert, json_dumps, writing
from lumina_core.storage.filters import span_keys
from lumina_core.storage.hours import mark_stale
from lumina_core.storage.models import (
    TOKEN_COLUMNS,
    quality_results_table,
    sampled_batches_table,
    sampled_out_table,
    spans_table,
    traces_table,
    undecided_traces_table,
)
from lumina_core.storage.projects import bump_data_version

ROLLUP_CHUNK = 500
spans_twin = spans_table.alias("twin")
_STATUS_RANK = {"ok": 0, "degraded": 1, "error": 2}


def upsert(table: sa.Table, dialect: str) -> Any:
    """``INSERT … ON CONFLICT (primary key) DO UPDATE`` every other column."""
    stmt = dialect_insert(dialect, table)
    keys = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )


def _trace_rollup(dialect: str) -> Any:
    """``INSERT INTO traces SELECT … FROM spans GROUP BY trace`` for the traces a batch touched.

    Recomputing from ``spans`` (rather than adding increments) keeps rollups right when spans of one
    trace arrive in several batches or are delivered twice.
    """
    s = spans_table.c
    is_root = s.parent_span_id.is_(None)
    rank = sa.case(*((s.status == status, n) for status, n in _STATUS_RANK.items()), else_=0)
    worst = sa.func.max(rank)
    columns = {
        "project_id": s.project_id,
        "trace_id": s.trace_id,
        "root_span_id": sa.func.max(sa.case((is_root, s.span_id))),
        "name": sa.func.coalesce(sa.func.max(sa.case((is_root, s.name))), sa.func.min(s.name)),
        "service_name": sa.func.coalesce(sa.func.max(sa.case((is_root, s.service_name))), sa.func.min(s.service_name)),
        "start_time_unix_nano": sa.func.min(s.start_time_unix_nano),
        "end_time_unix_nano": sa.func.max(s.end_time_unix_nano),
        "duration_ms": sa.cast(sa.func.max(s.end_time_unix_nano) - sa.func.min(s.start_time_unix_nano), sa.Float) / 1e6,
        "span_count": sa.func.count(),
        "llm_span_count": sa.func.sum(sa.case((s.is_llm, 1), else_=0)),
        "error_count": sa.func.sum(sa.case((s.status == "error", 1), else_=0)),
        "status": sa.case((worst == 2, "error"), (worst == 1, "degraded"), else_="ok"),
        # a call reported twice (same response id) is summed once: only its counted report adds up
        **{name: sa.func.sum(sa.case((s.counted, s[name]))) for name in (*TOKEN_COLUMNS, "cost_usd")},
    }
    select = (
        sa.select(*(expr.label(name) for name, expr in columns.items()))
        .where(s.project_id == sa.bindparam("project_id"))
        .where(s.trace_id.in_(sa.bindparam("trace_ids", expanding=True)))
        .group_by(s.project_id, s.trace_id)
    )
    stmt = dialect_insert(dialect, traces_table).from_select(list(columns), select)
    keys = ["project_id", "trace_id"]
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in columns if name not in keys}
    )


@dataclass
class PreparedRows:
    """Span rows ready for the driver: (statement, parameter rows) pairs, and what they touch."""

    count: int
    statements: Statements = field(default_factory=list)
    touched: dict[str, set[str]] = field(default_factory=dict)
    response_ids: dict[str, set[str]] = field(default_factory=dict)
    sampled_out: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    """Sums of the spans a head sampler dropped, under the key of what was dropped (stored in the same
    transaction, once however often the batch is delivered)."""


class SpanWriter:
    """Writes span rows and their trace rollups in one transaction per call.

    Span rows go to the driver as tuples through one pre-compiled upsert (:class:`BulkStatement`), with
    JSON columns serialised here.
    """

    def __init__(self, engine: AsyncEngine, *, track_undecided: bool = False) -> None:
        self.engine = engine
        self.track_undecided = track_undecided
        """List every written trace in ``undecided_traces`` (when tail samplers run)."""
        dialect = engine.dialect.name
        self._spans = BulkStatement(upsert(spans_table, dialect), engine.dialect)
        self._span_columns = self._spans.columns
        json_columns = {c.name for c in spans_table.columns if isinstance(c.type, sa.JSON)}
        self._json_positions = tuple(i for i, name in enumerate(self._span_columns) if name in json_columns)
        self._resource_position = self._span_columns.index("resource_attributes")
        self._rollup_traces = _trace_rollup(dialect)
        self._strip_nul = dialect == "postgresql"  # PostgreSQL text cannot hold NUL characters

    def prepare(
        self, rows: Sequence[dict[str, Any]], sampled_out: list[tuple[str, list[dict[str, Any]]]] | None = None
    ) -> PreparedRows:
        """Turn span rows into driver parameters (pure CPU: the worker runs it off the event loop)."""
        prepared = PreparedRows(count=len(rows), sampled_out=sampled_out or [])
        for row in rows:
            prepared.touched.setdefault(row["project_id"], set()).add(row["trace_id"])
            if row["response_id"]:
                prepared.response_ids.setdefault(row["project_id"], set()).add(row["response_id"])
        prepared.statements = self._spans.statements(self._span_tuples(rows))
        return prepared

    def _span_tuples(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        resource_json: dict[int, str] = {}  # one resource dict is shared by all spans of a resource
        out = []
        for row in rows:
            values = [row[name] for name in self._span_columns]
            for i in self._json_positions:
                value = values[i]
                if value is None:
                    continue
                if i == self._resource_position:
                    text = resource_json.get(id(value))
                    if text is None:
                        text = resource_json[id(value)] = json_dumps(value)
                    values[i] = text
                else:
                    values[i] = json_dumps(value)
            if self._strip_nul:
                values = [v.replace("\x00", "\ufffd") if type(v) is str and "\x00" in v else v for v in values]
            out.append(tuple(values))
        return out

    async def write(self, *batches: PreparedRows) -> None:
        """Upsert the prepared spans and refresh the rollup of every trace they touch, in one transaction."""
        touched: dict[str, set[str]] = {}
        response_ids: dict[str, set[str]] = {}
        for batch in batches:
            for project_id, ids in batch.touched.items():
                touched.setdefault(project_id, set()).update(ids)
            for project_id, ids in batch.response_ids.items():
                response_ids.setdefault(project_id, set()).update(ids)
        sampled_out = [dropped for batch in batches for dropped in batch.sampled_out]
        if not touched and not sampled_out:
            return
        async with writing(self.engine) as conn:
            for batch in batches:
                for sql, params in batch.statements:
                    await conn.exec_driver_sql(sql, params)
            for project_id, ids in response_ids.items():
                touched[project_id] |= await self._count_each_call_once(conn, project_id, ids)
            for project_id, trace_ids in sorted(touched.items()):  # one lock order across writers
                await self.refresh_rollups(conn, project_id, trace_ids)
            for project_id in sorted(await add_sampled_out(conn, sampled_out) - set(touched)):
                await bump_data_version(conn, project_id)  # totals changed, though no span was stored
            if self.track_undecided:
                await self._list_undecided(conn, touched)

    async def _list_undecided(self, conn: AsyncConnection, touched: dict[str, set[str]]) -> None:
        now = time.time_ns()
        rows = [{"project_id": p, "trace_id": t, "changed_unix_nano": now} for p, ids in touched.items() for t in ids]
        if rows:
            stmt = dialect_insert(conn.dialect.name, undecided_traces_table)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["project_id", "trace_id"],
                    set_={"changed_unix_nano": stmt.excluded.changed_unix_nano},
                ),
                rows,
            )

    async def delete(self, conn: AsyncConnection, project_id: str, keys: Sequence[tuple[str, str]]) -> int:
        """Delete these spans (``(trace_id, span_id)``) and their quality verdicts, inside ``conn``'s
        transaction; their hours turn stale and their traces' rollups follow (a trace left without spans
        goes). Returns how many traces went."""
        trace_ids = sorted({trace_id for trace_id, _ in keys})
        await self.lock_traces(conn, project_id, trace_ids)  # first, as writers do: no deadlock between them
        for i in range(0, len(trace_ids), ROLLUP_CHUNK):
            await mark_stale(conn, project_id, trace_ids[i : i + ROLLUP_CHUNK])  # while the spans are still there
        for table in (spans_table, quality_results_table):
            c = table.c
            for i in range(0, len(keys), ROLLUP_CHUNK):
                chunk = list(keys[i : i + ROLLUP_CHUNK])
                await conn.execute(sa.delete(table).where(span_keys(c, project_id, chunk)))
        await self.refresh_rollups(conn, project_id, trace_ids)
        s, t = spans_table.c, traces_table.c
        empty = ~sa.exists().where(s.project_id == t.project_id, s.trace_id == t.trace_id)
        gone = 0
        for i in range(0, len(trace_ids), ROLLUP_CHUNK):
            result = await conn.execute(
                sa.delete(traces_table).where(
                    t.project_id == project_id, t.trace_id.in_(trace_ids[i : i + ROLLUP_CHUNK]), empty
                )
            )
            gone += result.rowcount or 0
        return gone

    async def lock_traces(self, conn: AsyncConnection, project_id: str, trace_ids: Iterable[str]) -> None:
        """On PostgreSQL, hold a transaction lock per trace before its rollup is recomputed.

        Otherwise two transactions writing spans of one trace each compute the rollup from a snapshot
        without the other's spans, and the later one overwrites the earlier with a short count. After
        the lock, the rollup statement sees whatever the previous holder committed. (SQLite runs one
        writer at a time and needs nothing.)
        """
        if self.engine.dialect.name != "postgresql":
            return
        keys = sorted(f"{project_id}/{trace_id}" for trace_id in trace_ids)  # one order: no deadlocks
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k"),
            {"keys": keys},
        )

    async def refresh_rollups(self, conn: AsyncConnection, project_id: str, trace_ids: Iterable[str]) -> None:
        """Recompute the ``traces`` rows of these traces from their spans (holding their locks), mark the
        hours of their spans stale, and raise the project's data version so that cached query results
        are recomputed."""
        ids = sorted(trace_ids)
        await self.lock_traces(conn, project_id, ids)
        for i in range(0, len(ids), ROLLUP_CHUNK):
            chunk = ids[i : i + ROLLUP_CHUNK]
            await conn.execute(self._rollup_traces, {"project_id": project_id, "trace_ids": chunk})
            await mark_stale(conn, project_id, chunk)
        await bump_data_version(conn, project_id)

    async def _count_each_call_once(self, conn: AsyncConnection, project_id: str, response_ids: set[str]) -> set[str]:
        """Where several spans report one call (same response id), only the earliest report stays
        ``counted`` (ties broken by span id). Returns the traces whose spans were re-marked, which may
        lie outside this batch."""
        s = spans_table.c
        ids = sorted(response_ids)
        shared: list[str] = []
        for i in range(0, len(ids), ROLLUP_CHUNK):
            shared += (
                await conn.execute(
                    sa.select(s.response_id)
                    .where(s.project_id == project_id, s.response_id.in_(ids[i : i + ROLLUP_CHUNK]))
                    .group_by(s.response_id)
                    .having(sa.func.count() > 1)
                )
            ).scalars()
        if not shared:
            return set()
        twin = spans_twin.c
        earlier_report = sa.exists().where(
            twin.project_id == s.project_id,
            twin.response_id == s.response_id,
            sa.or_(
                twin.start_time_unix_nano < s.start_time_unix_nano,
                sa.and_(twin.start_time_unix_nano == s.start_time_unix_nano, twin.span_id < s.span_id),
            ),
        )
        scope = (s.project_id == project_id) & s.response_id.in_(shared)
        await conn.execute(sa.update(spans_table).where(scope).values(counted=~earlier_report))
        return set((await conn.execute(sa.select(s.trace_id).where(scope).distinct())).scalars())


async def add_sampled_out(conn: AsyncConnection, dropped: Sequence[tuple[str, list[dict[str, Any]]]]) -> set[str]:
    """Add the sums of dropped spans to ``sampled_out``, each under its key only once (a batch delivered
    again is not counted again); returns the projects whose totals changed."""
    changed: set[str] = set()
    now = time.time_ns()
    for key, rows in dropped:
        stmt = dialect_insert(conn.dialect.name, sampled_batches_table).values(batch_key=key, created_unix_nano=now)
        if rows and (await conn.execute(stmt.on_conflict_do_nothing())).rowcount:
            await conn.execute(sa.insert(sampled_out_table), rows)
            changed |= {row["project_id"] for row in rows}
    return changed
