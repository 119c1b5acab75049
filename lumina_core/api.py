"""The REST API under ``/api/v1`` and the operator pages under ``/-/``; errors are ``{"error": {code, message}}``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.intake.http import DEFAULT_PROJECT
from lumina_core.storage import queries

if TYPE_CHECKING:
    from lumina_core.app import Lumina

TRACE_STATUSES = ("ok", "error", "degraded")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def _time_param(request: Request, name: str) -> int | None:
    """An ISO 8601 timestamp (``2026-12-01T10:00:00Z``) or Unix milliseconds → Unix nanoseconds."""
    value = request.query_params.get(name)
    if not value:
        return None
    if value.isdigit():
        return int(value) * 1_000_000
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name}: not an ISO 8601 time or Unix milliseconds") from None
    if parsed.tzinfo is None:
        raise ApiError(400, "invalid_parameter", f"{name}: give a time zone, e.g. a trailing Z")
    return int(parsed.timestamp() * 1e9)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name}: not an integer") from None
    if not low <= number <= high:
        raise ApiError(400, "invalid_parameter", f"{name}: must be between {low} and {high}")
    return number


def routes(lumina: Lumina) -> list[Route]:
    async def list_traces(request: Request) -> Response:
        status = request.query_params.get("status")
        if status and status not in TRACE_STATUSES:
            raise ApiError(400, "invalid_parameter", f"status: one of {', '.join(TRACE_STATUSES)}")
        flt = queries.TraceFilter(
            service=request.query_params.get("service"),
            model=request.query_params.get("model"),
            status=status,
            start_ns=_time_param(request, "start"),
            end_ns=_time_param(request, "end"),
        )
        limit = _int_param(request, "limit", 50, 1, queries.MAX_PAGE)
        try:
            traces, next_cursor = await queries.list_traces(
                lumina.engine, DEFAULT_PROJECT, flt, limit, request.query_params.get("cursor")
            )
        except queries.InvalidCursor:
            raise ApiError(400, "invalid_parameter", "cursor: not a cursor returned by this API") from None
        return json_response({"data": traces, "next_cursor": next_cursor})

    async def get_trace(request: Request) -> Response:
        trace_id = request.path_params["trace_id"].lower()
        trace = await queries.get_trace(lumina.engine, DEFAULT_PROJECT, trace_id)
        if trace is None:
            raise ApiError(404, "not_found", f"trace {trace_id} not found")
        return json_response(trace)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def ready(request: Request) -> Response:
        checks = await lumina.readiness()
        ok = all(check["ok"] for check in checks.values())
        return json_response({"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    async def plugins(request: Request) -> Response:
        return json_response({"plugins": [info.as_dict() for info in lumina.plugins.describe()]})

    return [
        Route("/api/v1/traces", list_traces, methods=["GET"]),
        Route("/api/v1/traces/{trace_id}", get_trace, methods=["GET"]),
        Route("/-/health", health, methods=["GET"]),
        Route("/-/ready", ready, methods=["GET"]),
        Route("/-/plugins", plugins, methods=["GET"]),
    ]


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))
