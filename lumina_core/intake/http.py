"""OTLP/HTTP: ``POST /v1/traces`` with protobuf or JSON bodies, optionally gzip-compressed."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from lumina_core.auth import PROJECT_HEADER, AuthError, InvalidProjectId, key_from_headers
from lumina_core.intake.decode import MalformedRequest, parse_json, parse_protobuf
from lumina_core.intake.export import Intake
from lumina_core.plugin_api import BatchRejected, QueueFull, QueueUnavailable

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RPC_CODES = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED, 503: code_pb2.UNAVAILABLE}
PARSERS: dict[str, Callable[[bytes], ExportTraceServiceRequest]] = {PROTOBUF: parse_protobuf, JSON: parse_json}


class RequestTooLarge(Exception):
    """The body, as sent or once decompressed, is over its limit (HTTP 413)."""


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def _status_response(http_status: int, code: int, message: str, content_type: str, headers=None) -> Response:
    """OTLP/HTTP errors carry a ``google.rpc.Status`` in the request's encoding."""
    content_type = content_type if content_type in PARSERS else JSON
    body = _encode(status_pb2.Status(code=code, message=message), content_type)
    return Response(body, status_code=http_status, media_type=content_type, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = RequestTooLarge(f"request body exceeds {limit} bytes")
    if declared is not None and declared.isascii() and declared.isdecimal() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress every gzip member, at most ``limit`` bytes in all, so a gzip bomb cannot exhaust memory."""
    out = bytearray()
    rest = body
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise MalformedRequest(f"invalid gzip body: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise RequestTooLarge(f"request body exceeds {limit} bytes once decompressed")
        if not inflater.eof:
            raise MalformedRequest("invalid gzip body: truncated")
        rest = inflater.unused_data
    return bytes(out)


def otlp_http_endpoint(intake: Intake, max_request_bytes: int, max_decompressed_bytes: int):
    """Build the Starlette endpoint for ``POST /v1/traces``."""

    async def export_traces(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in PARSERS:
            return _status_response(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"unsupported content type {content_type!r}; use {PROTOBUF} or {JSON}",
                JSON,
            )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            return _status_response(
                415, code_pb2.INVALID_ARGUMENT, f"unsupported content encoding {encoding!r}", content_type
            )
        try:
            key = key_from_headers(request.headers.get)
            project_id = await intake.project_for(key, request.headers.get(PROJECT_HEADER))
            body = await _read_body(request, max_request_bytes)
            if encoding == "gzip":
                body = gunzip(body, max_decompressed_bytes)
            result = await intake.export(body, PARSERS[content_type], project_id)
        except AuthError as exc:
            return _status_response(exc.status, RPC_CODES[exc.status], str(exc), content_type)
        except RequestTooLarge as exc:
            return _status_response(413, code_pb2.INVALID_ARGUMENT, str(exc), content_type)
        except (MalformedRequest, BatchRejected, InvalidProjectId) as exc:
            return _status_response(400, code_pb2.INVALID_ARGUMENT, str(exc), content_type)
        except ClientDisconnect:
            return Response(status_code=400)
        except (QueueFull, QueueUnavailable) as exc:
            return _status_response(
                503,
                code_pb2.UNAVAILABLE,
                str(exc),
                content_type,
                headers={"Retry-After": str(max(1, round(exc.retry_after)))},
            )
        return Response(_encode(result.response(), content_type), media_type=content_type)

    return export_traces
