"""The read API: trace list filters, newest-first keyset pagination, trace detail, and JSON errors."""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from lumina_core.server import Endpoints
from tests.support.otlp import raw_request

BASE_NS = 1_760_000_000_000_000_000  # 2025-10-09T08:53:20Z
SECOND = 1_000_000_000


def post(server: Endpoints, request) -> None:
    response = httpx.post(
        server.otlp_http_url, content=request.SerializeToString(), headers={"content-type": "application/x-protobuf"}
    )
    assert response.status_code == 200, response.text


def trace(service: str, start_s: int, *, model: str | None = None, error: bool = False, trace_id: bytes | None = None):
    trace_id = trace_id or os.urandom(16)
    root = os.urandom(8)
    spans = [
        {
            "trace_id": trace_id,
            "span_id": root,
            "name": f"{service}.handle",
            "start": BASE_NS + start_s * SECOND,
            "end": BASE_NS + start_s * SECOND + SECOND // 2,
            "status_code": 2 if error else 0,
        }
    ]
    if model:
        spans.append(
            {
                "trace_id": trace_id,
                "span_id": os.urandom(8),
                "parent_span_id": root,
                "name": "chat",
                "start": BASE_NS + start_s * SECOND + 1000,
                "end": BASE_NS + start_s * SECOND + 2000,
                "attributes": {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 5,
                },
            }
        )
    return raw_request(spans, service=service), trace_id.hex()


@pytest.fixture
def seeded(server: Endpoints) -> dict[str, str]:
    ids = {}
    for name, service, start, model, error in [
        ("a", "checkout", 0, "gpt-4o", False),
        ("b", "checkout", 10, None, True),
        ("c", "search", 20, "gpt-4o-mini", False),
        ("d", "search", 30, "gpt-4o", True),
        ("e", "checkout", 40, "gpt-4o-mini", False),
    ]:
        request, trace_id = trace(service, start, model=model, error=error)
        post(server, request)
        ids[name] = trace_id
    return ids


def listed(api: httpx.Client, **params) -> list[str]:
    response = api.get("/api/v1/traces", params=params)
    assert response.status_code == 200, response.text
    return [t["trace_id"] for t in response.json()["data"]]


def test_filters(api: httpx.Client, seeded: dict[str, str]) -> None:
    ids = {v: k for k, v in seeded.items()}
    names = lambda **params: [ids[t] for t in listed(api, **params)]  # noqa: E731
    assert names() == ["e", "d", "c", "b", "a"]
    assert names(service="checkout") == ["e", "b", "a"]
    assert names(model="gpt-4o") == ["d", "a"]
    assert names(status="error") == ["d", "b"]
    assert names(service="search", status="error") == ["d"]
    assert names(start="2025-10-09T08:53:40Z", end="2025-10-09T08:54:00Z") == ["d", "c"]
    assert names(start=str((BASE_NS + 20 * SECOND) // 1_000_000)) == ["e", "d", "c"]
    assert names(service="nobody") == []


def test_keyset_pagination_is_stable_under_concurrent_inserts(api: httpx.Client, server: Endpoints) -> None:
    for i in range(25):
        post(server, trace("paged", i)[0])
    seen: list[str] = []
    cursor = None
    stop = threading.Event()

    def insert_newer() -> None:
        i = 1000
        while not stop.is_set():
            post(server, trace("paged", i)[0])
            i += 1

    inserter = threading.Thread(target=insert_newer)
    inserter.start()
    try:
        while True:
            params = {"service": "paged", "limit": 7, **({"cursor": cursor} if cursor else {})}
            body = api.get("/api/v1/traces", params=params).json()
            seen.extend(t["trace_id"] for t in body["data"] if t["start_time_unix_nano"] < BASE_NS + 1000 * SECOND)
            cursor = body["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        inserter.join()
    assert len(seen) == len(set(seen)) == 25


def test_trace_detail_is_a_span_tree_with_llm_fields(api: httpx.Client, seeded: dict[str, str]) -> None:
    detail = api.get(f"/api/v1/traces/{seeded['a']}").json()
    assert detail["span_count"] == 2 and detail["llm_span_count"] == 1
    assert detail["start_time"] == "2025-10-09T08:53:20Z"
    assert detail["duration_ms"] == 500.0
    assert (detail["input_tokens"], detail["output_tokens"], detail["total_tokens"]) == (10, 5, 15)
    (root,) = detail["spans"]
    (child,) = root["children"]
    assert child["model"] == "gpt-4o" and child["provider"] == "openai" and child["children"] == []
    assert api.get(f"/api/v1/traces/{seeded['a'].upper()}").status_code == 200


def test_spans_of_one_trace_in_separate_requests_roll_up_together(api: httpx.Client, server: Endpoints) -> None:
    trace_id, root, child = os.urandom(16), os.urandom(8), os.urandom(8)
    # the child arrives first; until its root arrives the trace is named after what it has
    post(
        server,
        raw_request(
            [
                {
                    "trace_id": trace_id,
                    "span_id": child,
                    "parent_span_id": root,
                    "name": "child",
                    "start": BASE_NS + 2 * SECOND,
                    "end": BASE_NS + 3 * SECOND,
                }
            ],
            service="late",
        ),
    )
    early = api.get(f"/api/v1/traces/{trace_id.hex()}").json()
    assert (early["name"], early["span_count"], early["root_span_id"]) == ("child", 1, None)
    assert early["spans"][0]["name"] == "child"  # orphan shown as a root
    post(
        server,
        raw_request(
            [{"trace_id": trace_id, "span_id": root, "name": "root", "start": BASE_NS, "end": BASE_NS + 4 * SECOND}],
            service="late",
        ),
    )
    later = api.get(f"/api/v1/traces/{trace_id.hex()}").json()
    assert (later["name"], later["span_count"], later["duration_ms"]) == ("root", 2, 4000.0)
    assert later["spans"][0]["children"][0]["name"] == "child"


def test_errors_have_one_json_shape(api: httpx.Client) -> None:
    cases = [
        ("/api/v1/traces/" + "0" * 32, 404, "not_found"),
        ("/api/v1/traces?status=weird", 400, "invalid_parameter"),
        ("/api/v1/traces?limit=0", 400, "invalid_parameter"),
        ("/api/v1/traces?limit=abc", 400, "invalid_parameter"),
        ("/api/v1/traces?start=yesterday", 400, "invalid_parameter"),
        ("/api/v1/traces?start=2025-10-09T08:53:20", 400, "invalid_parameter"),
        ("/api/v1/traces?cursor=!!!", 400, "invalid_parameter"),
        ("/api/v1/nothing-here", 404, "not_found"),
    ]
    for path, status, code in cases:
        response = api.get(path)
        assert response.status_code == status, path
        assert response.json()["error"]["code"] == code, path
        assert response.json()["error"]["message"]
    assert api.post("/api/v1/traces").status_code == 405


def test_health_and_readiness(api: httpx.Client) -> None:
    assert api.get("/-/health").json() == {"status": "ok"}
    ready = api.get("/-/ready").json()
    assert ready["status"] == "ready"
    assert ready["checks"]["database"]["ok"] and ready["checks"]["worker"]["ok"]


def test_dashboard_lists_traces_and_escapes_span_content(server: Endpoints) -> None:
    request, trace_id = trace("<script>alert(1)</script>", 0, model="gpt-4o")
    post(server, request)
    page = httpx.get(f"{server.http_url}/traces")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    detail = httpx.get(f"{server.http_url}/traces/{trace_id}")
    assert detail.status_code == 200 and "gpt-4o" in detail.text
