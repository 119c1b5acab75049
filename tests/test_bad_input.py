"""Malformed requests get the right OTLP/HTTP status and message; nothing already accepted is lost."""

from __future__ import annotations

import gzip
import os

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from lumina_core.server import Endpoints
from tests.support.otlp import raw_request

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}


@pytest.fixture
def small_limits_server(lumina_factory) -> Endpoints:
    return lumina_factory(**{"server.max_request_bytes": 64 * 1024, "server.max_decompressed_bytes": 256 * 1024})


def good_request(n: int = 3) -> bytes:
    return raw_request([{"name": f"ok-{i}"} for i in range(n)], service="good").SerializeToString()


def stored_span_count(server: Endpoints, service: str = "good") -> int:
    traces = httpx.get(f"{server.http_url}/api/v1/traces", params={"service": service, "limit": 500}).json()["data"]
    return sum(t["span_count"] for t in traces)


def status_message(response: httpx.Response) -> str:
    if response.headers["content-type"] == "application/json":
        return response.json()["message"]
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status.message


def test_bad_requests_are_refused_with_the_right_status_and_the_server_keeps_serving(
    small_limits_server: Endpoints,
) -> None:
    url = small_limits_server.otlp_http_url
    assert httpx.post(url, content=good_request(), headers=PROTOBUF).status_code == 200

    truncated = good_request()[:-7]
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))  # 50 MB of zeros in ~50 KB
    cases = [
        ("truncated protobuf", truncated, PROTOBUF, 400, "cannot decode protobuf"),
        ("invalid JSON", b'{"resourceSpans": [', JSON, 400, "invalid JSON"),
        ("JSON of the wrong shape", b'{"resourceSpans": {"a": 1}}', JSON, 400, "invalid OTLP/JSON"),
        ("JSON that is not an object", b"[1, 2]", JSON, 400, "must be an object"),
        ("empty JSON body", b"", JSON, 400, "invalid JSON"),
        ("wrong content type", good_request(), {"content-type": "text/plain"}, 415, "unsupported content type"),
        ("no content type", good_request(), {}, 415, "unsupported content type"),
        ("unknown encoding", good_request(), {**PROTOBUF, "content-encoding": "br"}, 415, "content encoding"),
        ("body over the limit", os.urandom(100 * 1024), PROTOBUF, 413, "exceeds"),
        ("gzip bomb", bomb, {**PROTOBUF, "content-encoding": "gzip"}, 413, "exceeds"),
        ("gzip that is not gzip", b"not gzip at all", {**PROTOBUF, "content-encoding": "gzip"}, 400, "gzip"),
        ("truncated gzip", gzip.compress(good_request())[:-12], {**PROTOBUF, "content-encoding": "gzip"}, 400, "gzip"),
    ]
    for label, body, headers, expected_status, expected_message in cases:
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == expected_status, label
        assert expected_message in status_message(response), (label, status_message(response))

    assert httpx.post(url, content=good_request(), headers=PROTOBUF).status_code == 200
    assert stored_span_count(small_limits_server) == 6
    assert httpx.get(f"{small_limits_server.http_url}/-/ready").status_code == 200


def test_empty_protobuf_request_is_a_valid_export_of_nothing(sqlite_server: Endpoints) -> None:
    response = httpx.post(sqlite_server.otlp_http_url, content=b"", headers=PROTOBUF)
    assert response.status_code == 200
    parsed = ExportTraceServiceResponse()
    parsed.ParseFromString(response.content)
    assert not parsed.HasField("partial_success")


def test_ids_of_the_wrong_length_are_rejected_through_partial_success(sqlite_server: Endpoints) -> None:
    request = raw_request(
        [
            {"name": "good-1"},
            {"name": "short-trace", "trace_id": os.urandom(8)},
            {"name": "long-span", "span_id": os.urandom(12)},
            {"name": "zero-trace", "trace_id": bytes(16)},
            {"name": "bad-parent", "parent_span_id": os.urandom(3)},
            {"name": "good-2"},
        ],
        service="good",
    )
    response = httpx.post(sqlite_server.otlp_http_url, content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    parsed = ExportTraceServiceResponse()
    parsed.ParseFromString(response.content)
    assert parsed.partial_success.rejected_spans == 4
    assert "trace_id" in parsed.partial_success.error_message
    assert "span_id" in parsed.partial_success.error_message
    assert stored_span_count(sqlite_server) == 2


def test_json_ids_that_are_not_hex_or_of_the_wrong_length_are_rejected(sqlite_server: Endpoints) -> None:
    def span(trace_id: str, span_id: str) -> dict:
        return {"traceId": trace_id, "spanId": span_id, "name": "s", "startTimeUnixNano": "1700000000000000000"}

    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "good"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
                            span("0af7651916cd43dd8448eb211c80319c"[:30], "b7ad6b7169203332"),
                            span("zz" * 16, "b7ad6b7169203333"),
                            span("0af7651916cd43dd8448eb211c80319c", "b7ad6b71692033"),
                        ]
                    }
                ],
            }
        ]
    }
    response = httpx.post(sqlite_server.otlp_http_url, json=body)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "3"
    assert stored_span_count(sqlite_server) == 1


def test_grpc_malformed_message_is_invalid_argument_and_good_ones_still_land(sqlite_server: Endpoints) -> None:
    import grpc

    with grpc.insecure_channel(sqlite_server.grpc_target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            export(good_request()[:-7], timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot decode protobuf" in err.value.details()
        reply = export(good_request(), timeout=10)
        assert not reply.HasField("partial_success")
    assert stored_span_count(sqlite_server) == 3
