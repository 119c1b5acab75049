"""What the benchmarks share: a real Lumina server process, the exporters that load it, /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import sqlalchemy as sa

from lumina_core.storage.database import create_engine

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_url: str
    otlp_http_url: str
    grpc_target: str


@contextlib.contextmanager
def lumina_server(
    workdir: Path, database_url: str, storage_options: str = "", more_config: str = ""
) -> Iterator[Server]:
    """``lumina serve`` in a subprocess on free ports, ready when this yields; stopped afterwards.
    ``storage_options`` are TOML lines added to ``[storage]``, ``more_config`` TOML tables after it."""
    http_port, otlp_port, grpc_port = free_port(), free_port(), free_port()
    config = workdir / "lumina.toml"
    config.write_text(
        f'data_dir = "{workdir}"\n[server]\nport = {http_port}\notlp_http_port = {otlp_port}\n'
        f'otlp_grpc_port = {grpc_port}\n[storage]\nurl = "{database_url}"\n{storage_options}\n{more_config}\n'
    )
    env = {**os.environ, "LUMINA_CONFIG": str(config)}
    process = subprocess.Popen(
        [sys.executable, "-m", "lumina_core.cli", "serve", "--log-level", "warning"], env=env, cwd=workdir
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        yield Server(
            process,
            f"http://127.0.0.1:{http_port}",
            f"http://127.0.0.1:{otlp_port}/v1/traces",
            f"127.0.0.1:{grpc_port}",
        )
    finally:
        process.terminate()
        process.wait(30)


async def send_all(bodies: list[bytes], server: Server, transport: str, concurrency: int) -> int:
    """``concurrency`` exporters, each with its own connection (as separate applications would have),
    sending the requests in order; a refused export (503 / UNAVAILABLE) is retried after 0.2 s.
    Returns how many retries there were."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(bodies):
        queue.put_nowait((i, body))
    retries = 0

    async def exporter() -> None:
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

    await asyncio.gather(*(exporter() for _ in range(concurrency)))
    return retries
