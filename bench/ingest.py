"""Ingest benchmark: a mixed LLM workload over OTLP/HTTP protobuf and gRPC against a real Lumina process.

Prints accepted spans/s (until every export was acknowledged), end-to-end spans/s (until every span
is queryable in the database) and the server's peak RSS.

    .venv/bin/python bench/ingest.py --spans 200000 --concurrency 8
    .venv/bin/python bench/ingest.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import requests

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


async def count_spans(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT COUNT(*) FROM spans"))).scalar_one()
    finally:
        await engine.dispose()


async def send_all(bodies: list[bytes], http_url: str, grpc_target: str, transport: str, concurrency: int) -> int:
    """``concurrency`` exporters, each with its own connection (as separate applications would have),
    sending the requests in order; a refused export (503 / UNAVAILABLE) is retried after 0.2 s."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(bodies):
        queue.put_nowait((i, body))
    retries = 0

    async def exporter() -> None:
        nonlocal retries
        async with httpx.AsyncClient(timeout=120) as client:
            channel = grpc.aio.insecure_channel(grpc_target)
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
                                http_url, content=body, headers={"content-type": "application/x-protobuf"}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--spans-per-request", type=int, default=512, help="the OTel SDK's default batch size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--transport", choices=["http", "grpc", "both"], default="both")
    parser.add_argument("--database", help="database URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lumina-bench-"))
    database_url = args.database or f"sqlite+aiosqlite:///{workdir / 'lumina.db'}"
    http_port, otlp_port, grpc_port = free_port(), free_port(), free_port()
    config = workdir / "lumina.toml"
    config.write_text(
        f'data_dir = "{workdir}"\n[server]\nport = {http_port}\notlp_http_port = {otlp_port}\n'
        f'otlp_grpc_port = {grpc_port}\n[storage]\nurl = "{database_url}"\n'
    )
    print(f"building {args.spans} spans in requests of {args.spans_per_request} …", flush=True)
    bodies = list(requests(args.spans, args.spans_per_request))
    payload_mb = sum(map(len, bodies)) / 1e6

    env = {**os.environ, "LUMINA_CONFIG": str(config)}
    server = subprocess.Popen(
        [sys.executable, "-m", "lumina_core.cli", "serve", "--log-level", "warning"],
        env=env,
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        rss_idle = peak_rss_mb(server.pid)
        cpu_before = cpu_seconds(server.pid)
        client_cpu_before = time.process_time()
        start = time.perf_counter()
        retries = asyncio.run(
            send_all(
                bodies,
                f"http://127.0.0.1:{otlp_port}/v1/traces",
                f"127.0.0.1:{grpc_port}",
                args.transport,
                args.concurrency,
            )
        )
        accepted_s = time.perf_counter() - start
        while asyncio.run(count_spans(database_url)) < args.spans:
            time.sleep(0.05)
        queryable_s = time.perf_counter() - start
        server_cpu = cpu_seconds(server.pid) - cpu_before
        client_cpu = time.process_time() - client_cpu_before
        stored = asyncio.run(count_spans(database_url))
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)

    print(f"database      {database_url.split('://')[0]}")
    print(
        f"workload      {args.spans} spans in {len(bodies)} requests ({payload_mb:.1f} MB protobuf), "
        f"transport={args.transport}, concurrency={args.concurrency}"
    )
    print(f"accepted      {args.spans / accepted_s:,.0f} spans/s ({accepted_s:.2f} s)")
    print(f"end-to-end    {args.spans / queryable_s:,.0f} spans/s ({queryable_s:.2f} s, {stored} stored)")
    print(f"retries       {retries}")
    print(f"server RSS    peak {rss:.0f} MB (idle {rss_idle:.0f} MB)")
    print(
        f"CPU           server {server_cpu / queryable_s:.0%} of a core, "
        f"benchmark client {client_cpu / queryable_s:.0%}"
    )


if __name__ == "__main__":
    main()
