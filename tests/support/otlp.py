"""OTLP clients for tests: real SDK exporters, and OTLP/JSON built from real SDK spans."""

from __future__ import annotations

import base64
import os
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def record_spans(service: str, build: Any) -> list[ReadableSpan]:
    """Run ``build(tracer)`` under a real SDK tracer and return the finished spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider.get_tracer("tests"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def otlp_json(spans: list[ReadableSpan]) -> dict[str, Any]:
    """OTLP/JSON as the spec defines it: protobuf JSON mapping, but trace and span ids in hex."""
    data = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return data


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def raw_request(
    spans: list[dict[str, Any]], service: str = "raw", resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    """A protobuf request from plain dicts (``trace_id``/``span_id`` bytes, ``attributes`` dict, ...)."""
    pb_spans = []
    for s in spans:
        span = Span(
            trace_id=s.get("trace_id", os.urandom(16)),
            span_id=s.get("span_id", os.urandom(8)),
            parent_span_id=s.get("parent_span_id", b""),
            name=s.get("name", "op"),
            kind=s.get("kind", Span.SPAN_KIND_CLIENT),
            start_time_unix_nano=s.get("start", 1_700_000_000_000_000_000),
            end_time_unix_nano=s.get("end", 1_700_000_000_250_000_000),
            attributes=[kv(k, v) for k, v in s.get("attributes", {}).items()],
        )
        if "status_code" in s:
            span.status.code = s["status_code"]
        pb_spans.append(span)
    resource_attrs = {"service.name": service, **(resource or {})}
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [kv(k, v) for k, v in resource_attrs.items()]},
                scope_spans=[ScopeSpans(spans=pb_spans)],
            )
        ]
    )
