"""Turns OTLP export requests (protobuf or OTLP/JSON) into validated :class:`SpanRecord` lists."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from lumina_core.plugin_api import AttributeValue, SpanRecord

DEFAULT_SERVICE_NAME = "unknown_service"
_KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
_ZERO_TRACE = bytes(16)
MAX_TIME = 2**63 - 1
_ZERO_SPAN = bytes(8)


class MalformedRequest(ValueError):
    """The request body cannot be decoded at all; nothing in it is accepted (HTTP 400)."""


@dataclass
class DecodedRequest:
    """The spans that passed validation and a count and reason for those that did not."""

    spans: list[SpanRecord] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if reason not in self.reasons:
            self.reasons.append(reason)


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise MalformedRequest(f"cannot decode protobuf ExportTraceServiceRequest: {exc}") from None
    return request


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON carries ids as hex, which ``json_format`` would read as base64: convert them first."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedRequest("OTLP/JSON body must be an object with resourceSpans")
    try:
        for resource_spans in _as_list(data.get("resourceSpans")):
            for scope_spans in _as_list(_as_dict(resource_spans).get("scopeSpans")):
                for span in _as_list(_as_dict(scope_spans).get("spans")):
                    span = _as_dict(span)
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = _hex_to_base64(span[key])
                    for link in _as_list(span.get("links")):
                        link = _as_dict(link)
                        for key in ("traceId", "spanId"):
                            if key in link:
                                link[key] = _hex_to_base64(link[key])
        request = ExportTraceServiceRequest()
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, MalformedRequest, TypeError, ValueError) as exc:
        raise MalformedRequest(f"invalid OTLP/JSON: {exc}") from None
    return request


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedRequest(f"expected a list, got {type(value).__name__}")
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedRequest(f"expected an object, got {type(value).__name__}")
    return value


def _hex_to_base64(value: Any) -> str:
    """Hex id → base64 for ``json_format``; a non-hex id becomes one byte so validation rejects the span."""
    if not isinstance(value, str):
        raise MalformedRequest("ids must be hex strings")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b"\x00"
    return base64.b64encode(raw).decode()


_SCALAR_KINDS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def any_value(value: AnyValue) -> AttributeValue:
    kind = value.WhichOneof("value")
    if kind in _SCALAR_KINDS:
        return getattr(value, kind)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return binascii.hexlify(value.bytes_value).decode()
    return None


def attributes_dict(key_values: Any) -> dict[str, AttributeValue]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def spans_from_request(request: ExportTraceServiceRequest) -> DecodedRequest:
    """Validate and convert every span; invalid ones are counted with a reason, never silently lost."""
    out = DecodedRequest()
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        service = resource.get("service.name")
        service_name = service if isinstance(service, str) and service else DEFAULT_SERVICE_NAME
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name or None
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    out.reject("invalid trace_id: must be 16 bytes (32 hex characters), not all zero")
                    continue
                if len(span_id) != 8 or span_id == _ZERO_SPAN:
                    out.reject("invalid span_id: must be 8 bytes (16 hex characters), not all zero")
                    continue
                if parent and len(parent) != 8:
                    out.reject("invalid parent_span_id: must be empty or 8 bytes (16 hex characters)")
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if start == 0:
                    out.reject("start_time_unix_nano is missing")
                    continue
                if start > MAX_TIME or end > MAX_TIME:
                    out.reject("span times must be before the year 2262 (signed 64-bit nanoseconds)")
                    continue
                status = span.status
                out.spans.append(
                    SpanRecord(
                        trace_id=trace_id.hex(),
                        span_id=span_id.hex(),
                        parent_span_id=parent.hex() if parent and parent != _ZERO_SPAN else None,
                        name=span.name,
                        kind=_KIND_NAMES.get(span.kind, "unspecified"),
                        start_time_unix_nano=start,
                        end_time_unix_nano=max(end, start),
                        status_code=_STATUS_NAMES.get(status.code, "unset"),
                        status_message=status.message or None,
                        service_name=service_name,
                        scope_name=scope_name,
                        attributes=attributes_dict(span.attributes),
                        resource_attributes=resource,
                        events=[
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": attributes_dict(event.attributes),
                            }
                            for event in span.events
                        ],
                        links=[
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": attributes_dict(link.attributes),
                            }
                            for link in span.links
                        ],
                    )
                )
    return out
