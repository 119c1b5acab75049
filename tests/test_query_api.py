"""The query API on a known data set: every filter, sorts and pages of traces and spans, analytics checked
against numbers computed here from the data sent, the catalogue, and the cache after new data."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lumina_core.app import Lumina
from lumina_core.server import Endpoints
from lumina_core.storage import queries
from tests.conftest import make_settings, running_lumina
from tests.support.otlp import raw_request

HOUR_NS = 3600 * 10**9
BASE_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z, on an hour boundary
PRICES = {"m-small": (1.0, 2.0), "m-large": (10.0, 30.0)}  # USD per million input, output tokens
PROVIDERS = {"m-small": "acme", "m-large": "globex"}


def make_calls(n: int = 36) -> list[dict]:
    """LLM calls of a made-up application: hours, models, services, users, errors, latencies vary."""
    calls = []
    for i in range(n):
        model = "m-small" if i % 2 else "m-large"
        calls.append(
            {
                "i": i,
                "trace_id": os.urandom(16),
                "start": BASE_NS + (i % 3) * HOUR_NS + i * 10**9,
                "latency_ms": float((i * 37) % 97 + 1),
                "model": model,
                "provider": PROVIDERS[model],
                "service": "batch" if i % 3 == 0 else "chat-api",
                "user": f"u{i % 4}",
                "session": f"conv-{i % 5}",
                "error": i % 7 == 0,
                "input": 100 + 10 * i,
                "output": 20 + i,
                "text": f"question {i}" + (" about zebras" if i % 5 == 0 else ""),
            }
        )
    return calls


def cost(call: dict) -> float:
    price_in, price_out = PRICES[call["model"]]
    return (call["input"] * price_in + call["output"] * price_out) / 1e6


def messages(text: str) -> str:
    return json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])


def request_for(call: dict):
    root = os.urandom(8)
    start, end = call["start"], call["start"] + int(call["latency_ms"] * 1e6)
    root_span = {
        "trace_id": call["trace_id"],
        "span_id": root,
        "name": "handle",
        "start": start - 10**6,
        "end": end + 10**6,
        "kind": 2,
    }
    llm_span = {
        "trace_id": call["trace_id"],
        "parent_span_id": root,
        "name": f"chat {call['model']}",
        "start": start,
        "end": end,
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": call["provider"],
            "gen_ai.request.model": call["model"],
            "gen_ai.usage.input_tokens": call["input"],
            "gen_ai.usage.output_tokens": call["output"],
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": call["text"]}]}]
            ),
            "user.id": call["user"],
            "gen_ai.conversation.id": call["session"],
        },
    }
    if call["error"]:
        llm_span["status_code"] = 2
    return raw_request([root_span, llm_span], service=call["service"])


@pytest.fixture
def dataset(tmp_path: Path, database_url: str) -> Iterator[tuple[Lumina, Endpoints, list[dict]]]:
    custom = [{"model": m, "input": i, "output": o} for m, (i, o) in PRICES.items()]
    settings = make_settings(tmp_path, database_url, **{"pricing.custom": custom})
    calls = make_calls()
    with running_lumina(settings) as (lumina, server):
        for call in calls:
            response = httpx.post(
                server.otlp_http_url,
                content=request_for(call).SerializeToString(),
                headers={"content-type": "application/x-protobuf"},
            )
            assert response.status_code == 200, response.text
        yield lumina, server, calls


def get(server: Endpoints, path: str, **params) -> dict:
    response = httpx.get(f"{server.http_url}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def trace_ids(server: Endpoints, **params) -> set[str]:
    return {t["trace_id"] for t in get(server, "/api/v1/traces", limit=500, **params)["data"]}


def expected(calls: list[dict], keep) -> set[str]:
    return {c["trace_id"].hex() for c in calls if keep(c)}


@pytest.mark.parametrize("few_traces", [1000, 0], ids=["index-first", "traces-first"])
def test_every_filter_on_traces_and_spans(dataset, few_traces: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of finding traces give the same answers: through the span index first (a filter that
    selects few traces) and walking traces in sort order (one that selects many)."""
    monkeypatch.setattr(queries, "FEW_TRACES", few_traces)
    _, server, calls = dataset
    cases = [
        ({"service": "batch"}, lambda c: c["service"] == "batch"),
        ({"span_name": "chat m-large"}, lambda c: c["model"] == "m-large"),
        ({"model": "m-small"}, lambda c: c["model"] == "m-small"),
        ({"provider": "globex"}, lambda c: c["provider"] == "globex"),
        ({"status": "error"}, lambda c: c["error"]),
        ({"status": "ok"}, lambda c: not c["error"]),
        ({"start": BASE_NS // 10**6 + 3600_000}, lambda c: c["start"] - 10**6 >= BASE_NS + HOUR_NS),
        ({"end": "2026-01-01T01:00:00Z"}, lambda c: c["start"] - 10**6 < BASE_NS + HOUR_NS),
        ({"min_cost": 0.005}, lambda c: cost(c) >= 0.005),
        ({"max_cost": 0.0004}, lambda c: cost(c) <= 0.0004),
        ({"min_latency_ms": 50}, lambda c: c["latency_ms"] + 2 >= 50),
        ({"max_latency_ms": 20}, lambda c: c["latency_ms"] + 2 <= 20),
        ({"attribute": "user.id=u3"}, lambda c: c["user"] == "u3"),
        ({"user_id": "u3"}, lambda c: c["user"] == "u3"),
        ({"session_id": "conv-2"}, lambda c: c["session"] == "conv-2"),
        ({"attribute": "service.name=batch"}, lambda c: c["service"] == "batch"),  # a resource attribute
        ({"attribute": "gen_ai.usage.input_tokens=150"}, lambda c: c["input"] == 150),  # an integer
        ({"q": "ZEBRAS"}, lambda c: "zebras" in c["text"]),
        ({"q": "100%_"}, lambda c: False),  # LIKE wildcards are literal
        ({"model": "m-small", "status": "error"}, lambda c: c["model"] == "m-small" and c["error"]),
    ]
    for params, keep in cases:
        want = expected(calls, keep)
        assert trace_ids(server, **params) == want, params
        spans = get(server, "/api/v1/spans", limit=500, llm="true", **params)["data"]
        if "min_latency_ms" not in params and "max_latency_ms" not in params and "start" not in params:
            assert {s["trace_id"] for s in spans} == want, params
    assert {s["latency_ms"] for s in get(server, "/api/v1/spans", llm="true", max_latency_ms=5)["data"]} == {
        c["latency_ms"] for c in calls if c["latency_ms"] <= 5
    }
    assert {s["name"] for s in get(server, "/api/v1/spans", llm="false", limit=500)["data"]} == {"handle"}


def test_sorts_and_pages_of_spans(dataset) -> None:
    _, server, calls = dataset
    seen: list[dict] = []
    cursor = None
    while True:
        params = {"sort": "-cost", "limit": 7, "llm": "true", **({"cursor": cursor} if cursor else {})}
        page = get(server, "/api/v1/spans", **params)
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(calls) == len({s["span_id"] for s in seen})
    assert [s["cost_usd"] for s in seen] == sorted((s["cost_usd"] for s in seen), reverse=True)
    assert "attributes" not in seen[0] and "input_messages" not in seen[0]
    detail = get(server, f"/api/v1/spans/{seen[0]['trace_id']}/{seen[0]['span_id']}")
    assert detail["attributes"]["user.id"].startswith("u") and "question" in json.dumps(detail["input_messages"])
    by_latency = get(server, "/api/v1/traces", sort="duration", limit=500)["data"]
    assert [t["duration_ms"] for t in by_latency] == sorted(t["duration_ms"] for t in by_latency)
    # a cursor from one sort cannot be used with another
    cursor = get(server, "/api/v1/traces", sort="cost", limit=2)["next_cursor"]
    bad = httpx.get(f"{server.http_url}/api/v1/traces", params={"sort": "-start_time", "cursor": cursor})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def test_analytics_match_numbers_computed_from_the_data(dataset) -> None:
    _, server, calls = dataset
    start, end = "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z"
    body = get(server, "/api/v1/analytics", start=start, end=end, bucket="hour", group_by="model")
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for call in calls:
        groups[((call["start"] - BASE_NS) // HOUR_NS, call["model"])].append(call)
    assert len(body["data"]) == len(groups) == 6
    for row in body["data"]:
        hour = (row["bucket_unix_nano"] - BASE_NS) // HOUR_NS
        members = groups[(hour, row["group"])]
        assert row["bucket"] == f"2026-01-01T0{hour}:00:00Z"
        assert row["requests"] == len(members)
        assert row["errors"] == sum(c["error"] for c in members)
        assert row["error_rate"] == pytest.approx(row["errors"] / len(members))
        assert row["cost_usd"] == pytest.approx(sum(map(cost, members)), rel=1e-9)
        assert row["input_tokens"] == sum(c["input"] for c in members)
        assert row["output_tokens"] == sum(c["output"] for c in members)
        for name, share in (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99)):
            assert row[name] == pytest.approx(nearest_rank([c["latency_ms"] for c in members], share), abs=1e-6)

    by_user = get(server, "/api/v1/analytics", start=start, end=end, group_by="attribute:user.id", latency="false")
    totals = defaultdict(float)
    for call in calls:
        totals[call["user"]] += cost(call)
    assert {r["group"]: pytest.approx(r["cost_usd"]) for r in by_user["data"]} == totals
    assert "latency_p95_ms" not in by_user["data"][0]

    others = get(server, "/api/v1/analytics", start="2025-12-31T23:00:00Z", end=end, llm="false")["data"]
    assert [(r["requests"], r["cost_usd"]) for r in others] == [(len(calls), None)]  # the root spans
    minute = httpx.get(f"{server.http_url}/api/v1/analytics", params={"bucket": "minute", "start": 0})
    assert minute.status_code == 400  # too many buckets

    top_names = get(server, "/api/v1/analytics/top", by="span_names", start=start, end=end, n=1)["data"]
    assert top_names[0]["group"] == "chat m-large"
    top_traces = get(server, "/api/v1/analytics/top", by="traces", start=start, end=end, n=3)["data"]
    assert [t["trace_id"] for t in top_traces] == [
        c["trace_id"].hex() for c in sorted(calls, key=cost, reverse=True)[:3]
    ]


def test_services_and_models_seen(dataset) -> None:
    _, server, calls = dataset
    services = {s["service_name"]: s for s in get(server, "/api/v1/services")["data"]}
    assert set(services) == {"batch", "chat-api"}
    batch = [c for c in calls if c["service"] == "batch"]
    assert services["batch"]["span_count"] == 2 * len(batch)
    assert services["batch"]["first_seen_unix_nano"] == min(c["start"] for c in batch) - 10**6
    models = {m["model"]: m for m in get(server, "/api/v1/models")["data"]}
    large = [c for c in calls if c["model"] == "m-large"]
    assert models["m-large"]["provider"] == "globex"
    assert models["m-large"]["requests"] == len(large)
    assert models["m-large"]["cost_usd"] == pytest.approx(sum(map(cost, large)))
    assert models["m-large"]["last_seen_unix_nano"] == max(c["start"] for c in large)


def test_cached_results_are_never_stale_after_an_ingest_is_acknowledged(dataset) -> None:
    lumina, server, _ = dataset
    params = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "group_by": "model"}
    first = get(server, "/api/v1/analytics", **params)
    hits = lumina.cache.hits
    assert get(server, "/api/v1/analytics", **params) == first
    assert lumina.cache.hits == hits + 1  # served from the cache
    count_before = len(get(server, "/api/v1/traces", limit=500)["data"])

    extra = {**make_calls(1)[0], "trace_id": os.urandom(16), "model": "m-small", "provider": "acme"}
    response = httpx.post(
        server.otlp_http_url,
        content=request_for(extra).SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    after = get(server, "/api/v1/analytics", **params)
    small = lambda body: next(r for r in body["data"] if r["group"] == "m-small")  # noqa: E731
    assert small(after)["requests"] == small(first)["requests"] + 1
    assert len(get(server, "/api/v1/traces", limit=500)["data"]) == count_before + 1
    assert extra["trace_id"].hex() in trace_ids(server, model="m-small")


def test_unknown_and_malformed_parameters_are_refused(sqlite_server: Endpoints) -> None:
    for path, params in [
        ("/api/v1/traces", {"servce": "typo"}),
        ("/api/v1/traces", {"sort": "name"}),
        ("/api/v1/traces", {"limit": "0"}),
        ("/api/v1/traces", {"min_cost": "cheap"}),
        ("/api/v1/traces", {"attribute": "no-equals-sign"}),
        ("/api/v1/traces", {"service": ["a", "b"]}),
        ("/api/v1/spans", {"llm": "yes"}),
        ("/api/v1/analytics", {"group_by": "colour"}),
        ("/api/v1/analytics", {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
    ]:
        response = httpx.get(f"{sqlite_server.http_url}{path}", params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["error"]["code"] == "invalid_parameter"
    for path in ("/api/v1/traces/xyz", "/api/v1/spans/00/11", f"/api/v1/traces/{'a' * 32}"):
        assert httpx.get(f"{sqlite_server.http_url}{path}").status_code == 404


def test_hourly_sums_answer_exactly_what_the_spans_do(dataset) -> None:
    """Analytics read settled hours from their sums and the rest from spans: the numbers are the same
    before and after hours are summed, with partial hours at the ends of a range, and after a new span
    lands in an hour already summed (which turns it stale until it is summed again)."""
    import asyncio

    import sqlalchemy as sa

    from lumina_core.storage import analytics
    from lumina_core.storage.database import create_engine
    from lumina_core.storage.filters import SpanFilter
    from lumina_core.storage.hours import sum_settled_hours

    lumina, server, calls = dataset
    shapes = [
        (SpanFilter(start_ns=BASE_NS, end_ns=BASE_NS + 3 * HOUR_NS, llm=True), "model", "hour"),
        (SpanFilter(start_ns=BASE_NS + HOUR_NS // 3, end_ns=BASE_NS + 2 * HOUR_NS + 5, llm=True), "service", None),
        (SpanFilter(start_ns=BASE_NS - HOUR_NS, end_ns=BASE_NS + 5 * HOUR_NS, status="error", llm=True), None, "day"),
        (SpanFilter(start_ns=BASE_NS, end_ns=BASE_NS + 3 * HOUR_NS, provider="acme", llm=True), "span_name", "hour"),
        (SpanFilter(start_ns=BASE_NS - HOUR_NS, end_ns=BASE_NS + 3 * HOUR_NS, llm=False), "provider", None),
    ]

    async def snapshot() -> list:
        engine = create_engine(lumina.settings.database_url)
        try:
            out = [await analytics.aggregate(engine, "default", flt, g, b, latency=False) for flt, g, b in shapes]
            out.append(await analytics.services(engine, "default"))
            out.append(await analytics.models(engine, "default"))
            return out
        finally:
            await engine.dispose()

    async def sum_all() -> tuple[int, int]:
        engine = create_engine(lumina.settings.database_url)
        try:
            await sum_settled_hours(engine, quiet_seconds=0)
            async with engine.connect() as conn:
                stale = (await conn.execute(sa.text("SELECT COUNT(*) FROM stale_hours"))).scalar_one()
                summed = (await conn.execute(sa.text("SELECT COUNT(*) FROM span_hours"))).scalar_one()
            return stale, summed
        finally:
            await engine.dispose()

    from_spans = asyncio.run(snapshot())
    first = from_spans[0]
    assert sum(r["requests"] for r in first) == len(calls)
    assert sum(r["cost_usd"] for r in first) == pytest.approx(sum(map(cost, calls)))
    assert asyncio.run(sum_all())[0] == 0 and asyncio.run(sum_all())[1] > 0
    assert_same(asyncio.run(snapshot()), from_spans)

    late = {**make_calls(1)[0], "trace_id": os.urandom(16), "start": BASE_NS + HOUR_NS + 1800 * 10**9}
    late.update(model="m-small", provider="acme", service="chat-api", error=False)
    response = httpx.post(
        server.otlp_http_url,
        content=request_for(late).SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    after = asyncio.run(snapshot())
    row = next(r for r in after[0] if r["group"] == "m-small" and r["bucket_unix_nano"] == BASE_NS + HOUR_NS)
    before = next(r for r in first if r["group"] == "m-small" and r["bucket_unix_nano"] == BASE_NS + HOUR_NS)
    assert row["requests"] == before["requests"] + 1
    assert row["cost_usd"] == pytest.approx(before["cost_usd"] + cost(late))
    assert asyncio.run(sum_all())[0] == 0
    assert_same(asyncio.run(snapshot()), after)


def assert_same(got: object, want: object) -> None:
    """Equal, with float sums compared to 1e-9 (the order of addition differs between the two paths)."""
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same(a, b)
    else:
        assert got == want


def test_analytics_of_nothing_count_zero_requests(sqlite_server: Endpoints) -> None:
    """Totals over no spans (sums are NULL in SQL) still say 0 requests and 0 errors."""
    [totals] = get(sqlite_server, "/api/v1/analytics", status="ok")["data"]
    assert totals["requests"] == 0 and totals["errors"] == 0 and totals["latency_p50_ms"] is None
