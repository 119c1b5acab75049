"""What the benchmarks share: a real Lumina server process, the exporters that load it, /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg
import grpc
import httpx
import sqlalchemy as sa

from lumina_core.storage.database import create_engine
from lumina_core.testing.processes import LuminaProcess, start_lumina

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def count_rows(database_url: str, table: str, where: str = "TRUE") -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE {where}"))).scalar_one()
    finally:
        await engine.dispose()


async def count_spans(database_url: str) -> int:
    return await count_rows(database_url, "spans")


async def stale_hours(database_url: str) -> int:
    """Hours of spans the server has yet to sum for analytics."""
    return await count_rows(database_url, "stale_hours")


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database ``lumina_bench_<random>`` (its asyncpg URL without driver), dropped afterwards."""
    name = f"lumina_bench_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def lumina_server(
    workdir: Path, database_url: str, storage_options: str = "", more_config: str = ""
) -> Iterator[LuminaProcess]:
    """``lumina serve`` (all roles) in a subprocess on free ports, ready when this yields; stopped afterwards.
    ``storage_options`` are TOML lines added to ``[storage]``, ``more_config`` TOML tables after it. The
    process logs (level warning) to a file in ``workdir``, shown here if it wrote anything."""
    config = workdir / "lumina.toml"
    if "[limits]" not in more_config:  # a benchmark sends more traces than a day's default limit
        more_config += "\n[limits]\ndaily_traces = 0\n"
    config.write_text(f'data_dir = "{workdir}"\n[storage]\nurl = "{database_url}"\n{storage_options}\n{more_config}\n')
    server = start_lumina(config, ("all",), workdir=workdir, log_level="warning")
    try:
        yield server
    finally:
        server.stop()
        show_log(server)


def log_lines(process: LuminaProcess) -> list[str]:
    """What a process logged besides its start-up banner: at level warning, its warnings and errors."""
    if not process.log.exists():
        return []
    return [line for line in process.log.read_text(errors="replace").splitlines() if not line.startswith("Lumina (")]


def show_log(process: LuminaProcess, lines: int = 40) -> None:
    """The end of a process's log on stderr, if it logged anything beyond its banner."""
    if logged := log_lines(process):
        print(f"--- {process.log} (last {lines} lines) ---", *logged[-lines:], sep="\n", file=sys.stderr)


async def send_all(
    bodies: list[bytes], servers: LuminaProcess | Sequence[LuminaProcess], transport: str, concurrency: int
) -> int:
    """``concurrency`` exporters, each with its own connection (as separate applications would have),
    sending the requests in order; a refused export (503 / UNAVAILABLE) is retried after 0.2 s. Given several
    (intake) servers, exporter ``n`` sends to server ``n % len(servers)``. Returns how many retries there were."""
    if isinstance(servers, LuminaProcess):
        servers = [servers]
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(bodies):
        queue.put_nowait((i, body))
    retries = 0

    async def exporter(server: LuminaProcess) -> None:
        nonlocal retries
        async with httpx.AsyncClient(timeout=120) as client:
            channel = grpc.aio.insecure_channel(server.grpc_target)
            export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
            while not queue.empty():
                i, body = queue.get_nowait()
                use_grpc = transport == "grpc" or (transport == "both" and i % 2)
                while True:
                    try:
                        if use_grpc:
                            await export(body, timeout=120)
                        else:
                            response = await client.post(
                                server.otlp_http_url, content=body, headers={"content-type": "application/x-protobuf"}
                            )
                            if response.status_code == 503:
                                raise RuntimeError("retry")
                            response.raise_for_status()
                        break
                    except (grpc.aio.AioRpcError, RuntimeError):
                        retries += 1
                        await asyncio.sleep(0.2)
            await channel.close()

    await asyncio.gather(*(exporter(servers[n % len(servers)]) for n in range(concurrency)))
    return retries
