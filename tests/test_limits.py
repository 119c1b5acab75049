"""The daily trace limit, on SQLite and PostgreSQL: exactly the traces after the limit are refused, with
concurrent senders on two Lumina instances sharing the database; refusals come back through OTLP partial
success and are counted; spans of an admitted trace still get in; the count resets at 00:00 UTC."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from lumina_core.server import Endpoints
from lumina_core.storage.database import create_engine, migrate
from lumina_core.storage.limits import DailyLimiter
from lumina_core.testing import llm_span, otlp_request
from tests.support.db import fetch_all

PROTOBUF = {"content-type": "application/x-protobuf"}
LIMIT = 300


def send(server: Endpoints, spans: list[dict]) -> ExportTraceServiceResponse:
    response = httpx.post(
        server.otlp_http_url, content=otlp_request(spans, service="svc").SerializeToString(), headers=PROTOBUF
    )
    assert response.status_code == 200, response.text
    return ExportTraceServiceResponse.FromString(response.content)


def traces(n: int, spans_each: int = 2) -> list[dict]:
    out = []
    for _ in range(n):
        trace_id = os.urandom(16)
        out += [{**llm_span(), "trace_id": trace_id, "span_id": os.urandom(8)} for _ in range(spans_each)]
    return out


def test_exactly_the_traces_after_the_limit_are_refused_across_instances(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    servers = [lumina_factory(database_url, **{"limits.daily_traces": LIMIT}) for _ in range(2)]
    requests = [(servers[i % 2], traces(10)) for i in range(80)]  # 800 traces of 2 spans, from 8 senders
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda job: send(*job), requests))
    refused = sum(r.partial_success.rejected_spans for r in replies)
    assert refused == (800 - LIMIT) * 2
    messages = {r.partial_success.error_message for r in replies if r.partial_success.rejected_spans}
    assert all("reached its daily limit of 300 traces" in m and "00:00 UTC" in m for m in messages)
    [(stored_traces, stored_spans)] = fetch_all(database_url, "SELECT count(DISTINCT trace_id), count(*) FROM spans")
    assert (stored_traces, stored_spans) == (LIMIT, LIMIT * 2)
    [(admitted, refused_traces, refused_spans)] = fetch_all(
        database_url, "SELECT traces, refused_traces, refused_spans FROM daily_usage WHERE project_id = 'default'"
    )
    assert (admitted, refused_traces, refused_spans) == (LIMIT, 800 - LIMIT, (800 - LIMIT) * 2)


def test_later_spans_of_an_admitted_trace_get_in_past_the_limit(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    server = lumina_factory(database_url, **{"limits.daily_traces": 2})
    first = traces(2)
    assert send(server, first).partial_success.rejected_spans == 0
    late = [{**llm_span(), "trace_id": first[0]["trace_id"], "span_id": os.urandom(8)}]
    reply = send(server, late + traces(1))
    assert reply.partial_success.rejected_spans == 2  # the new trace only
    [(count,)] = fetch_all(database_url, "SELECT count(*) FROM spans")
    assert count == 5


def test_no_limit_with_zero(lumina_factory: Callable[..., Endpoints]) -> None:
    server = lumina_factory(**{"limits.daily_traces": 0, "limits.projects": {"other": 1}})
    assert send(server, traces(50)).partial_success.rejected_spans == 0


def test_the_count_resets_at_midnight_utc(tmp_path: Path) -> None:
    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}")
        await migrate(engine)
        now = [1_767_225_599.0]  # 2025-12-31 23:59:59 UTC
        limiter = DailyLimiter(engine, lambda project: 2, clock=lambda: now[0])
        try:
            assert (await limiter.admit("p", {"a": 1, "b": 1})).admitted == {"a", "b"}
            over = await limiter.admit("p", {"c": 3})
            assert over.admitted == set() and over.refused_spans == 3
            assert (await limiter.admit("q", {"c": 1})).admitted == {"c"}, "each project has its own count"
            now[0] += 1  # 2026-01-01 00:00:00 UTC
            assert (await limiter.admit("p", {"c": 1, "d": 1, "e": 1})).admitted == {"c", "d"}
        finally:
            await engine.dispose()

    asyncio.run(run())
