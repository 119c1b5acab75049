"""The daily trace limit: which traces of a project intake admits on a UTC day, counted atomically across
requests and processes (one transaction per admission holds the day's usage row)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.plugin_api import QueueUnavailable
from lumina_core.storage.database import dialect_insert, writing
from lumina_core.storage.models import daily_traces_table, daily_usage_table

log = logging.getLogger(__name__)

CHUNK = 500
WAIT_SECONDS = 2.0
"""How long an admission waits for SQLite's write lock (held by the worker, a sweep …) before intake
answers 503 / ``UNAVAILABLE``: a stuck database must not hold exporters' requests open."""
_u, _t = daily_usage_table.c, daily_traces_table.c


@dataclass(frozen=True)
class Admission:
    admitted: set[str]
    refused_spans: int
    limit: int


class DailyLimiter:
    """Admits each new trace of a project while the day's count is under the limit; spans of a trace
    admitted earlier that day are always admitted. ``clock`` (Unix seconds) picks the UTC day."""

    def __init__(self, engine: AsyncEngine, limit_of: Callable[[str], int], clock: Callable[[], float] = time.time):
        self.engine = engine
        self.limit_of = limit_of
        self.clock = clock
        self._cleaned_day = ""

    def today(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).date().isoformat()

    async def admit(self, project_id: str, spans_by_trace: Mapping[str, int]) -> Admission:
        """The traces to take; the others are over the limit. If the database cannot be reached the
        traces are let in (logged): a limit is for cost, not worth refusing data during an outage. If it
        is busy for longer than ``WAIT_SECONDS``, raises ``QueueUnavailable``: the exporter retries."""
        limit = self.limit_of(project_id)
        if not limit:
            return Admission(set(spans_by_trace), 0, 0)
        day = self.today()
        try:
            return await self._admit(project_id, day, spans_by_trace, limit)
        except TimeoutError as exc:
            raise QueueUnavailable("the database is busy; the daily trace limit could not be checked") from exc
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "daily limit of project %s not checked (%s); admitting %d traces", project_id, exc, len(spans_by_trace)
            )
            return Admission(set(spans_by_trace), 0, limit)

    async def _admit(self, project_id: str, day: str, spans_by_trace: Mapping[str, int], limit: int) -> Admission:
        ids = sorted(spans_by_trace)
        async with writing(self.engine, wait_seconds=WAIT_SECONDS) as conn:
            dialect = conn.dialect.name
            if day != self._cleaned_day:  # the first admission of a day forgets the traces of earlier days
                await conn.execute(sa.delete(daily_traces_table).where(_t.day < day))
                self._cleaned_day = day
            row = {"project_id": project_id, "day": day, "traces": 0, "refused_traces": 0, "refused_spans": 0}
            await conn.execute(dialect_insert(dialect, daily_usage_table).values(row).on_conflict_do_nothing())
            usage = sa.select(_u.traces).where(_u.project_id == project_id, _u.day == day)
            if dialect == "postgresql":
                usage = usage.with_for_update()  # concurrent admissions of this project and day take turns
            count = (await conn.execute(usage)).scalar_one()
            known: set[str] = set()
            for i in range(0, len(ids), CHUNK):
                query = sa.select(_t.trace_id).where(
                    _t.project_id == project_id, _t.day == day, _t.trace_id.in_(ids[i : i + CHUNK])
                )
                known.update((await conn.execute(query)).scalars())
            new = [trace_id for trace_id in ids if trace_id not in known]
            room = max(limit - count, 0)
            taken, refused = new[:room], new[room:]
            if taken:
                await conn.execute(
                    sa.insert(daily_traces_table),
                    [{"project_id": project_id, "day": day, "trace_id": t} for t in taken],
                )
            refused_spans = sum(spans_by_trace[t] for t in refused)
            await conn.execute(
                sa.update(daily_usage_table)
                .where(_u.project_id == project_id, _u.day == day)
                .values(
                    traces=_u.traces + len(taken),
                    refused_traces=_u.refused_traces + len(refused),
                    refused_spans=_u.refused_spans + refused_spans,
                )
            )
        return Admission(known | set(taken), refused_spans, limit)


async def daily_usage(engine: AsyncEngine, project_id: str, days: int = 7) -> list[dict[str, Any]]:
    """The project's admitted and refused traces of its last ``days`` days with any, newest first."""
    async with engine.connect() as conn:
        query = sa.select(daily_usage_table).where(_u.project_id == project_id).order_by(_u.day.desc()).limit(days)
        return [dict(row) for row in (await conn.execute(query)).mappings()]
