"""Retention benchmark: ingest latency while ``lumina retention run`` sweeps a million expired spans.

The issue's target: sweeping 1,000,000 expired spans does not raise ingest's p99 request latency above 1 s.

1. A fresh database (SQLite in a temporary folder, or a new PostgreSQL database ``lumina_bench_<random>``,
   dropped afterwards) and ``lumina serve`` on it, with ``[retention] archiver = "jsonl"`` and
   ``enabled = false`` (its midnight sweep stays off: the sweep is run by the CLI in its own process, on the
   same database and the same ``lumina.toml``).
2. ``--expired`` spans 8-20 days old: ``--template-spans`` of the mixed LLM workload go through the server's
   OTLP intake (so every column is what Lumina itself stores), then SQL copies them (INSERT … SELECT over
   ``generate_series`` on PostgreSQL, a recursive CTE on SQLite) with new trace ids and response ids and
   start times shifted, until they are spread evenly from 20 to 8 days ago; their ``traces`` rows alike.
   Their hours are summed for analytics (as long-settled data would be) before the measurement starts.
3. Steady ingest of fresh spans over OTLP/HTTP protobuf at ``--rate`` spans/s in requests of about
   ``--request-spans`` spans (whole traces of 1-8 spans), open loop: each request is sent at its scheduled
   time (at most ``--max-in-flight`` at once) and timed from send to response, which the server gives once
   the spans are committed. ``--baseline-seconds`` of it, then ``lumina retention run --config …`` (timed) while
   ingest goes on, then ``--tail-seconds`` more. A request belongs to the phase in which it was sent. "Sent
   late": more than 100 ms after its time, all slots being busy; "p99 from due" counts that wait in.
4. Checks: no span or trace older than 7 days is left, every fresh span acknowledged is stored (no more, no
   less) and none was refused (the harness turns the daily trace limit off), the archive has one line per
   span deleted. Prints a markdown table and JSON lines; exits 1 if the
   p99 request latency during the sweep exceeds ``--max-p99`` seconds (or a check failed).

Request bodies are built on the benchmark's event loop just before they are sent (about 6 ms per 100 spans),
which may add that much to a request in flight at the time.

    .venv/bin/python bench/retention.py --database sqlite
    .venv/bin/python bench/retention.py --database postgres --expired 1000000
    .venv/bin/python bench/retention.py --database sqlite --batch-spans 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_seconds, fresh_database, lumina_server, send_all
from workload import SERVICES, requests, trace_spans

from lumina_core.config import RetentionSettings
from lumina_core.storage.database import create_engine
from lumina_core.storage.models import HOUR_NS, spans_table, traces_table
from lumina_core.testing import kv
from lumina_core.testing.processes import LuminaProcess

DAY_NS = 86_400 * 10**9
RETENTION_DAYS = 7  # the default [retention] days
OLDEST_DAYS, NEWEST_DAYS = 20, 8  # the expired spans are spread over these ages
PROJECT = "default"
ROWS_PER_TRANSACTION = 100_000  # of the SQL copies: a few seconds of SQLite's write lock at a time


# --- the database ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """The Lumina (SQLAlchemy async) URL of a fresh database."""
    if args.database == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'lumina.db'}"
    else:
        with fresh_database(args.postgres) as url:
            yield url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def scalar(database_url: str, sql: str, **params: Any) -> Any:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(sql), params)).scalar_one()
    finally:
        await engine.dispose()


def older_than_retention() -> str:
    """SQL: rows of the project older than the retention, now."""
    cutoff = time.time_ns() - RETENTION_DAYS * DAY_NS
    return f"project_id = '{PROJECT}' AND start_time_unix_nano < {cutoff}"


# --- loading the expired spans ---------------------------------------------------------------------------------


@dataclass
class Loaded:
    spans: int
    traces: int
    template_spans: int
    copies: int
    seconds: float
    settle_seconds: float
    database_mb: float | None


def copy_sql(dialect: str, table: sa.Table, k0: int, k1: int, shift_ns: int, template_max_ns: int) -> str:
    """INSERT … SELECT: copies ``k0``..``k1`` of the template rows of ``table``, copy ``k`` with trace ids whose
    first 8 hex digits are ``k``, response ids suffixed ``-k`` and times ``k * shift_ns`` later."""
    if dialect == "postgresql":
        trace_id = "lpad(to_hex(g.k), 8, '0') || substr(s.trace_id, 9)"
        series, head = f"generate_series({k0}, {k1}) AS g(k)", ""
    else:
        trace_id = "printf('%08x', g.k) || substr(s.trace_id, 9)"
        series = "g"
        head = f"WITH RECURSIVE g(k) AS (SELECT {k0} UNION ALL SELECT k + 1 FROM g WHERE k < {k1}) "
    special = {
        "trace_id": trace_id,
        "response_id": "s.response_id || '-' || CAST(g.k AS TEXT)",
        "start_time_unix_nano": f"s.start_time_unix_nano + g.k * {shift_ns}",
        "end_time_unix_nano": f"s.end_time_unix_nano + g.k * {shift_ns}",
    }
    names = [c.name for c in table.columns]
    values = ", ".join(special.get(name, f's."{name}"') for name in names)
    return (
        f"{head}INSERT INTO {table.name} ({', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)}) "
        f"SELECT {values} FROM {series}, {table.name} s "
        f"WHERE s.project_id = '{PROJECT}' AND s.start_time_unix_nano <= {template_max_ns}"
    )


async def copy_template(database_url: str, template: int, copies: int, shift_ns: int) -> None:
    """Copies 1 … ``copies - 1`` of the template spans and traces (copy 0 is the template), then every hour
    of them marked stale long ago, so that the server sums it at once."""
    engine = create_engine(database_url)
    dialect = engine.dialect.name
    try:
        async with engine.connect() as conn:
            template_max = (await conn.execute(sa.text("SELECT max(start_time_unix_nano) FROM spans"))).scalar_one()
        per_transaction = max(1, ROWS_PER_TRANSACTION // template)
        for k0 in range(1, copies, per_transaction):
            k1 = min(copies - 1, k0 + per_transaction - 1)
            async with engine.begin() as conn:
                for table in (spans_table, traces_table):
                    await conn.exec_driver_sql(copy_sql(dialect, table, k0, k1, shift_ns, template_max))
            print(f"  {(k1 + 1) * template:,} spans", flush=True)
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO stale_hours (project_id, slot_unix_nano, version, changed_unix_nano) "
                f"SELECT DISTINCT project_id, start_time_unix_nano / {HOUR_NS} * {HOUR_NS}, 1, 0 FROM spans "
                f"WHERE project_id = '{PROJECT}' ON CONFLICT (project_id, slot_unix_nano) DO NOTHING"
            )
        if dialect == "postgresql":  # rows days old would have been vacuumed (hint bits, visibility map) long ago
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM (ANALYZE) spans, traces, stale_hours")
        else:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("ANALYZE")
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await engine.dispose()


async def wait_settled(database_url: str, timeout: float) -> bool:
    """Until the server has summed every stale hour (the template's, once quiet for 30 s, and the copies')."""
    deadline = time.monotonic() + timeout
    while await scalar(database_url, "SELECT count(*) FROM stale_hours"):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(1)
    return True


def load_expired(server: LuminaProcess, database_url: str, expired: int, template_spans: int) -> Loaded:
    copies = max(1, math.ceil(expired / template_spans))
    template = math.ceil(expired / copies)
    shift_ns = (OLDEST_DAYS - NEWEST_DAYS) * DAY_NS // copies  # the window of time one copy covers
    oldest = time.time_ns() - OLDEST_DAYS * DAY_NS
    print(f"loading {template * copies:,} expired spans: {template:,} over OTLP, then {copies - 1} copies in SQL …")
    start = time.perf_counter()
    bodies = list(requests(template, 100, seed=1, start_ns=oldest, span_gap_ns=shift_ns // template))
    asyncio.run(send_all(bodies, server, "http", 4))
    asyncio.run(copy_template(database_url, template, copies, shift_ns))
    seconds = time.perf_counter() - start
    spans = asyncio.run(scalar(database_url, f"SELECT count(*) FROM spans WHERE {older_than_retention()}"))
    traces = asyncio.run(scalar(database_url, f"SELECT count(*) FROM traces WHERE {older_than_retention()}"))
    print(f"  {spans:,} spans ({traces:,} traces) older than {RETENTION_DAYS} days in {seconds:.0f} s", flush=True)
    if spans != template * copies:
        raise SystemExit(f"loaded {spans} expired spans, not {template * copies}")
    print("  waiting for the server to sum their hours …", flush=True)
    settle = time.perf_counter()
    if not asyncio.run(wait_settled(database_url, 300)):
        print("  NOTE: stale hours were still left after 300 s", flush=True)
    return Loaded(spans, traces, template, copies, round(seconds, 1), round(time.perf_counter() - settle, 1), None)


def database_mb(database_url: str, workdir: Path) -> float:
    if database_url.startswith("sqlite"):
        return sum(p.stat().st_size for p in workdir.glob("lumina.db*")) / 1e6
    return asyncio.run(scalar(database_url, "SELECT pg_database_size(current_database())")) / 1e6


# --- steady ingest ---------------------------------------------------------------------------------------------


def fresh_requests(spans_per_request: int, rate: float, seed: int = 2026) -> Iterator[tuple[bytes, int]]:
    """Export requests of whole traces (``spans_per_request`` spans or a few more), one service each, with
    start times advancing in step with ``rate`` from now; yields (body, spans)."""
    rng = random.Random(seed)
    start_ns, gap_ns = time.time_ns(), int(1e9 / rate)
    made = 0
    while True:
        spans = []
        while len(spans) < spans_per_request:
            spans.extend(trace_spans(rng, start_ns + (made + len(spans)) * gap_ns))
        made += len(spans)
        resource_ = {"attributes": [kv("service.name", rng.choice(SERVICES)), kv("deployment.environment", "prod")]}
        request = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource_, scope_spans=[ScopeSpans(spans=spans)])]
        )
        yield request.SerializeToString(), len(spans)


@dataclass
class Sent:
    at: float  # perf_counter() when sent
    latency: float  # seconds from send to the final response (503 retries included)
    spans: int
    ok: bool
    rejected: int  # spans refused through OTLP partial success
    retries: int
    late: float  # seconds after its scheduled time that it was sent (all --max-in-flight busy)
    status: str


async def ingest(
    server: LuminaProcess, args: argparse.Namespace, stop: asyncio.Event, results: list[Sent], started: list[float]
) -> None:
    """Open loop: request ``i`` is due ``i * request_spans / rate`` after the start."""
    bodies = fresh_requests(args.request_spans, args.rate)
    limiter = asyncio.Semaphore(args.max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight)
    headers = {"content-type": "application/x-protobuf"}

    async def post(client: httpx.AsyncClient, body: bytes, n: int, late: float) -> None:
        sent = time.perf_counter()
        retries, ok, rejected, status = 0, False, 0, ""
        try:
            while True:
                response = await client.post(server.otlp_http_url, content=body, headers=headers)
                if response.status_code == 503 and retries < 100:
                    retries += 1
                    await asyncio.sleep(0.2)
                    continue
                ok, status = response.is_success, str(response.status_code)
                if ok and response.content:
                    answer = ExportTraceServiceResponse.FromString(response.content)
                    rejected = answer.partial_success.rejected_spans
                break
        except httpx.HTTPError as exc:
            status = exc.__class__.__name__
        finally:
            limiter.release()
        results.append(Sent(sent, time.perf_counter() - sent, n, ok, rejected, retries, late, status))

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        interval = args.request_spans / args.rate
        start = time.perf_counter()
        started.append(start)
        i = 0
        while not stop.is_set():
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            body, n = next(bodies)
            await limiter.acquire()
            task = asyncio.create_task(post(client, body, n, time.perf_counter() - (start + i * interval)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)


# --- CPU and load readings -------------------------------------------------------------------------------------


def postgres_cpu() -> float:
    """CPU seconds of every ``postgres`` process (backends of the server's and the sweep's connections
    included, those that exited too)."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if process.info["name"] == "postgres":
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


def machine_busy() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def readings(server: LuminaProcess, postgres: bool) -> dict[str, float]:
    own = psutil.Process().cpu_times()
    return {
        "at": time.perf_counter(),
        "server": cpu_seconds(server.process.pid),
        "sweep": children_cpu(),  # only the sweep is a child waited for while the server runs
        "postgres": postgres_cpu() if postgres else 0.0,
        "client": own.user + own.system,
        "machine": machine_busy(),
        "load1": os.getloadavg()[0],
    }


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    seconds: float
    exit_code: int | None
    spans_deleted: int
    traces_deleted: int
    spans_per_s: float
    cpu_s: float
    output: str
    timed_out: bool = False


@dataclass
class Phase:
    phase: str
    seconds: float
    requests: int
    failed: int
    retries: int
    spans_rejected: int
    spans_acked: int
    spans_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    sent_late: int  # more than 100 ms after its scheduled time (--max-in-flight reached)
    p99_from_due_ms: float | None  # latency from the scheduled time: with the wait for a free slot
    cpu_share: dict[str, float] = field(default_factory=dict)  # of the phase's wall time; 100% = one core
    load1_at_end: float = 0.0
    slowest: list[dict[str, Any]] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def phase_of(sent: list[Sent], name: str, begin: dict[str, float], end: dict[str, float], sweep_start: float) -> Phase:
    mine = [s for s in sent if begin["at"] <= s.at < end["at"]]
    seconds = end["at"] - begin["at"]
    ms = [s.latency * 1000 for s in mine]
    acked = sum(s.spans - s.rejected for s in mine if s.ok)
    cpu = {k: round((end[k] - begin[k]) / seconds, 3) for k in ("server", "sweep", "postgres", "client", "machine")}

    def at_ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    slowest = sorted(mine, key=lambda s: s.latency, reverse=True)[:5]
    return Phase(
        phase=name,
        seconds=round(seconds, 1),
        requests=len(mine),
        failed=sum(not s.ok for s in mine),
        retries=sum(s.retries for s in mine),
        spans_rejected=sum(s.rejected for s in mine),
        spans_acked=acked,
        spans_per_s=round(acked / seconds) if seconds else 0,
        p50_ms=at_ms(percentile(ms, 0.50)),
        p95_ms=at_ms(percentile(ms, 0.95)),
        p99_ms=at_ms(percentile(ms, 0.99)),
        max_ms=at_ms(max(ms, default=None)),
        sent_late=sum(s.late > 0.1 for s in mine),
        p99_from_due_ms=at_ms(percentile([(s.late + s.latency) * 1000 for s in mine], 0.99)),
        cpu_share=cpu,
        load1_at_end=round(end["load1"], 2),
        slowest=[
            {
                "sent_s_after_sweep_start": round(s.at - sweep_start, 2),
                "ms": round(s.latency * 1000),
                "status": s.status,
            }
            for s in slowest
        ],
    )


async def measure(
    server: LuminaProcess, config: Path, args: argparse.Namespace
) -> tuple[list[Phase], Sweep, list[Sent]]:
    postgres = args.database == "postgres"
    sent: list[Sent] = []
    stop = asyncio.Event()
    started: list[float] = []
    sender = asyncio.create_task(ingest(server, args, stop, sent, started))
    while not started:
        await asyncio.sleep(0.001)
    marks = [readings(server, postgres)]
    marks[0]["at"] = started[0]
    print(f"ingesting {args.rate:,} spans/s: baseline {args.baseline_seconds} s …", flush=True)
    await asyncio.sleep(args.baseline_seconds)

    lumina = Path(sys.executable).parent / "lumina"
    command = [str(lumina if lumina.exists() else shutil.which("lumina")), "retention", "run", "--config", str(config)]
    print(f"sweeping: {' '.join(command)}", flush=True)
    marks.append(readings(server, postgres))
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    timed_out = False
    try:
        output, _ = await asyncio.wait_for(process.communicate(), args.sweep_timeout)
    except TimeoutError:
        timed_out = True
        process.kill()
        output, _ = await process.communicate()
    marks.append(readings(server, postgres))
    text = output.decode(errors="replace")
    sweep_seconds = marks[2]["at"] - marks[1]["at"]
    print(f"  the sweep took {sweep_seconds:.1f} s; ingesting {args.tail_seconds} s more …", flush=True)
    await asyncio.sleep(args.tail_seconds)
    marks.append(readings(server, postgres))
    stop.set()
    await sender
    found = re.search(r"^default: deleted (\d+) spans \((\d+) traces\)", text, re.MULTILINE)
    spans_deleted, traces_deleted = (int(found[1]), int(found[2])) if found else (0, 0)
    sweep = Sweep(
        seconds=round(sweep_seconds, 1),
        exit_code=process.returncode,
        spans_deleted=spans_deleted,
        traces_deleted=traces_deleted,
        spans_per_s=round(spans_deleted / sweep_seconds),
        cpu_s=round(marks[2]["sweep"] - marks[1]["sweep"], 1),
        output=text.strip()[:300] if process.returncode == 0 else text.strip()[-2000:],
        timed_out=timed_out,
    )
    phases = [
        phase_of(sent, name, marks[i], marks[i + 1], marks[1]["at"])
        for i, name in enumerate(("before", "during", "after"))
    ]
    if args.requests_csv:
        write_requests(args.requests_csv, sent, marks[1]["at"])
    return phases, sweep, sent


def write_requests(path: Path, sent: list[Sent], sweep_start: float) -> None:
    with path.open("w") as out:
        out.write("sent_s_after_sweep_start,latency_ms,spans,status,retries,late_ms\n")
        for s in sorted(sent, key=lambda s: s.at):
            out.write(f"{s.at - sweep_start:.3f},{s.latency * 1000:.1f},{s.spans},{s.status},{s.retries},")
            out.write(f"{s.late * 1000:.0f}\n")


def archive_lines(archive: Path) -> tuple[int, int, float]:
    """Lines, files and MB of the archive."""
    files = sorted(archive.rglob("*.jsonl.gz"))
    lines = 0
    for path in files:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                lines += chunk.count(b"\n")
    return lines, len(files), sum(p.stat().st_size for p in files) / 1e6


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    retention = ["enabled = false", 'archiver = "jsonl"']
    if args.batch_spans:
        retention.append(f"batch_spans = {args.batch_spans}")
    if args.pause_seconds is not None:
        retention.append(f"pause_seconds = {args.pause_seconds}")
    with (
        database(args, workdir) as database_url,
        lumina_server(workdir, database_url, more_config="[retention]\n" + "\n".join(retention)) as server,
    ):
        config = workdir / "lumina.toml"  # written by lumina_server; the sweep reads it too
        loaded = load_expired(server, database_url, args.expired, args.template_spans)
        loaded.database_mb = round(database_mb(database_url, workdir))
        load_before = os.getloadavg()
        phases, sweep, sent = asyncio.run(measure(server, config, args))
        stored = asyncio.run(scalar(database_url, "SELECT count(*) FROM spans"))
        expired_left = asyncio.run(scalar(database_url, f"SELECT count(*) FROM spans WHERE {older_than_retention()}"))
        traces_left = asyncio.run(scalar(database_url, f"SELECT count(*) FROM traces WHERE {older_than_retention()}"))
    lines, files, archive_mb = archive_lines(workdir / "archive")
    acked = sum(s.spans - s.rejected for s in sent if s.ok)
    rejected = sum(s.rejected for s in sent)
    maybe_stored = sum(s.spans for s in sent if not s.ok)  # a timed-out request's spans may be stored all the same
    checks = {
        "expired spans left": expired_left == 0,
        "expired traces left": traces_left == 0,
        "sweep deleted what was loaded": sweep.spans_deleted == loaded.spans,
        "fresh spans stored = acknowledged": acked <= stored - expired_left <= acked + maybe_stored,
        "no span refused (partial success)": rejected == 0,
        "archive lines = spans deleted": lines == sweep.spans_deleted,
        "sweep exited 0": sweep.exit_code == 0 and not sweep.timed_out,
    }
    return {
        "database": args.database,
        "loaded": loaded,
        "phases": phases,
        "sweep": sweep,
        "fresh_acked": acked,
        "fresh_failed_spans": maybe_stored,
        "fresh_rejected_spans": rejected,
        "spans_stored_at_end": stored,
        "expired_left": expired_left,
        "expired_traces_left": traces_left,
        "archive": {"lines": lines, "files": files, "mb": round(archive_mb, 1)},
        "checks": checks,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


# --- output ----------------------------------------------------------------------------------------------------


def retention_settings(args: argparse.Namespace) -> dict[str, float]:
    defaults = RetentionSettings()
    return {
        "batch_spans": args.batch_spans or defaults.batch_spans,
        "pause_seconds": defaults.pause_seconds if args.pause_seconds is None else args.pause_seconds,
    }


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(result: dict[str, Any], args: argparse.Namespace) -> bool:
    phases: list[Phase] = result["phases"]
    sweep: Sweep = result["sweep"]
    loaded: Loaded = result["loaded"]
    archive = result["archive"]
    settings = ", ".join(f"{k}={v}" for k, v in retention_settings(args).items())
    print()
    print(
        f"machine: {os.cpu_count()} logical cores; load average (1, 5, 15 min) {result['load_before']} before the "
        f"ingest, {result['load_after']} at the end; the database, Lumina and this client all on this machine"
    )
    print(
        f"database: {result['database']}; {loaded.spans:,} expired spans ({loaded.traces:,} traces, "
        f"{OLDEST_DAYS}-{NEWEST_DAYS} days old) loaded in {loaded.seconds:.0f} s, hours summed in "
        f"{loaded.settle_seconds:.0f} s, database {loaded.database_mb:,.0f} MB; retention {settings}"
    )
    print(
        f"ingest: {args.rate:,} spans/s over OTLP/HTTP protobuf in requests of ~{args.request_spans} spans, "
        f"open loop, at most {args.max_in_flight} in flight\n"
    )
    head = [
        "phase",
        "s",
        "requests",
        "failed",
        "spans/s acked",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "sent late",
        "p99 from due ms",
        "server CPU",
        "sweep CPU",
    ]
    if args.database == "postgres":
        head.append("PostgreSQL CPU")
    head += ["machine busy", "load 1m at end"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "|".join("---:" for _ in head[1:]) + "|"]
    for p in phases:
        cells = [
            p.phase + (" sweep" if p.phase != "during" else " the sweep"),
            f"{p.seconds:.1f}",
            str(p.requests),
            str(p.failed),
            f"{p.spans_per_s:,}",
            ms(p.p50_ms),
            ms(p.p95_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            str(p.sent_late),
            ms(p.p99_from_due_ms),
            f"{p.cpu_share['server']:.0%}",
            f"{p.cpu_share['sweep']:.0%}",
        ]
        if args.database == "postgres":
            cells.append(f"{p.cpu_share['postgres']:.0%}")
        cells += [f"{p.cpu_share['machine']:.0%}", f"{p.load1_at_end:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print()
    rows = [
        ("sweep wall time", f"{sweep.seconds:.1f} s (`lumina retention run`, start-up included)"),
        ("spans deleted", f"{sweep.spans_deleted:,} ({sweep.traces_deleted:,} traces)"),
        ("spans deleted per second", f"{sweep.spans_per_s:,}"),
        ("sweep CPU", f"{sweep.cpu_s:.1f} s ({sweep.cpu_s / sweep.seconds:.0%} of a core)"),
        ("archive", f"{archive['mb']:,.1f} MB in {archive['files']} files, {archive['lines']:,} lines"),
        (
            "fresh spans acknowledged",
            f"{result['fresh_acked']:,} (failed requests' spans: {result['fresh_failed_spans']}, "
            f"refused: {result['fresh_rejected_spans']})",
        ),
        ("spans stored at the end", f"{result['spans_stored_at_end']:,}"),
        ("expired left", f"{result['expired_left']} spans, {result['expired_traces_left']} traces"),
    ]
    print("| sweep | |\n|---|---|")
    print("\n".join(f"| {k} | {v} |" for k, v in rows))
    print()
    for p in phases:
        print(json.dumps(asdict(p)))
    summary = {k: v for k, v in result.items() if k != "phases"}
    summary["loaded"], summary["sweep"] = asdict(loaded), asdict(sweep)
    summary["retention"] = retention_settings(args)
    print(json.dumps(summary))
    print()
    if sweep.exit_code != 0 or sweep.timed_out:
        print(f"sweep output:\n{sweep.output}")
    ok = True
    for name, passed in result["checks"].items():
        print(f"check {'ok  ' if passed else 'FAIL'} {name}")
        ok &= passed
    during = phases[1].p99_ms
    if during is None or during > args.max_p99 * 1000:
        print(f"FAIL: p99 request latency during the sweep {ms(during)} ms exceeds {args.max_p99 * 1000:.0f} ms")
        ok = False
    else:
        print(f"PASS: p99 request latency during the sweep {ms(during)} ms ≤ {args.max_p99 * 1000:.0f} ms")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--expired", type=int, default=1_000_000, help="expired spans to load and sweep")
    parser.add_argument("--template-spans", type=int, default=5000, help="of them, sent over OTLP then copied")
    parser.add_argument("--rate", type=float, default=2000, help="fresh spans per second")
    parser.add_argument("--request-spans", type=int, default=100, help="spans per export request (whole traces)")
    parser.add_argument("--max-in-flight", type=int, default=256, help="requests awaiting their response at once")
    parser.add_argument("--baseline-seconds", type=float, default=15)
    parser.add_argument("--tail-seconds", type=float, default=5, help="ingest after the sweep ended")
    parser.add_argument("--sweep-timeout", type=float, default=1800, help="seconds before the sweep is killed")
    parser.add_argument("--batch-spans", type=int, help="[retention] batch_spans (default: Lumina's, 5000)")
    parser.add_argument("--pause-seconds", type=float, help="[retention] pause_seconds (default: Lumina's, 0.05)")
    parser.add_argument("--max-p99", type=float, default=1.0, help="seconds: fail above this p99 during the sweep")
    parser.add_argument("--requests-csv", type=Path, help="write every request (sent at, latency, spans, status)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, archive, logs)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    workdir = Path(tempfile.mkdtemp(prefix="lumina-retention-"))
    print(f"working in {workdir}")
    try:
        ok = report(run(args, workdir), args)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
