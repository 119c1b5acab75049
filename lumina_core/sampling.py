"""Sampling. Head samplers run in the worker on each extracted, priced batch before it is stored; tail
samplers judge whole traces from their stored spans once the traces are quiet, and delete the dropped
ones. Both count what they drop (``sampled_out``) in the transaction that drops it, and analytics add those
sums to the stored spans' (see ``storage.hours.summed_source``), so totals stay those of all the traffic.

Head sampling happens in the worker, not at intake as DESIGN §1 first drew it: counting dropped tokens
and cost needs the spans extracted and priced, which is the worker's work; intake stays thin.

Tail sampling stores every span first and deletes the dropped traces later, rather than holding spans in
memory for a decision window: "accept means durable" holds, and memory does not grow with the window or
the traffic. The price is writing spans that are then deleted; a span of a dropped trace arriving after
the decision starts a new trace that is judged on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.plugin_api import Sampler
from lumina_core.storage.database import JobLock, writing
from lumina_core.storage.hours import KEY_COLUMNS
from lumina_core.storage.models import MINUTE_NS, TOKEN_COLUMNS, sampled_out_table, spans_table, undecided_traces_table
from lumina_core.storage.writer import SpanWriter, add_sampled_out

log = logging.getLogger(__name__)

JUDGED_PER_ROUND = 500


def _sum(values: Iterable[Any]) -> Any:
    """SQL's SUM: ``None`` when every value is."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def dropped_sums(project_id: str, rows: Sequence[dict[str, Any]], sampler: str) -> list[dict[str, Any]]:
    """``sampled_out`` rows for dropped spans: summed per minute and ``span_hours`` dimensions. A trace is
    counted where its root span is; a call reported by several spans (one response id) counts once."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    responses: set[str] = set()
    for row in rows:
        counted = row["counted"] and row.get("response_id") not in responses
        if row.get("response_id"):
            responses.add(row["response_id"])
        slot = row["start_time_unix_nano"] // MINUTE_NS * MINUTE_NS
        key = tuple(counted if k == "counted" else row[k] for k in KEY_COLUMNS)
        groups.setdefault((slot, *key), []).append(row)
    out = []
    for (slot, *keys), spans in groups.items():
        starts = [s["start_time_unix_nano"] for s in spans]
        out.append(
            {
                "project_id": project_id,
                "slot_unix_nano": slot,
                **dict(zip(KEY_COLUMNS, keys, strict=True)),
                "requests": len(spans),
                "errors": sum(1 for s in spans if s["status"] == "error"),
                "cost_usd": _sum(s["cost_usd"] for s in spans),
                **{name: _sum(s[name] for s in spans) for name in TOKEN_COLUMNS},
                "first_seen_unix_nano": min(starts),
                "last_seen_unix_nano": max(starts),
                "traces": sum(1 for s in spans if s["parent_span_id"] is None),
                "sampler": sampler,
            }
        )
    return out


def by_trace(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Span rows grouped by trace id, in the order they came."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        traces.setdefault(row["trace_id"], []).append(row)
    return traces


def dropped_by(samplers: list[tuple[str, Sampler]], trace_id: str, spans: list[dict[str, Any]]) -> str | None:
    """The name of the first sampler that drops the trace, or ``None`` when all keep it. A sampler that
    fails keeps the trace (and the failure is logged): losing data to a bug is worse than storing it."""
    for name, sampler in samplers:
        try:
            if not sampler.keep(trace_id, spans):
                return name
        except Exception:
            log.exception("sampler %s failed on trace %s; keeping it", name, trace_id)
    return None


def batch_key(rows: Iterable[dict[str, Any]]) -> str:
    """The identity of a set of dropped spans, so that a batch delivered twice is counted once."""
    ids = sorted(f"{row['trace_id']}{row['span_id']}" for row in rows)
    return hashlib.sha256("".join(ids).encode()).hexdigest()


class HeadSampling:
    """The head samplers, over one batch's rows."""

    def __init__(self, samplers: list[tuple[str, Sampler]]) -> None:
        self.samplers = samplers

    def apply(
        self, project_id: str, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, list[dict[str, Any]]]]]:
        """The rows kept, and the ``sampled_out`` sums of those dropped under their batch key."""
        if not self.samplers:
            return rows, []
        kept: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        sums: list[dict[str, Any]] = []
        for trace_id, spans in by_trace(rows).items():
            sampler = dropped_by(self.samplers, trace_id, spans)
            if sampler is None:
                kept += spans
            else:
                dropped += spans
                sums += dropped_sums(project_id, spans, sampler)
        return kept, ([(f"{project_id}/{batch_key(dropped)}", sums)] if dropped else [])


class TailSampling:
    """Judges quiet traces (none of their spans written for ``wait_seconds``) with the tail samplers."""

    def __init__(
        self, engine: AsyncEngine, writer: SpanWriter, samplers: list[tuple[str, Sampler]], wait_seconds: float
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.samplers = samplers
        self.wait_seconds = wait_seconds

    async def run(self) -> None:
        """Judge quiet traces until cancelled; of processes sharing a PostgreSQL database, one judges."""
        lock = JobLock(self.engine, "tail-sampling")
        try:
            while True:
                await asyncio.sleep(min(max(self.wait_seconds / 4, 0.2), 5))
                try:
                    if await lock.held():
                        while await self.judge() == JUDGED_PER_ROUND:
                            pass
                except Exception:
                    log.exception("tail sampling failed")
        finally:
            await lock.release()

    async def judge(self, now_ns: int | None = None) -> int:
        """Judge the quiet traces (up to ``JUDGED_PER_ROUND``); returns how many were judged."""
        cutoff = (now_ns if now_ns is not None else time.time_ns()) - int(self.wait_seconds * 1e9)
        u, s = undecided_traces_table.c, spans_table.c
        async with self.engine.connect() as conn:
            due = (
                await conn.execute(
                    sa.select(u.project_id, u.trace_id, u.changed_unix_nano)
                    .where(u.changed_unix_nano < cutoff)
                    .order_by(u.changed_unix_nano)
                    .limit(JUDGED_PER_ROUND)
                )
            ).all()
            spans: dict[str, list[dict[str, Any]]] = {}
            for project_id in sorted({p for p, _, _ in due}):
                ids = [t for p, t, _ in due if p == project_id]
                query = sa.select(spans_table).where(s.project_id == project_id, s.trace_id.in_(ids))
                spans[project_id] = [dict(row) for row in (await conn.execute(query)).mappings()]
        for project_id, rows in spans.items():
            judged = {t: changed for p, t, changed in due if p == project_id}
            traces = by_trace(rows)
            verdicts = {t: dropped_by(self.samplers, t, trace) for t, trace in traces.items()}
            async with writing(self.engine) as conn:
                await self.writer.lock_traces(conn, project_id, sorted(judged))
                decided = set()
                for trace_id, changed in judged.items():  # a trace written to meanwhile stays, to be judged again
                    gone = await conn.execute(
                        sa.delete(undecided_traces_table).where(
                            u.project_id == project_id, u.trace_id == trace_id, u.changed_unix_nano == changed
                        )
                    )
                    if gone.rowcount:
                        decided.add(trace_id)
                dropped = {t: (sampler, traces[t]) for t in decided if (sampler := verdicts.get(t)) is not None}
                if dropped:
                    keys = [(r["trace_id"], r["span_id"]) for _, trace in dropped.values() for r in trace]
                    await self.writer.delete(conn, project_id, keys)
                    await add_sampled_out(
                        conn,
                        [
                            (f"{project_id}/{batch_key(trace)}", dropped_sums(project_id, trace, sampler))
                            for sampler, trace in dropped.values()
                        ],
                    )
        return len(due)


async def sampled_out_totals(engine: AsyncEngine, project_id: str, start_ns: int, end_ns: int) -> dict[str, int]:
    """What samplers dropped in a time range: spans and traces (for "sampled" notices)."""
    o = sampled_out_table.c
    async with engine.connect() as conn:
        spans, traces = (
            await conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(o.requests), 0), sa.func.coalesce(sa.func.sum(o.traces), 0)
                ).where(o.project_id == project_id, o.slot_unix_nano >= start_ns, o.slot_unix_nano < end_ns)
            )
        ).one()
    return {"spans": int(spans), "traces": int(traces)}
