"""Hostile or odd input from the network is stored, refused with a reason, or answered 4xx — never a 500,
and never at the cost of the good spans sent beside it."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from lumina_core.server import Endpoints
from tests.support.db import fetch_all
from tests.support.otlp import raw_request

PROTOBUF = {"content-type": "application/x-protobuf"}


def post(server: Endpoints, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(server.otlp_http_url, content=body, headers=headers or PROTOBUF)


def test_hostile_spans_are_stored_or_refused_and_their_neighbours_land(server: Endpoints, database_url: str) -> None:
    deep = "[" * 300 + "]" * 300
    hostile = [
        {"name": "deep messages", "attributes": {"gen_ai.request.model": "m", "gen_ai.input.messages": deep}},
        {"name": "odd index", "attributes": {"gen_ai.system": "x", "gen_ai.prompt.².role": "user"}},
        {
            "name": "huge and negative counts",
            "attributes": {
                "gen_ai.request.model": "m",
                "gen_ai.usage.input_tokens": "99999999999999999999",
                "gen_ai.usage.output_tokens": -5,
            },
        },
        {"name": "nan cost", "attributes": {"gen_ai.request.model": "m", "gen_ai.usage.cost": float("nan")}},
        {"name": "nul\x00name", "attributes": {"gen_ai.request.model": "m\x00x", "note": "a\x00b"}},
        {"name": "far future", "start": 2**63 + 5, "end": 2**63 + 10},
    ]
    good = [{"name": f"good-{i}"} for i in range(3)]
    response = post(server, raw_request(hostile + good, service="hostile").SerializeToString())
    assert response.status_code == 200
    reply = ExportTraceServiceResponse.FromString(response.content)
    assert reply.partial_success.rejected_spans == 1
    assert "2262" in reply.partial_success.error_message
    names = {row[0] for row in fetch_all(database_url, "SELECT name FROM spans")}
    assert {"deep messages", "odd index", "huge and negative counts", "nan cost", "good-0", "good-2"} <= names
    assert len(names) == 8
    counts = fetch_all(
        database_url, "SELECT input_tokens, output_tokens, cost_usd FROM spans WHERE name = 'huge and negative counts'"
    )
    assert counts == [(None, None, None)]
    assert fetch_all(database_url, "SELECT cost_usd FROM spans WHERE name = 'nan cost'") == [(None,)]


def test_a_very_deep_trace_is_served(server: Endpoints) -> None:
    trace_id = os.urandom(16)
    ids = [os.urandom(8) for _ in range(150)]
    spans = [
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": ids[i - 1] if i else b"",
            "name": f"level-{i}",
            "start": 1_700_000_000_000_000_000 + i,
        }
        for i, span_id in enumerate(ids)
    ]
    assert post(server, raw_request(spans).SerializeToString()).status_code == 200
    detail = httpx.get(f"{server.http_url}/api/v1/traces/{trace_id.hex()}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["span_count"] == 150
    assert body["spans"][0]["name"] == "level-0"
    assert len(body["spans"]) > 1  # levels past the depth limit are listed as roots of their own
    assert httpx.get(f"{server.http_url}/traces/{trace_id.hex()}").status_code == 200


def test_out_of_range_parameters_are_4xx(sqlite_server: Endpoints) -> None:
    base = sqlite_server.http_url
    import base64

    huge_cursor = base64.urlsafe_b64encode(b"99999999999999999999:abc").decode().rstrip("=")
    for path in ("/api/v1/traces?start=%C2%B2", f"/api/v1/traces?cursor={huge_cursor}"):
        response = httpx.get(base + path)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == "invalid_parameter"
    # a time past what can be stored means "the far future": nothing is that late, nothing breaks
    for path in ("/api/v1/traces?start=99999999999999999", "/api/v1/traces?start=9999-12-31T00:00:00Z"):
        response = httpx.get(base + path)
        assert response.status_code == 200 and response.json()["data"] == [], path
    assert httpx.get(f"{base}/api/v1/pricing/quote?model=gpt-4o&at=99999999999999999").status_code == 200
    assert httpx.get(f"{base}/traces?cursor={huge_cursor}").status_code == 400  # a page saying so, not a 500
    assert httpx.delete(f"{base}/api/v1/pricing/custom/99999999999999999999").status_code == 404
    far = httpx.post(
        f"{base}/api/v1/pricing/custom", json={"model": "m", "input": 1, "output": 1, "effective_from": "3000-01-01"}
    )
    assert far.status_code == 422


def test_every_member_of_a_multi_member_gzip_body_is_read(sqlite_server: Endpoints) -> None:
    body = raw_request([{"name": f"member-span-{i}"} for i in range(20)], service="gz").SerializeToString()
    half = len(body) // 2
    response = post(
        sqlite_server, gzip.compress(body[:half]) + gzip.compress(body[half:]), {**PROTOBUF, "content-encoding": "gzip"}
    )
    assert response.status_code == 200
    traces = httpx.get(f"{sqlite_server.http_url}/api/v1/traces", params={"service": "gz", "limit": 100}).json()
    assert sum(t["span_count"] for t in traces["data"]) == 20
    trailing = post(sqlite_server, gzip.compress(body) + b"garbage", {**PROTOBUF, "content-encoding": "gzip"})
    assert trailing.status_code == 400


def test_structured_message_attributes_are_not_changed_by_extraction(sqlite_server: Endpoints) -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "kv"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": os.urandom(16).hex(),
                                "spanId": os.urandom(8).hex(),
                                "name": "chat",
                                "startTimeUnixNano": "1700000000000000000",
                                "attributes": [
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                                    {
                                        "key": "gen_ai.input.messages",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "role", "value": {"stringValue": "user"}},
                                                    {
                                                        "key": "parts",
                                                        "value": {
                                                            "arrayValue": {
                                                                "values": [
                                                                    {
                                                                        "kvlistValue": {
                                                                            "values": [
                                                                                {
                                                                                    "key": "type",
                                                                                    "value": {"stringValue": "text"},
                                                                                },
                                                                                {
                                                                                    "key": "content",
                                                                                    "value": {"stringValue": "hi"},
                                                                                },
                                                                            ]
                                                                        }
                                                                    }
                                                                ]
                                                            }
                                                        },
                                                    },
                                                ]
                                            }
                                        },
                                    },
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    assert httpx.post(sqlite_server.otlp_http_url, json=body).status_code == 200
    (trace,) = httpx.get(f"{sqlite_server.http_url}/api/v1/traces", params={"service": "kv"}).json()["data"]
    (span,) = httpx.get(f"{sqlite_server.http_url}/api/v1/traces/{trace['trace_id']}").json()["spans"]
    assert span["input_messages"][0]["content"] == "hi"
    assert "content" not in span["attributes"]["gen_ai.input.messages"]


def test_custom_price_on_the_request_model_beats_the_list_price_of_the_response_model(
    sqlite_server: Endpoints,
) -> None:
    base = sqlite_server.http_url
    assert (
        httpx.post(
            f"{base}/api/v1/pricing/custom", json={"model": "my-gpt4o-deploy", "input": 1, "output": 1}
        ).status_code
        == 201
    )
    trace_id = os.urandom(16)
    span = {
        "trace_id": trace_id,
        "name": "chat",
        "attributes": {
            "gen_ai.provider.name": "azure.ai.openai",
            "gen_ai.request.model": "my-gpt4o-deploy",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1_000_000,
            "gen_ai.usage.output_tokens": 1_000_000,
        },
    }
    assert post(sqlite_server, raw_request([span]).SerializeToString()).status_code == 200
    (stored,) = httpx.get(f"{base}/api/v1/traces/{trace_id.hex()}").json()["spans"]
    assert (stored["cost_source"], stored["cost_usd"]) == ("custom", pytest.approx(2.0))


def test_time_of_day_prices_follow_the_call_time() -> None:
    from lumina_core.pricing import PricingChain
    from lumina_plugins.pricing_genai import GenAIPricesProvider

    chain = PricingChain([("genai_prices", GenAIPricesProvider())])
    night = int(datetime(2025, 6, 1, 17, 0, tzinfo=UTC).timestamp()) * 1_000_000_000  # DeepSeek off-peak
    day = int(datetime(2025, 6, 1, 10, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert (
        chain.lookup("deepseek", "deepseek-chat", day).input != chain.lookup("deepseek", "deepseek-chat", night).input
    )


def test_numeric_looking_environment_values_stay_text_where_text_is_wanted() -> None:
    from lumina_core.config import load_settings

    settings = load_settings(None, env={"LUMINA_DATA_DIR": "2024", "LUMINA_SERVER__PORT": "9100"})
    assert (settings.data_dir, settings.server.port) == ("2024", 9100)
    assert json.dumps(settings.pipeline.extractors)
