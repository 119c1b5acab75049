"""Scale-out benchmark: Lumina as intake + worker processes on NATS JetStream and PostgreSQL, with 1, 2, 4 …
worker processes, loaded by the mixed LLM workload over OTLP/HTTP protobuf and gRPC.

For each worker count: a fresh database and fresh NATS streams, ``--intakes`` intake processes and the
workers (log level warning), the workload built beforehand; then timed from the first export until
``count(*) FROM spans`` reaches the number sent. Prints end-to-end spans/s, spans/s accepted by intake (until
every export was acknowledged), and the CPU seconds — and their share of the wall time, 100% = one core —
of the intake processes, the worker processes, PostgreSQL (every ``postgres`` process, the backends of the
new connections included), nats-server, this benchmark client and the whole machine.

    .venv/bin/python bench/scale.py --spans 100000
    .venv/bin/python bench/scale.py --workers 1 2 --intakes 1 --transport grpc
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import httpx
import nats
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import fresh_database, log_lines, send_all
from workload import requests

from lumina_core.testing.processes import LuminaProcess, lumina_processes

try:
    from lumina_queue_nats.testing import unique_names
except ImportError:
    raise SystemExit("contrib/lumina-queue-nats is not installed: pip install -e contrib/lumina-queue-nats") from None

POLL_SECONDS = 0.2


# --- CPU accounting ------------------------------------------------------------------------------------------


def tree_cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of a process, of its children that have exited (and were waited for) and of
    its live descendants. The difference of two readings is what the tree used in between, children that
    started and ended in between included (PostgreSQL's backends for new connections)."""
    total = 0.0
    for child in process.children():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += tree_cpu(child)
    times = process.cpu_times()  # after the children: one that exited meanwhile is in children_* by now
    return total + times.user + times.system + times.children_user + times.children_system


def group_cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += tree_cpu(process)
    return total


def postgres_roots() -> list[psutil.Process]:
    """Each PostgreSQL cluster's postmaster: a ``postgres`` process whose parent is not one."""
    roots = []
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            parent = process.parent()
            if process.info["name"] == "postgres" and (parent is None or parent.name() != "postgres"):
                roots.append(process)
    return roots


def nats_servers(port: int) -> list[psutil.Process]:
    """The process listening on ``port``, else every process named nats-server."""
    with contextlib.suppress(psutil.AccessDenied):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return [psutil.Process(conn.pid)]
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "nats-server"]


def backends_of(roots: list[psutil.Process], database: str) -> dict[tuple[int, float], float]:
    """CPU seconds of each live PostgreSQL backend connected to ``database`` (its title names the database)."""
    found = {}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for child in root.children():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    if f" {database} " in " ".join(child.cmdline()) + " ":
                        times = child.cpu_times()
                        found[(child.pid, child.create_time())] = times.user + times.system
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine was busy (every core), since boot."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)


def client_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


# --- the services: a fresh database, fresh NATS streams ----------------------------------------------------------


async def stream_messages(nats_url: str, streams: list[str], delete: bool = False) -> dict[str, int]:
    """How many messages each stream holds (-1: no such stream); then deletes the streams if asked."""
    nc = await nats.connect(nats_url)
    held = {}
    try:
        js = nc.jetstream()
        for stream in streams:
            try:
                held[stream] = (await js.stream_info(stream)).state.messages
                if delete:
                    await js.delete_stream(stream)
            except nats.js.errors.NotFoundError:
                held[stream] = -1
    finally:
        await nc.close()
    return held


@contextlib.contextmanager
def fresh_streams(nats_url: str) -> Iterator[dict[str, str]]:
    names = unique_names()
    try:
        yield names
    finally:
        asyncio.run(stream_messages(nats_url, [names["stream"], names["dead_letter_stream"]], delete=True))


def write_config(workdir: Path, database_url: str, nats_url: str, names: dict[str, str]) -> Path:
    queue = "\n".join(f'{key} = "{value}"' for key, value in names.items())
    config = workdir / "lumina.toml"
    config.write_text(
        f'data_dir = "{workdir}"\n'
        f'[storage]\nurl = "{database_url.replace("postgresql://", "postgresql+asyncpg://", 1)}"\n'
        f'[queue]\ntype = "nats"\nservers = ["{nats_url}"]\n{queue}\n'
        "[limits]\ndaily_traces = 0\n"  # a benchmark sends more traces than a day's default limit
    )
    return config


# --- one run ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    workers: int
    intakes: int
    spans: int
    stored: int
    end_to_end_spans_per_s: float
    accepted_spans_per_s: float
    end_to_end_s: float
    accepted_s: float
    retries: int
    cpu_s: dict[str, float | None]
    cpu_share: dict[str, float | None]
    stored_by_worker: list[int]
    left_in_stream: int
    dead_letters: int
    log_lines_during_run: int
    log_lines_at_stop: int
    restarted: list[str]
    analyze_runs: dict[str, int]


async def send_and_wait(
    bodies: list[bytes],
    intakes: list[LuminaProcess],
    database_url: str,
    expected: int,
    transport: str,
    concurrency: int,
    readings: Callable[[], dict[str, float]],
    timeout: float,
) -> tuple[float, float, int, int, dict[str, float]]:
    """Times the sends and the wait until ``expected`` spans are stored; returns accepted seconds, end-to-end
    seconds, retries, the spans stored and the CPU seconds each group used meanwhile."""
    conn = await asyncpg.connect(database_url)  # one connection for the polls, opened before the clock starts
    try:
        before = readings()
        start = time.perf_counter()
        retries = await send_all(bodies, intakes, transport, concurrency)
        accepted_s = time.perf_counter() - start
        while (stored := await conn.fetchval("SELECT count(*) FROM spans")) < expected:
            if time.perf_counter() - start > timeout:
                break
            await asyncio.sleep(POLL_SECONDS)
        end_to_end_s = time.perf_counter() - start
        after = readings()
    finally:
        await conn.close()
    return accepted_s, end_to_end_s, retries, stored, {k: after[k] - before[k] for k in before}


def run(args: argparse.Namespace, workers: int, bodies: list[bytes]) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix=f"lumina-scale-{workers}w-"))
    print(f"{workers} worker(s), {args.intakes} intake(s); config and logs in {workdir}")
    postgres, nats_server = postgres_roots(), nats_servers(args.nats_port)
    if not postgres:
        raise SystemExit("no postgres server process found on this machine")
    if not nats_server:
        raise SystemExit(f"no nats-server process found (port {args.nats_port})")
    with fresh_database(args.postgres) as database_url, fresh_streams(args.nats) as names:
        config = write_config(workdir, database_url, args.nats, names)
        roles = [("intake",)] * args.intakes + [("worker",)] * workers
        with lumina_processes(config, *roles, log_level="warning") as processes:
            intakes, worker_processes = processes[: args.intakes], processes[args.intakes :]
            groups = {
                "intake": [psutil.Process(p.process.pid) for p in intakes],
                "worker": [psutil.Process(p.process.pid) for p in worker_processes],
                "postgres": postgres,
                "nats": nats_server,
            }

            database = database_url.rsplit("/", 1)[1]
            backends: list[dict[tuple[int, float], float]] = []

            def readings() -> dict[str, float]:
                now = {name: group_cpu(members) for name, members in groups.items()}
                backends.append(backends_of(postgres, database))  # first: before, last: after
                return {**now, "client": client_cpu(), "machine": machine_busy()}

            def restarted() -> list[str]:
                """Groups a process of which ended (a restart): their CPU reading is meaningless."""
                return [name for name, members in groups.items() if not all(p.is_running() for p in members)]

            asyncio.run(checkpoint(database_url))
            accepted_s, end_to_end_s, retries, stored, cpu = asyncio.run(
                send_and_wait(
                    bodies, intakes, database_url, args.spans, args.transport, args.concurrency, readings, args.timeout
                )
            )
            stored_by = [worker_stored(p) for p in worker_processes]
            held = asyncio.run(stream_messages(args.nats, [names["stream"], names["dead_letter_stream"]]))
            time.sleep(1)  # a late duplicate would show in a second count
            stored = max(stored, asyncio.run(count(database_url)))
            analyzed = asyncio.run(analyze_runs(database_url))
            gone = restarted()
            during_run = {p.log: len(log_lines(p)) for p in processes}
            report_logs(processes, "during the run")
        at_stop = report_logs(processes, "when stopped", skip=during_run)
    measured: dict[str, float | None] = {k: None if k in gone else v for k, v in cpu.items()}
    if not gone:
        measured["other"] = cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine")
        # Of PostgreSQL's time, what the live backends of this run's database used (a backend that ended
        # meanwhile is not in it); the rest is its background processes, short connections, other databases.
        before, after = backends[0], backends[-1]
        measured["postgres_this_db"] = sum(t - before.get(key, 0.0) for key, t in after.items())
    return Row(
        workers=workers,
        intakes=args.intakes,
        spans=args.spans,
        stored=stored,
        end_to_end_spans_per_s=round(args.spans / end_to_end_s),
        accepted_spans_per_s=round(args.spans / accepted_s),
        end_to_end_s=round(end_to_end_s, 2),
        accepted_s=round(accepted_s, 2),
        retries=retries,
        cpu_s={k: None if v is None else round(v, 2) for k, v in measured.items()},
        cpu_share={k: None if v is None else round(v / end_to_end_s, 3) for k, v in measured.items()},
        stored_by_worker=stored_by,
        left_in_stream=held[names["stream"]],
        dead_letters=held[names["dead_letter_stream"]],
        log_lines_during_run=sum(during_run.values()),
        log_lines_at_stop=at_stop,
        restarted=gone,
        analyze_runs=analyzed,
    )


async def checkpoint(database_url: str) -> None:
    """Each run starts with PostgreSQL's dirty buffers written (the previous run's dropped database)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM spans"))
    finally:
        await conn.close()


async def analyze_runs(database_url: str) -> dict[str, int]:
    """How often each table was analysed (by Lumina's storage maintenance, or autovacuum) in this database."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT relname, analyze_count + autoanalyze_count AS n FROM pg_stat_user_tables "
            "WHERE relname IN ('spans', 'traces', 'span_hours') ORDER BY relname"
        )
        return {row["relname"]: int(row["n"]) for row in rows}
    finally:
        await conn.close()


def worker_stored(worker: LuminaProcess) -> int:
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        return int(httpx.get(f"{worker.http_url}/-/ready", timeout=10).json()["checks"]["worker"]["spans_stored"])
    return -1


def report_logs(processes: list[LuminaProcess], when: str, skip: dict[Path, int] | None = None, lines: int = 5) -> int:
    """Shows what each process logged beyond its banner (warnings, errors) and past its first ``skip[log]``
    lines; returns how many lines that was."""
    total = 0
    for process in processes:
        if logged := log_lines(process)[(skip or {}).get(process.log, 0) :]:
            total += len(logged)
            print(
                f"  {process.log.name} logged {len(logged)} lines {when}, the last {min(lines, len(logged))}:",
                *logged[-lines:],
                sep="\n",
                flush=True,
            )
    return total


# --- output ----------------------------------------------------------------------------------------------------

COLUMNS = [
    ("intake", "intake CPU"),
    ("worker", "workers CPU"),
    ("postgres", "PostgreSQL CPU"),
    ("postgres_this_db", "of it: the run's backends"),
    ("nats", "nats-server CPU"),
]


def table(rows: list[Row]) -> str:
    def cpu(row: Row, key: str) -> str:
        seconds, share = row.cpu_s.get(key), row.cpu_share.get(key)
        return "restarted" if seconds is None or share is None else f"{seconds:.1f} s ({share:.0%})"

    head = ["workers", "end-to-end spans/s", "accepted spans/s", "e2e s", "retries"]
    head += [title for _, title in COLUMNS] + ["client CPU", "other CPU", "machine busy", "stored by worker"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for row in rows:
        cells = [
            str(row.workers),
            f"{row.end_to_end_spans_per_s:,}",
            f"{row.accepted_spans_per_s:,}",
            f"{row.end_to_end_s:.1f}",
            str(row.retries),
            *(cpu(row, key) for key, _ in COLUMNS),
            cpu(row, "client"),
            cpu(row, "other"),
            cpu(row, "machine"),
            " / ".join(f"{n:,}" for n in row.stored_by_worker),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker process counts to run")
    parser.add_argument("--intakes", type=int, default=2, help="intake processes")
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--spans-per-request", type=int, default=512, help="the OTel SDK's default batch size")
    parser.add_argument("--concurrency", type=int, default=8, help="exporters, spread over the intake processes")
    parser.add_argument("--transport", choices=["http", "grpc", "both"], default="both")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every span to be stored")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args.nats_port = int(args.nats.rsplit(":", 1)[1])

    load = os.getloadavg()[0]
    print(f"building {args.spans} spans in requests of {args.spans_per_request} …", flush=True)
    bodies = list(requests(args.spans, args.spans_per_request))
    payload_mb = sum(map(len, bodies)) / 1e6
    rows = []
    for workers in args.workers:
        rows.append(run(args, workers, bodies))
        row = rows[-1]
        print(f"  {row.end_to_end_spans_per_s:,} spans/s end to end, {row.stored} stored", flush=True)

    cores, physical = os.cpu_count(), psutil.cpu_count(logical=False)
    print()
    print(
        f"machine: {cores} logical cores ({physical} physical), 1-minute load average {load:.2f} before the "
        "benchmark; PostgreSQL, NATS JetStream, Lumina and this client all on this machine"
    )
    print(
        f"workload: {args.spans} spans in {len(bodies)} requests ({payload_mb:.1f} MB protobuf), "
        f"transport={args.transport}, concurrency={args.concurrency}, {args.intakes} intake process(es)"
    )
    print(
        "CPU: seconds used during the end-to-end time (share of that wall time; 100% = one core); "
        "other = the machine's busy time not in the columns before (other jobs, the kernel)\n"
    )
    print(table(rows))
    print()
    for row in rows:
        print(json.dumps(asdict(row)))
    for row in rows:
        runs = ", ".join(f"{table} {n}" for table, n in row.analyze_runs.items())
        print(f"{row.workers} worker(s): ANALYZE runs in the database: {runs}")
    for row in rows:
        odd = []
        if row.stored != row.spans:
            odd.append(f"{row.stored} stored of {row.spans}")
        if row.left_in_stream or row.dead_letters:
            odd.append(f"{row.left_in_stream} messages left in the stream, {row.dead_letters} dead letters")
        if row.log_lines_during_run:
            odd.append(f"the processes logged {row.log_lines_during_run} warning/error lines during the run (above)")
        if row.log_lines_at_stop:
            odd.append(f"the processes logged {row.log_lines_at_stop} lines when they were stopped (above)")
        if row.restarted:
            odd.append(f"{', '.join(row.restarted)} restarted during the run (another job?): CPU not measured")
        if odd:
            print(f"NOTE {row.workers} worker(s): " + "; ".join(odd))


if __name__ == "__main__":
    main()
