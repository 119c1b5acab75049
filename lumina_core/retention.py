"""Retention: every day at 00:00 UTC (and on demand, ``lumina retention run``) the sweep archives, then
deletes, the spans older than their retention, in bounded batches with a rest between them so that ingest
goes on. Trace rollups, hourly sums and quality verdicts follow the deleted spans. ``import_archive`` loads
an archive back (idempotent: spans are upserted)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.config import RetentionSettings
from lumina_core.plugin_api import Archiver
from lumina_core.storage.database import JobLock, take_write_lock, writing
from lumina_core.storage.models import DAY_NS, projects_table, sampled_batches_table, sampled_out_table, spans_table
from lumina_core.storage.writer import SpanWriter

log = logging.getLogger(__name__)

MIN_BATCH_SPANS = 100

_s = spans_table.c


@dataclass
class ProjectSweep:
    """What a sweep did (or, dry, would do) in one project."""

    spans: int = 0
    traces: int = 0
    archives: set[str] = field(default_factory=set)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"spans": self.spans, "traces": self.traces, "archives": sorted(self.archives), "error": self.error}


def _day(start_ns: int) -> date:
    return datetime.fromtimestamp(start_ns / 1e9, UTC).date()


class SweepRunning(Exception):
    """Another process is sweeping this database now."""


class RetentionSweeper:
    """Archives, then deletes, what is older than its retention (per project, per service), one sweep at a
    time per database.

    Deletes go in batches sized so that each transaction takes about ``transaction_seconds`` (up to
    ``batch_spans`` spans), and after each the sweep rests at least as long as the transaction took: on
    SQLite, where a writer holds the database's one write lock, ingest waits for at most one short
    transaction and gets the lock at least half the time.
    """

    def __init__(
        self, engine: AsyncEngine, writer: SpanWriter, settings: RetentionSettings, archiver: Archiver | None
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.settings = settings
        self.archiver = archiver
        self._batch = min(MIN_BATCH_SPANS, settings.batch_spans)

    def expired(
        self, project_id: str, services: Iterable[str], now_ns: int, table: sa.Table = spans_table
    ) -> sa.ColumnElement[bool]:
        """Rows of the project (spans, or ``sampled_out`` sums) older than their service's retention (0
        days: never)."""

        def cutoff(days: int) -> int:
            return now_ns - days * DAY_NS if days else 0

        default = cutoff(self.settings.days_for(project_id))
        special = {svc: cutoff(self.settings.days_for(project_id, svc)) for svc in services}
        special = {svc: c for svc, c in special.items() if c != default}
        col = table.c
        limit = (
            sa.case(*((col.service_name == svc, at) for svc, at in special.items()), else_=default)
            if special
            else default
        )
        start = col.start_time_unix_nano if table is spans_table else col.slot_unix_nano
        return (col.project_id == project_id) & (start < limit)

    async def _projects(self) -> list[tuple[str, list[str]]]:
        """Every project with the services named in its settings (the others take the defaults)."""
        async with self.engine.connect() as conn:
            projects = set((await conn.execute(sa.select(projects_table.c.id))).scalars())
        projects |= set(self.settings.projects)
        named = set(self.settings.services)
        return [
            (p, sorted(named | set(self.settings.projects[p].services if p in self.settings.projects else ())))
            for p in sorted(projects)
        ]

    async def sweep(
        self, now_ns: int | None = None, *, dry_run: bool = False, project: str | None = None
    ) -> dict[str, ProjectSweep]:
        """Archive and delete (or, ``dry_run``, count) what is expired at ``now_ns``, project by project (or
        in ``project`` only). A project whose archiving fails keeps everything not yet archived; the others
        go on. Raises ``SweepRunning`` while another process sweeps (a dry run never waits)."""
        if dry_run:
            return await self._sweep(now_ns, dry_run=True, project=project)
        lock = JobLock(self.engine, "retention-sweep")
        if not await lock.held():
            raise SweepRunning("a retention sweep is already running on this database; try again when it ends")
        try:
            return await self._sweep(now_ns, dry_run=False, project=project)
        finally:
            await lock.release()

    async def _sweep(self, now_ns: int | None, *, dry_run: bool, project: str | None) -> dict[str, ProjectSweep]:
        now_ns = now_ns if now_ns is not None else time.time_ns()
        report: dict[str, ProjectSweep] = {}
        for project_id, services in await self._projects():
            if project is not None and project_id != project:
                continue
            where = self.expired(project_id, services, now_ns)
            done = report[project_id] = ProjectSweep()
            if dry_run:
                async with self.engine.connect() as conn:
                    query = sa.select(sa.func.count(), sa.func.count(sa.distinct(_s.trace_id))).where(where)
                    done.spans, done.traces = (await conn.execute(query)).one()
                continue
            try:
                while (held := await self._sweep_batch(project_id, where, done)) is not None:
                    await asyncio.sleep(max(self.settings.pause_seconds, held))
                sums = self.expired(project_id, services, now_ns, sampled_out_table)
                async with writing(self.engine) as conn:  # what samplers dropped then goes too
                    await conn.execute(sa.delete(sampled_out_table).where(sums))
            except Exception as exc:
                done.error = f"{exc.__class__.__name__}: {exc}"
                log.exception("retention sweep of project %s stopped; what was not archived is kept", project_id)
        if not dry_run:
            async with writing(self.engine) as conn:  # a batch is redelivered within minutes, not days
                b = sampled_batches_table.c
                await conn.execute(sa.delete(sampled_batches_table).where(b.created_unix_nano < now_ns - DAY_NS))
        return {p: r for p, r in report.items() if r.spans or r.error}

    async def _sweep_batch(self, project_id: str, where: sa.ColumnElement[bool], done: ProjectSweep) -> float | None:
        """Archive and delete the oldest batch of expired spans; returns how long the delete transaction
        took, or None when no more are left."""
        size = self._batch
        async with self.engine.connect() as conn:
            query = sa.select(spans_table).where(where).order_by(_s.start_time_unix_nano).limit(size)
            rows = [dict(row) for row in (await conn.execute(query)).mappings()]
        if not rows:
            return None
        if self.archiver is not None:
            by_day: dict[date, list[dict[str, Any]]] = {}
            for row in rows:
                by_day.setdefault(_day(row["start_time_unix_nano"]), []).append(row)
            for day, spans in sorted(by_day.items()):
                done.archives.add(await self.archiver.archive(project_id, day, spans))
        keys = [(row["trace_id"], row["span_id"]) for row in rows]
        async with writing(self.engine) as conn:
            await take_write_lock(conn)  # timed from here: waiting for ingest's writes is not the sweep's own
            started = time.perf_counter()
            done.traces += await self.writer.delete(conn, project_id, keys)
        held = time.perf_counter() - started
        done.spans += len(rows)
        scale = min(2.0, self.settings.transaction_seconds / max(held, 0.001))
        most = self.settings.batch_spans
        self._batch = max(min(MIN_BATCH_SPANS, most), min(most, int(size * scale)))
        return held if len(rows) == size else None

    @staticmethod
    def next_sweep(now: datetime) -> datetime:
        return datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)

    async def run(self) -> None:
        """Sweep every day at 00:00 UTC; of processes sharing a PostgreSQL database, one sweeps."""
        while True:
            now = datetime.now(UTC)
            await asyncio.sleep((self.next_sweep(now) - now).total_seconds())
            try:
                report = await self.sweep()
                log.info("retention sweep: %s", {p: r.as_dict() for p, r in report.items()})
            except SweepRunning:
                log.info("retention sweep: another process sweeps today")
            except Exception:
                log.exception("retention sweep failed")


async def import_archive(writer: SpanWriter, chunks: Iterable[list[dict[str, Any]]]) -> int:
    """Store archived span rows again (upserted: importing twice changes nothing); returns how many."""
    count = 0
    for rows in chunks:
        await writer.write(writer.prepare(rows))
        count += len(rows)
    return count


def read_archive(archivers: Iterable[Archiver], path: Path) -> Iterable[list[dict[str, Any]]]:
    """The rows of ``path``, read by the first archiver that knows its kind of file."""
    for archiver in archivers:
        chunks = archiver.read(path)
        if chunks is not None:
            return chunks
    raise ValueError(f"no archiver reads {path.name} (a JSON Lines archive ends in .jsonl.gz)")
