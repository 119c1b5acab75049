"""Quality monitoring: each LLM response is compared with the baseline responses of its prompt.

A prompt *fingerprint* (service, span name, model, normalised input) says which calls are alike; only
those are compared. The first ``quality.baseline_size`` responses of a fingerprint become its baselines,
unless an operator pins one (``POST /api/v1/quality/baselines``, ``lumina quality pin``). Detectors score
a response against the baselines in the monitor's own tasks, after the worker stored the batch (inline
detectors first, then the deferred ones), so neither exporters nor the worker wait for them. A span's
quality is the best score its service's detectors gave; under ``degraded_below`` an ``ok`` span turns
``degraded`` (and its trace's rollup follows).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumina_core.config import QualitySettings
from lumina_core.plugin_api import Detector
from lumina_core.storage import queries
from lumina_core.storage.bulk import BulkStatement
from lumina_core.storage.database import writing
from lumina_core.storage.filters import span_keys
from lumina_core.storage.models import projects_table, quality_baselines_table, quality_results_table, spans_table
from lumina_core.storage.writer import SpanWriter, upsert

log = logging.getLogger(__name__)
CHUNK = 500
MATCH = 1 - 1e-6
"""A score this close to 1 is a match (a unit vector's cosine with itself can round just under 1)."""
MAX_PENDING_BATCHES = 1000
"""Batches waiting for deferred detectors; beyond it a batch is left unchecked (and logged)."""
MAX_WAITING_CALLS = 200_000
"""Stored calls waiting for their checks; beyond it new ones are left unchecked (logged, counted)."""
COALESCE_CALLS = 1_000
"""Waiting calls checked together, in one pass of reads and writes."""
BASELINE_CACHE_SIZE = 50_000
"""Fingerprints whose active baselines a process remembers; a pin anywhere (``projects.baselines_version``)
makes it read them again."""


@dataclass(frozen=True, slots=True)
class Call:
    """An LLM response to check, as the worker stored it."""

    project_id: str
    trace_id: str
    span_id: str
    service_name: str
    span_name: str
    start_unix_nano: int
    fingerprint: str
    output: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.project_id, self.trace_id, self.span_id


Scores = dict[tuple[str, str, str], float]
"""The best score any detector gave each call, by (project, trace, span)."""


@dataclass(frozen=True, slots=True)
class Baseline:
    id: int
    output: str
    pinned: bool


@dataclass(frozen=True, slots=True)
class Judged:
    """A call with the baselines it is compared against; ``became`` is its own id if it became one."""

    call: Call
    baselines: tuple[Baseline, ...]
    became: int | None = None


def prompt_fingerprint(span: dict[str, Any]) -> str:
    """SHA-256 of what makes two calls alike: service, span name, model, and the input (messages,
    system prompt, tools) as the extractors normalised it."""
    parameters = span.get("invocation_parameters") or {}
    tools = parameters.get("tools") if isinstance(parameters, dict) else None
    key = [span["service_name"], span["name"], span["model"], span["input_messages"], span["system_prompt"], tools]
    return hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def output_text(span: dict[str, Any]) -> str | None:
    """The response's text: the output messages' contents, one per line; ``None`` when there is none."""
    parts = []
    for message in span.get("output_messages") or ():
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            parts.append(orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=str).decode())
        if isinstance(message, dict) and message.get("tool_calls"):
            parts.append(orjson.dumps(message["tool_calls"], option=orjson.OPT_SORT_KEYS, default=str).decode())
    return "\n".join(parts) if parts else None


def call_of(project_id: str, span: dict[str, Any]) -> Call | None:
    """The call to check in a span row, or ``None`` for spans that are not LLM responses (or whose
    content cannot be fingerprinted: nested deeper than JSON encoders go)."""
    if not span["is_llm"]:
        return None
    try:
        output = output_text(span)
        fingerprint = prompt_fingerprint(span) if output is not None else None
    except (orjson.JSONEncodeError, RecursionError, TypeError):
        log.warning(
            "span %s/%s is not checked for quality: its messages cannot be encoded", span["trace_id"], span["span_id"]
        )
        return None
    if output is None or fingerprint is None:
        return None
    return Call(
        project_id,
        span["trace_id"],
        span["span_id"],
        _text(span["service_name"]),
        _text(span["name"]),
        span["start_time_unix_nano"],
        fingerprint,
        _text(output),
    )


def _text(value: str) -> str:
    """Text PostgreSQL can store (it refuses NUL characters)."""
    return value.replace("\x00", "\ufffd")


class QualityMonitor:
    """Assigns baselines, runs the detectors and stores their verdicts (and degraded statuses)."""

    def __init__(
        self, engine: AsyncEngine, writer: SpanWriter, settings: QualitySettings, detectors: dict[str, Detector]
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.settings = settings
        self.inline = {name: d for name, d in detectors.items() if d.mode == "inline"}
        self.deferred = {name: d for name, d in detectors.items() if d.mode == "deferred"}
        self._pending: asyncio.Queue[tuple[list[Judged], Scores]] = asyncio.Queue(MAX_PENDING_BATCHES)
        self._cache: OrderedDict[tuple[str, str], list[Baseline]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._upsert_results = BulkStatement(upsert(quality_results_table, engine.dialect.name), engine.dialect)
        columns = [c for c in quality_baselines_table.columns if c.name != "id"]
        insert = sa.insert(quality_baselines_table).values({c: sa.bindparam(c.name) for c in columns})
        self._insert_baselines_bulk = BulkStatement(insert, engine.dialect)
        self._stored: asyncio.Queue[list[Call]] = asyncio.Queue()
        self._waiting = 0
        self._deferred_waiting = 0
        self.checked = 0
        self.skipped = 0

    def checks(self, service: str) -> bool:
        """Whether any detector runs on ``service``'s calls."""
        return bool(self.settings.for_service(service)[0])

    def submit(self, calls: list[Call]) -> None:
        """Queue a stored batch's calls for checking; never waits (the worker calls it)."""
        if not calls:
            return
        if self._waiting + len(calls) > MAX_WAITING_CALLS:
            self.skipped += len(calls)
            log.warning("quality checks are behind: %d calls left unchecked", len(calls))
            return
        self._waiting += len(calls)
        self._stored.put_nowait(calls)

    async def run(self) -> None:
        """The background task of the inline detectors: whatever calls are waiting, checked together."""
        while True:
            calls = list(await self._stored.get())
            while not self._stored.empty() and len(calls) < COALESCE_CALLS:
                calls += self._stored.get_nowait()
            self._waiting -= len(calls)
            try:
                await self.check(calls)
            except Exception:
                log.exception("quality checks of %d calls failed", len(calls))

    async def check(self, calls: list[Call]) -> None:
        """Baselines and inline detectors now; the deferred detectors' turn is queued."""
        judged = await self._assign_baselines(calls)
        best = await self._run(judged, self.inline, {})
        if self.deferred:
            try:
                if self._deferred_waiting + len(judged) > MAX_WAITING_CALLS:
                    raise asyncio.QueueFull
                self._pending.put_nowait((judged, best))
                self._deferred_waiting += len(judged)
            except asyncio.QueueFull:
                self.skipped += len(judged)
                log.warning("deferred quality checks are behind: %d calls left unchecked", len(judged))

    async def run_deferred(self) -> None:
        """The background task of the deferred detectors."""
        while True:
            judged, best = await self._pending.get()
            self._deferred_waiting -= len(judged)
            try:
                await self._run(judged, self.deferred, best)
            except Exception:
                log.exception("deferred quality checks of %d calls failed", len(judged))

    def pending(self) -> int:
        """Calls waiting for a check (inline, or deferred)."""
        return self._waiting + self._deferred_waiting

    async def _assign_baselines(self, calls: list[Call]) -> list[Judged]:
        """Each call with its fingerprint's active baselines; the first ones of a new fingerprint become
        baselines themselves (until ``baseline_size`` are active, or one is pinned)."""
        keys = sorted({(c.project_id, c.fingerprint) for c in calls})
        active = await self._active_baselines(keys)
        plan: list[tuple[Call, list[Baseline | Call], bool]] = []
        for call in calls:
            known = active[(call.project_id, call.fingerprint)]
            if any(isinstance(x, Baseline) and x.pinned for x in known) or len(known) >= self.settings.baseline_size:
                plan.append((call, list(known), False))
            else:
                known.append(call)  # a baseline from now on, once stored
                plan.append((call, [], True))
        new = [call for call, _, becomes in plan if becomes]
        ids: dict[tuple[str, str, str], int] = {}
        if new:
            ids = await self._insert_baselines(new)
        for key in keys:  # remember them, with the ids they got
            self._cache[key] = [_as_baseline(x, ids) for x in active[key]]
        while len(self._cache) > BASELINE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return [
            Judged(call, tuple(_as_baseline(x, ids) for x in known), became=ids[call.key] if becomes else None)
            for call, known, becomes in plan
        ]

    async def _insert_baselines(self, calls: list[Call]) -> dict[tuple[str, str, str], int]:
        """Store new baselines in bulk, then read back the ids they got:
        ``INSERT … RETURNING`` goes row by row through aiosqlite, 300 us a row."""
        now = time.time_ns()
        bulk = self._insert_baselines_bulk
        rows = [_baseline_row(c, pinned=False, now=now) for c in calls]
        b = quality_baselines_table.c
        ids: dict[tuple[str, str, str], int] = {}
        async with writing(self.engine) as conn:
            await bulk.execute(conn, [tuple(row[c] for c in bulk.columns) for row in rows])
            for project_id in {c.project_id for c in calls}:
                prints = sorted({c.fingerprint for c in calls if c.project_id == project_id})
                for i in range(0, len(prints), CHUNK):
                    query = sa.select(b.id, b.trace_id, b.span_id).where(
                        b.project_id == project_id,
                        b.fingerprint.in_(prints[i : i + CHUNK]),
                        b.created_unix_nano == now,
                    )
                    for row in (await conn.execute(query)).all():
                        ids[(project_id, row.trace_id, row.span_id)] = row.id
        return ids

    async def _active_baselines(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[Baseline | Call]]:
        """The active baselines of these fingerprints: remembered until a baseline of the project is
        pinned (by any process), else read in bulk."""
        active: dict[tuple[str, str], list[Baseline | Call]] = {}
        missing: dict[str, list[str]] = {}
        b, pr = quality_baselines_table.c, projects_table.c
        async with self.engine.connect() as conn:
            projects = sorted({p for p, _ in keys})
            rows = await conn.execute(sa.select(pr.id, pr.baselines_version).where(pr.id.in_(projects)))
            versions = {project_id: version for project_id, version in rows.all()}
            for project_id in projects:
                if self._versions.get(project_id) != versions.get(project_id, 0):
                    self._versions[project_id] = versions.get(project_id, 0)
                    for key in [k for k in self._cache if k[0] == project_id]:
                        del self._cache[key]
            for key in keys:
                cached = self._cache.get(key)
                if cached is not None:
                    active[key] = list(cached)
                    self._cache.move_to_end(key)
                else:
                    active[key] = []
                    missing.setdefault(key[0], []).append(key[1])
            for project_id, prints in missing.items():
                for i in range(0, len(prints), CHUNK):
                    query = (
                        sa.select(b.id, b.fingerprint, b.output, b.pinned)
                        .where(b.project_id == project_id, b.fingerprint.in_(prints[i : i + CHUNK]))
                        .where(b.retired_unix_nano.is_(None))
                        .order_by(b.id)
                    )
                    for row in (await conn.execute(query)).all():
                        active[(project_id, row.fingerprint)].append(Baseline(row.id, row.output, row.pinned))
        return active

    async def _run(self, judged: list[Judged], detectors: dict[str, Detector], best: Scores) -> Scores:
        """Run ``detectors`` and store their verdicts. A span's quality is the best score any detector
        gave it (``best`` holds the inline ones' for a deferred run); it is judged degraded once the last
        of its service's detectors has scored it. Returns the best scores so far."""
        now = time.time_ns()
        best = dict(best)
        results: list[dict[str, Any]] = []
        for name, detector in detectors.items():
            mine = [j for j in judged if name in self.settings.for_service(j.call.service_name)[0]]
            compared = [j for j in mine if j.became is None]
            try:
                scores = await detector.score([(j.call.output, [b.output for b in j.baselines]) for j in compared])
            except Exception:  # one detector failing leaves the others' verdicts standing
                log.exception("quality detector %s failed on %d calls", name, len(compared))
                continue
            if len(scores) != len(compared):
                raise ValueError(f"detector {name} returned {len(scores)} scores for {len(compared)} calls")
            scored = {j.call.key: float(score) for j, score in zip(compared, scores, strict=True)}
            for j in mine:
                score = scored.get(j.call.key)
                if score is not None:
                    best[j.call.key] = max(score, best.get(j.call.key, score))
                results.append(
                    {
                        "project_id": j.call.project_id,
                        "trace_id": j.call.trace_id,
                        "span_id": j.call.span_id,
                        "detector": name,
                        "fingerprint": j.call.fingerprint,
                        "service_name": j.call.service_name,
                        "span_name": j.call.span_name,
                        "span_start_unix_nano": j.call.start_unix_nano,
                        "baseline_id": j.became if score is None else _closest(j.baselines),
                        "score": score,
                        "verdict": "baseline" if score is None else "match" if score >= MATCH else "changed",
                        "degraded": False,
                        "checked_unix_nano": now,
                    }
                )
        degraded: dict[str, set[tuple[str, str]]] = {}
        for j in judged:
            names, threshold = self.settings.for_service(j.call.service_name)
            last_run = detectors is self.deferred or not any(n in self.deferred for n in names)
            score = best.get(j.call.key)
            if last_run and score is not None and threshold is not None and score < threshold:
                degraded.setdefault(j.call.project_id, set()).add((j.call.trace_id, j.call.span_id))
        for row in results:
            row["degraded"] = (row["trace_id"], row["span_id"]) in degraded.get(row["project_id"], ())
        if results:
            bulk = self._upsert_results
            async with writing(self.engine) as conn:
                await bulk.execute(conn, [tuple(row[c] for c in bulk.columns) for row in results])
                for project_id, spans in sorted(degraded.items()):
                    await self._mark_degraded(conn, project_id, spans)
            self.checked += len(results)
        return best

    async def _mark_degraded(self, conn: AsyncConnection, project_id: str, spans: set[tuple[str, str]]) -> None:
        s = spans_table.c
        keys = sorted(spans)
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i : i + CHUNK]
            await conn.execute(
                sa.update(spans_table)
                .where(span_keys(s, project_id, chunk), s.status == "ok")
                .values(status="degraded")
            )
            r = quality_results_table.c  # every detector's verdict on the span says so
            await conn.execute(
                sa.update(quality_results_table).where(span_keys(r, project_id, chunk)).values(degraded=True)
            )
        await self.writer.refresh_rollups(conn, project_id, {trace_id for trace_id, _ in keys})


def _as_baseline(item: Baseline | Call, ids: dict[tuple[str, str, str], int]) -> Baseline:
    return item if isinstance(item, Baseline) else Baseline(ids[item.key], item.output, False)


def _closest(baselines: Iterable[Baseline]) -> int | None:
    """The baseline a verdict names: the pinned one, else the first (a score is against them all)."""
    listed = list(baselines)
    pinned = [b for b in listed if b.pinned]
    return (pinned or listed)[0].id if listed else None


def _baseline_row(call: Call, pinned: bool, now: int) -> dict[str, Any]:
    """A ``quality_baselines`` row holding ``call``'s response, active from ``now``."""
    return {
        "project_id": call.project_id,
        "fingerprint": call.fingerprint,
        "trace_id": call.trace_id,
        "span_id": call.span_id,
        "output": call.output,
        "pinned": pinned,
        "created_unix_nano": now,
        "retired_unix_nano": None,
    }


async def _insert_baseline(conn: AsyncConnection, call: Call, pinned: bool) -> int:
    result = await conn.execute(
        sa.insert(quality_baselines_table).values(_baseline_row(call, pinned=pinned, now=time.time_ns()))
    )
    key = result.inserted_primary_key
    assert key is not None and key[0] is not None
    return int(key[0])


class NotPinnable(ValueError):
    """The span is missing (``found`` False) or has no LLM response to pin."""

    def __init__(self, message: str, found: bool) -> None:
        super().__init__(message)
        self.found = found


async def pin_span(engine: AsyncEngine, project_id: str, trace_id: str, span_id: str) -> dict[str, Any]:
    """Pin a stored span's response as the one baseline of its prompt (API and CLI)."""
    span = await queries.get_span(engine, project_id, trace_id, span_id)
    if span is None:
        raise NotPinnable(f"span {trace_id}/{span_id} not found in project {project_id}", found=False)
    call = call_of(project_id, span)
    if call is None:
        raise NotPinnable("only an LLM span with output messages can be a baseline", found=True)
    return await pin_baseline(engine, call)


async def pin_baseline(engine: AsyncEngine, call: Call) -> dict[str, Any]:
    """Make ``call``'s response the one baseline of its fingerprint; the active ones are retired."""
    b = quality_baselines_table.c
    async with writing(engine) as conn:
        await conn.execute(
            sa.update(quality_baselines_table)
            .where(b.project_id == call.project_id, b.fingerprint == call.fingerprint, b.retired_unix_nano.is_(None))
            .values(retired_unix_nano=time.time_ns())
        )
        new_id = await _insert_baseline(conn, call, pinned=True)
        p = projects_table.c
        await conn.execute(
            sa.update(projects_table).where(p.id == call.project_id).values(baselines_version=p.baselines_version + 1)
        )
        row = (await conn.execute(sa.select(quality_baselines_table).where(b.id == new_id))).mappings().one()
    return dict(row)


async def baselines(engine: AsyncEngine, project_id: str, fingerprint: str) -> list[dict[str, Any]]:
    """Every baseline a fingerprint has had, newest first (retired ones carry ``retired_unix_nano``)."""
    b = quality_baselines_table.c
    query = (
        sa.select(quality_baselines_table)
        .where(b.project_id == project_id, b.fingerprint == fingerprint)
        .order_by(b.id.desc())
    )
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def results(
    engine: AsyncEngine,
    project_id: str,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    service: str | None = None,
    verdict: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Detector verdicts, newest span first."""
    r = quality_results_table.c
    query = sa.select(quality_results_table).where(r.project_id == project_id)
    for column, value in (
        (r.trace_id, trace_id),
        (r.span_id, span_id),
        (r.service_name, service),
        (r.verdict, verdict),
    ):
        if value is not None:
            query = query.where(column == value)
    query = query.order_by(r.span_start_unix_nano.desc(), r.span_id, r.detector).limit(limit)
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


QUALITY_GROUPS = {"service": "service_name", "span_name": "span_name", "detector": "detector"}


async def analytics(
    engine: AsyncEngine,
    project_id: str,
    start_ns: int,
    end_ns: int,
    group_by: str | None = None,
    bucket_ns: int | None = None,
    detector: str | None = None,
) -> list[dict[str, Any]]:
    """Verdicts of the spans that started in ``[start_ns, end_ns)``, per group and time bucket: how many
    were compared, changed and degraded, and their mean score (baselines are counted apart)."""
    r = quality_results_table.c
    group = r[QUALITY_GROUPS[group_by]] if group_by else sa.null()
    slot = (r.span_start_unix_nano // bucket_ns) * bucket_ns if bucket_ns else sa.null()
    compared = r.score.is_not(None)
    query = (
        sa.select(
            group.label("grp"),
            slot.label("slot"),
            sa.func.sum(sa.case((compared, 1), else_=0)).label("compared"),
            sa.func.sum(sa.case((r.verdict == "baseline", 1), else_=0)).label("baselines"),
            sa.func.sum(sa.case((r.verdict == "changed", 1), else_=0)).label("changed"),
            sa.func.sum(sa.case((r.degraded, 1), else_=0)).label("degraded"),
            sa.func.avg(r.score).label("mean_score"),
            sa.func.min(r.score).label("min_score"),
        )
        .where(r.project_id == project_id, r.span_start_unix_nano >= start_ns, r.span_start_unix_nano < end_ns)
        .group_by(*(e for e, used in ((group, group_by), (slot, bucket_ns)) if used))
        .order_by(*(e for e, used in ((slot, bucket_ns), (group, group_by)) if used))
    )
    if detector is not None:
        query = query.where(r.detector == detector)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        compared_count = int(row["compared"] or 0)
        out.append(
            {
                "group": row["grp"],
                "bucket_unix_nano": row["slot"],
                "compared": compared_count,
                "baselines": int(row["baselines"] or 0),
                "changed": int(row["changed"] or 0),
                "degraded": int(row["degraded"] or 0),
                "changed_rate": int(row["changed"] or 0) / compared_count if compared_count else None,
                "degraded_rate": int(row["degraded"] or 0) / compared_count if compared_count else None,
                "mean_score": row["mean_score"],
                "min_score": row["min_score"],
            }
        )
    return out


async def drifts(engine: AsyncEngine, project_id: str, start_ns: int, end_ns: int, limit: int = 10) -> list[dict]:
    """The lowest-scored responses of the range, each with the baseline it was compared against and its
    own output, for a side-by-side look."""
    r, b, s = quality_results_table.c, quality_baselines_table.c, spans_table.c
    query = (
        sa.select(
            quality_results_table,
            b.output.label("baseline_output"),
            s.output_messages,
        )
        .join(quality_baselines_table, b.id == r.baseline_id, isouter=True)
        .join(spans_table, sa.and_(s.project_id == r.project_id, s.trace_id == r.trace_id, s.span_id == r.span_id))
        .where(r.project_id == project_id, r.span_start_unix_nano >= start_ns, r.span_start_unix_nano < end_ns)
        .where(r.score.is_not(None), r.score < 1.0)
        .order_by(r.score, r.span_start_unix_nano.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for row in rows:
        item = {k: v for k, v in row.items() if k != "output_messages"}
        item["output"] = output_text({"output_messages": row["output_messages"]})
        out.append(item)
    return out
