"""Query benchmark: the dashboard's typical queries over HTTP against a real Lumina process holding
1,000,000 spans (about 270,000 traces) of the ingest workload spread over the last 7 days.

The data is loaded through OTLP like any application's, unless the database already holds it (pass
the same ``--data-dir`` or ``--database`` again to skip the load). Timing starts once the server has
summed the settled hours for analytics, as it does 30 s after an hour stops changing. The query cache is
off, so every request is computed; each query (and dashboard page) runs ``--repeat`` times with varying
values, and p50 / p95 / max are printed against the targets of issues 4 and 5. ``--only`` picks queries
by the start of their label (``--only page:`` times the dashboard pages).

    .venv/bin/python bench/query.py --data-dir /tmp/lumina-query-bench
    .venv/bin/python bench/query.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/bench_query
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count_spans, lumina_server, send_all, stale_hours
from workload import SERVICES, WORDS, requests

DAY_NS = 86400 * 10**9
WEEK_NS = 7 * DAY_NS
TRACE_LIST_MS, TRACE_DETAIL_MS, WEEK_BY_MODEL_MS = 50, 20, 300
PAGE_MS = 1000
"""Issue 5: every dashboard page renders in under 1 s (server time) with 1M spans."""

Params = Callable[[int], dict[str, Any]]


def cycle(name: str, values: list[Any]) -> Params:
    return lambda i: {name: values[i % len(values)]}


def queries(now_ns: int, trace_ids: list[str], models: list[str]) -> Iterator[tuple[str, str, Params, float | None]]:
    """(label, path, parameters of the i-th run, target p95 in ms); ``models`` as the catalogue lists them."""
    ms = lambda ns: ns // 10**6  # noqa: E731
    hour_ago = [ms(now_ns - (1 + k) * 3600 * 10**9) for k in range(24)]
    target = TRACE_LIST_MS
    yield "traces: newest first", "/api/v1/traces", lambda i: {}, target
    yield "traces: service", "/api/v1/traces", cycle("service", SERVICES), target
    yield "traces: span_name", "/api/v1/traces", cycle("span_name", ["chat", "tool.call", "agent.run"]), target
    yield "traces: model", "/api/v1/traces", cycle("model", models), target
    yield "traces: model, no match", "/api/v1/traces", cycle("model", ["gpt-4o", "model-nobody-uses"]), target
    yield "traces: provider", "/api/v1/traces", cycle("provider", ["openai", "anthropic"]), target
    yield "traces: status=error", "/api/v1/traces", cycle("status", ["error"]), target
    yield "traces: since an hour", "/api/v1/traces", cycle("start", hour_ago), target
    yield "traces: min_cost", "/api/v1/traces", cycle("min_cost", [0.005, 0.01, 0.02]), target
    yield "traces: min_latency_ms", "/api/v1/traces", cycle("min_latency_ms", [1000, 2000, 2900]), target
    yield "traces: user_id", "/api/v1/traces", lambda i: {"user_id": f"user-{i * 37 % 1000}"}, target
    yield (
        "traces: attribute",
        "/api/v1/traces",
        cycle("attribute", ["tool.name=search", "deployment.environment=prod"]),
        target,
    )
    yield (
        "traces: attribute, rare value",
        "/api/v1/traces",
        lambda i: {"attribute": f"user.id=user-{i * 37 % 1000}"},
        None,
    )
    yield "traces: q (text)", "/api/v1/traces", cycle("q", WORDS[:8]), target
    yield "traces: sort=-cost", "/api/v1/traces", cycle("sort", ["-cost"]), target
    yield "spans: model, llm", "/api/v1/spans", lambda i: {"model": models[i % len(models)], "llm": "true"}, target
    yield (
        "trace detail",
        "/api/v1/traces/{trace_id}",
        lambda i: {"trace_id": trace_ids[i % len(trace_ids)]},
        (TRACE_DETAIL_MS),
    )
    week = {"start": ms(now_ns - WEEK_NS), "end": ms(now_ns)}
    yield (
        "7-day cost by model by hour",
        "/api/v1/analytics",
        lambda i: {**week, "group_by": "model", "bucket": "hour", "latency": "false"},
        WEEK_BY_MODEL_MS,
    )
    yield (
        "7-day by model by hour + p50/95/99",
        "/api/v1/analytics",
        lambda i: {
            **week,
            "group_by": "model",
            "bucket": "hour",
        },
        None,
    )
    yield "24 h overview by hour + latency", "/api/v1/analytics", lambda i: {"bucket": "hour"}, None
    yield "7-day cost by service", "/api/v1/analytics", lambda i: {**week, "group_by": "service"}, None
    yield "top 10 traces by cost (24 h)", "/api/v1/analytics/top", lambda i: {"by": "traces"}, None
    yield "top span names (7 days)", "/api/v1/analytics/top", lambda i: {**week, "by": "span_names"}, None
    yield "services seen", "/api/v1/services", lambda i: {}, None
    yield "models seen", "/api/v1/models", lambda i: {}, None
    yield "page: overview (24 h)", "/", lambda i: {}, PAGE_MS
    yield "page: overview (1 h)", "/", cycle("range", ["1h"]), PAGE_MS
    yield "page: overview (7 days)", "/", cycle("range", ["7d"]), None
    yield "page: traces", "/traces", lambda i: {}, PAGE_MS
    yield (
        "page: traces, model + cost",
        "/traces",
        lambda i: {"model": models[i % len(models)], "sort": "-cost"},
        PAGE_MS,
    )
    yield "page: traces (7 days, q)", "/traces", lambda i: {"range": "7d", "q": WORDS[i % 8]}, PAGE_MS
    yield "page: trace view", "/traces/{trace_id}", lambda i: {"trace_id": trace_ids[i % len(trace_ids)]}, PAGE_MS
    yield "page: models & pricing", "/models", lambda i: {}, PAGE_MS


def load(server: Any, database_url: str, spans: int, concurrency: int) -> None:
    have = asyncio.run(count_spans(database_url))
    if have >= spans:
        print(f"database already holds {have:,} spans: not loading", flush=True)
        return
    now = time.time_ns()
    gap = WEEK_NS // spans
    print(f"loading {spans:,} spans over the last 7 days …", flush=True)
    start = time.perf_counter()
    chunk = 100_000
    bodies = requests(spans, 512, seed=11, start_ns=now - WEEK_NS, span_gap_ns=gap)
    while batch := list(itertools.islice(bodies, chunk // 512)):
        asyncio.run(send_all(batch, server, "both", concurrency))
    while asyncio.run(count_spans(database_url)) < spans:
        time.sleep(0.2)
    print(f"loaded in {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default="/tmp/lumina-query-bench", help="SQLite database and config folder")
    parser.add_argument("--database", help="database URL (default: SQLite in --data-dir)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8, help="exporters while loading")
    parser.add_argument("--only", default="", help="time only the queries whose label starts with this")
    args = parser.parse_args()

    workdir = Path(args.data_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = args.database or f"sqlite+aiosqlite:///{workdir / 'lumina.db'}"
    with lumina_server(workdir, database_url, "query_cache_entries = 0") as server:
        load(server, database_url, args.spans, args.concurrency)
        began = time.perf_counter()
        while (stale := asyncio.run(stale_hours(database_url))) and time.perf_counter() - began < 600:
            time.sleep(1)
        print(f"hours summed for analytics ({stale} still stale) after {time.perf_counter() - began:.0f} s")
        client = httpx.Client(base_url=server.http_url, timeout=120)
        newest = client.get("/api/v1/traces", params={"limit": 500}).json()["data"]
        now_ns = max(t["start_time_unix_nano"] for t in newest)
        sample = client.get("/api/v1/traces", params={"limit": 500, "sort": "cost"}).json()["data"]
        trace_ids = [t["trace_id"] for t in random.Random(3).sample(newest + sample, 100)]
        print(f"\ndatabase {database_url.split('://')[0]}, {asyncio.run(count_spans(database_url)):,} spans")
        print(f"{'query':<38} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target p95")
        failed = []
        models = [m["model"] for m in client.get("/api/v1/models").json()["data"]]
        for label, path, params, target in queries(now_ns, trace_ids, models):
            if not label.startswith(args.only):
                continue
            timings = []
            for i in range(args.repeat + 1):
                query = params(i)
                url = path.format(**query)
                query = {k: v for k, v in query.items() if "{" + k + "}" not in path}
                began = time.perf_counter()
                response = client.get(url, params=query)
                elapsed = (time.perf_counter() - began) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{label}: {response.status_code} {response.text[:300]}")
                if i:  # the first run warms the page cache
                    timings.append(elapsed)
            p95 = statistics.quantiles(timings, n=20, method="inclusive")[18]
            verdict = "" if target is None else (f"< {target} ok" if p95 < target else f"< {target} MISSED")
            if target is not None and p95 >= target:
                failed.append(label)
            print(f"{label:<38} {statistics.median(timings):8.1f} {p95:8.1f} {max(timings):8.1f}  {verdict}")
    print("\nall targets met" if not failed else f"\ntargets missed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
