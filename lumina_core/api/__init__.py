"""The REST API under ``/api/v1`` and the operator pages under ``/-/``: shared parameter parsing and the
one error shape, ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.config import to_unix_nano
from lumina_core.storage.queries import MAX_UNIX_NANO

if TYPE_CHECKING:
    from lumina_core.app import Lumina


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def time_param(request: Request, name: str) -> int | None:
    """An ISO 8601 time with a zone (``2026-12-01T10:00:00Z``) or Unix milliseconds → Unix nanoseconds."""
    value = request.query_params.get(name)
    if not value:
        return None
    if value.isascii() and value.isdecimal():
        unix_nano = int(value) * 1_000_000 if len(value) <= 16 else MAX_UNIX_NANO + 1
    else:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, "invalid_parameter", f"{name}: not an ISO 8601 time or Unix milliseconds") from None
        if parsed.tzinfo is None:
            raise ApiError(400, "invalid_parameter", f"{name}: give a time zone, e.g. a trailing Z")
        unix_nano = to_unix_nano(parsed)
    if not 0 <= unix_nano <= MAX_UNIX_NANO:
        raise ApiError(400, "invalid_parameter", f"{name}: must be between 1970 and 2262")
    return unix_nano


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
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
    """Every route of the REST API and the operator pages."""
    from lumina_core.api import operator, pricing, traces

    return [*traces.routes(lumina), *pricing.routes(lumina), *operator.routes(lumina)]


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))
