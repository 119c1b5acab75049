"""Traces sent by the real OpenTelemetry SDK exporters over every transport are stored and readable."""

from __future__ import annotations

import gzip

import httpx
import orjson
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from lumina_core.server import Endpoints
from tests.support.otlp import otlp_json, record_spans


def agent_trace(tracer) -> str:
    """A three-span agent trace with one LLM call and one failing tool; returns its trace id."""
    with tracer.start_as_current_span("agent.run") as root:
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attributes(
                {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.cache_read.input_tokens": 600,
                    "gen_ai.usage.output_tokens": 300,
                    "gen_ai.usage.reasoning.output_tokens": 100,
                    "user.id": "u-42",
                }
            )
        with tracer.start_as_current_span("tool.search") as tool:
            tool.set_status(Status(StatusCode.ERROR, "search backend down"))
        return format(root.get_span_context().trace_id, "032x")


def send_with(exporter, service: str) -> str:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace_id = agent_trace(provider.get_tracer("tests"))
    provider.force_flush()
    provider.shutdown()
    return trace_id


def assert_agent_trace(server: Endpoints, trace_id: str, service: str) -> None:
    with httpx.Client(base_url=server.http_url) as client:
        listed = client.get("/api/v1/traces", params={"service": service}).json()["data"]
        assert [t["trace_id"] for t in listed] == [trace_id]
        trace = client.get(f"/api/v1/traces/{trace_id}").json()
    assert trace["name"] == "agent.run"
    assert trace["span_count"] == 3
    assert trace["llm_span_count"] == 1
    assert trace["status"] == "error"
    assert trace["input_tokens"] == 400 and trace["cache_read_tokens"] == 600
    assert trace["output_tokens"] == 200 and trace["reasoning_tokens"] == 100
    (root,) = trace["spans"]
    assert root["name"] == "agent.run" and root["parent_span_id"] is None
    children = {c["name"]: c for c in root["children"]}
    llm = children["chat gpt-4o"]
    assert llm["model"] == "gpt-4o-2024-08-06" and llm["provider"] == "openai"
    assert llm["attributes"]["user.id"] == "u-42"
    assert llm["service_name"] == service
    assert children["tool.search"]["status"] == "error"
    assert children["tool.search"]["status_message"] == "search backend down"


def test_grpc_exporter(server: Endpoints) -> None:
    trace_id = send_with(GrpcExporter(endpoint=server.grpc_target, insecure=True), "via-grpc")
    assert_agent_trace(server, trace_id, "via-grpc")


def test_grpc_exporter_with_gzip(server: Endpoints) -> None:
    from grpc import Compression as GrpcCompression

    exporter = GrpcExporter(endpoint=server.grpc_target, insecure=True, compression=GrpcCompression.Gzip)
    trace_id = send_with(exporter, "via-grpc-gzip")
    assert_agent_trace(server, trace_id, "via-grpc-gzip")


def test_http_protobuf_exporter_on_the_otlp_port(server: Endpoints) -> None:
    trace_id = send_with(HttpExporter(endpoint=server.otlp_http_url), "via-http")
    assert_agent_trace(server, trace_id, "via-http")


def test_http_protobuf_exporter_gzip_on_the_main_port(server: Endpoints) -> None:
    exporter = HttpExporter(endpoint=f"{server.http_url}/v1/traces", compression=Compression.Gzip)
    trace_id = send_with(exporter, "via-http-gzip")
    assert_agent_trace(server, trace_id, "via-http-gzip")


def test_http_json(server: Endpoints) -> None:
    spans = record_spans("via-json", agent_trace)
    trace_id = format(spans[0].context.trace_id, "032x")
    response = httpx.post(
        server.otlp_http_url, content=orjson.dumps(otlp_json(spans)), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert_agent_trace(server, trace_id, "via-json")


def test_http_json_gzip(server: Endpoints) -> None:
    spans = record_spans("via-json-gzip", agent_trace)
    trace_id = format(spans[0].context.trace_id, "032x")
    response = httpx.post(
        server.otlp_http_url,
        content=gzip.compress(orjson.dumps(otlp_json(spans))),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert_agent_trace(server, trace_id, "via-json-gzip")


def test_otlp_port_serves_only_the_trace_endpoint(server: Endpoints) -> None:
    otlp_base = server.otlp_http_url.removesuffix("/v1/traces")
    response = httpx.get(f"{otlp_base}/api/v1/traces")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
