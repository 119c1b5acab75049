"""Ingest benchmark: a mixed LLM workload over OTLP/HTTP protobuf and gRPC against a real Lumina process.

Prints accepted spans/s (until every export was acknowledged), end-to-end spans/s (until every span
is queryable in the database) and the server's peak RSS.

    .venv/bin/python bench/ingest.py --spans 200000 --concurrency 8
    .venv/bin/python bench/ingest.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/bench
    .venv/bin/python bench/ingest.py --detectors exact_match   # the quality check's cost on ingest
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count_spans, cpu_seconds, lumina_server, peak_rss_mb, send_all
from workload import requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--spans-per-request", type=int, default=512, help="the OTel SDK's default batch size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--transport", choices=["http", "grpc", "both"], default="both")
    parser.add_argument("--database", help="database URL (default: SQLite in a temporary folder)")
    parser.add_argument(
        "--distinct-prompts", type=int, default=0, help="LLM calls share this many prompts (0: all new)"
    )
    parser.add_argument("--detectors", nargs="*", default=[], help="[quality] detectors, e.g. exact_match")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lumina-bench-"))
    database_url = args.database or f"sqlite+aiosqlite:///{workdir / 'lumina.db'}"
    print(f"building {args.spans} spans in requests of {args.spans_per_request} …", flush=True)
    bodies = list(requests(args.spans, args.spans_per_request, distinct_prompts=args.distinct_prompts))
    payload_mb = sum(map(len, bodies)) / 1e6

    quality = f"[quality]\ndetectors = {json.dumps(args.detectors)}\n"
    with lumina_server(workdir, database_url, more_config=quality) as server:
        pid = server.process.pid
        rss_idle = peak_rss_mb(pid)
        cpu_before = cpu_seconds(pid)
        client_cpu_before = time.process_time()
        start = time.perf_counter()
        retries = asyncio.run(send_all(bodies, server, args.transport, args.concurrency))
        accepted_s = time.perf_counter() - start
        while asyncio.run(count_spans(database_url)) < args.spans:
            time.sleep(0.05)
        queryable_s = time.perf_counter() - start
        server_cpu = cpu_seconds(pid) - cpu_before
        client_cpu = time.process_time() - client_cpu_before
        stored = asyncio.run(count_spans(database_url))
        rss = peak_rss_mb(pid)

    print(f"database      {database_url.split('://')[0]}; quality detectors: {args.detectors or 'none'}")
    print(
        f"workload      {args.spans} spans in {len(bodies)} requests ({payload_mb:.1f} MB protobuf), "
        f"transport={args.transport}, concurrency={args.concurrency}, "
        f"prompts={args.distinct_prompts or 'each new'}"
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
