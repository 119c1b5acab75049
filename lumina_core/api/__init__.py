"""The REST API under ``/api/v1`` and the operator pages under ``/-/``.

Every endpoint is an :class:`Operation`: its parameters, scope and response schema are declared once, and
the same declaration parses requests, checks access and writes the OpenAPI document. Errors have one
shape, ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.auth import PROJECT_ID, Access, AuthError, InvalidProjectId, key_from_headers
from lumina_core.config import to_unix_nano
from lumina_core.storage.queries import MAX_UNIX_NANO

if TYPE_CHECKING:
    from lumina_core.app import Lumina


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": {"code": code, "message": message}}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


MAX_BODY_BYTES = 1024 * 1024
Body = TypeVar("Body", bound=BaseModel)


async def read_body(request: Request, model: type[Body]) -> Body:
    """The JSON body, validated by ``model``: 400 if it is not JSON, 422 with every problem if invalid."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        data = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_body", "the body must be a JSON object") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_body", problems) from None


def row_id(raw: str) -> int | None:
    """The integer id in a path (``/…/{price_id}``, ``/…/{alert_id}``), or ``None`` if it cannot name a
    stored row (then it is a 404, not a 500 from the database)."""
    return int(raw) if raw.isascii() and raw.isdecimal() and len(raw) <= 9 else None


def invalid(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {message}")


@dataclass(frozen=True)
class Param:
    """A query parameter: its JSON Schema (for the OpenAPI document) and how to parse one value."""

    name: str
    description: str
    schema: dict[str, Any]
    parse: Callable[[str], Any]
    repeated: bool = False
    default: Any = None
    required: bool = False


def parse_time(value: str) -> int:
    """An RFC 3339 time (``2026-12-01T10:00:00Z``) or Unix milliseconds → Unix nanoseconds, clamped to
    the range stored times can have (1970 to 2262): "since year 1" means "since the beginning"."""
    if value.isascii() and value.isdecimal():
        unix_nano = int(value) * 1_000_000
    else:
        text = value.upper().replace("Z", "+00:00").replace(":60", ":59")  # a leap second is its second before
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z) or Unix milliseconds") from None
        if parsed.tzinfo is None:
            raise ValueError("give a time zone, e.g. a trailing Z")
        unix_nano = to_unix_nano(parsed)
    return min(max(unix_nano, 0), MAX_UNIX_NANO)


def time_param(name: str, description: str) -> Param:
    schema = {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "pattern": "^[0-9]{1,30}$", "description": "Unix milliseconds"},
        ]
    }
    return Param(name, description, schema, parse_time)


def int_param(name: str, description: str, low: int, high: int, default: int | None = None) -> Param:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("not an integer") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    schema = {"type": "integer", "minimum": low, "maximum": high, **({"default": default} if default else {})}
    return Param(name, description, schema, parse, default=default)


def number_param(name: str, description: str) -> Param:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("not a number") from None
        if math.isnan(number):
            raise ValueError("not a number")
        return min(max(number, -sys.float_info.max), sys.float_info.max)  # 1e999 means "huge", not infinity

    return Param(name, description, {"type": "number"}, parse)


def text_param(name: str, description: str, max_length: int = 1000) -> Param:
    def parse(value: str) -> str:
        if len(value) > max_length:
            raise ValueError(f"longer than {max_length} characters")
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        return value

    schema = {"type": "string", "maxLength": max_length, "pattern": "^[^\\x00]*$"}  # no NUL: refused above
    return Param(name, description, schema, parse)


def choice_param(name: str, description: str, choices: tuple[str, ...], default: str | None = None) -> Param:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value

    schema: dict[str, Any] = {"type": "string", "enum": list(choices)}
    if default:
        schema["default"] = default
    return Param(name, description, schema, parse, default=default)


def bool_param(name: str, description: str, default: bool | None = None) -> Param:
    def parse(value: str) -> bool:
        if value not in ("true", "false"):
            raise ValueError("true or false")
        return value == "true"

    schema: dict[str, Any] = {"type": "boolean"}
    if default is not None:
        schema["default"] = default
    return Param(name, description, schema, parse, default=default)


PROJECT_PARAM = Param(
    "project",
    "Project to act on. With an API key: the key's own project (the default); others are refused.",
    {"type": "string", "pattern": f"^{PROJECT_ID.pattern}$"},
    str,
)


@dataclass(frozen=True)
class Operation:
    """One endpoint. ``handler(request, access, args)`` gets the parsed query parameters in ``args``."""

    method: str
    path: str
    summary: str
    handler: Callable[[Request, Access, dict[str, Any]], Awaitable[Response]]
    response: dict[str, Any]
    scope: str = "read"
    params: tuple[Param, ...] = ()
    status: int = 200
    body: dict[str, Any] | None = None
    tag: str = ""
    errors: tuple[int, ...] = field(default=(400, 401, 403))


def parse_args(request: Request, params: tuple[Param, ...]) -> dict[str, Any]:
    """The query parameters, parsed; unknown or repeated-but-single parameters are refused."""
    return parse_query(request.query_params.multi_items(), params)


def parse_query(items: list[tuple[str, str]], params: tuple[Param, ...]) -> dict[str, Any]:
    """``(name, value)`` pairs parsed by ``params``, with their defaults for those not given."""
    known = {p.name: p for p in params}
    args: dict[str, Any] = {p.name: ([] if p.repeated else p.default) for p in params}
    seen: set[str] = set()
    for name, value in items:
        param = known.get(name)
        if param is None:
            raise invalid(name, f"unknown parameter; this endpoint takes {', '.join(known) or 'none'}")
        if name in seen and not param.repeated:
            raise invalid(name, "given more than once")
        seen.add(name)
        try:
            parsed = param.parse(value)
        except ValueError as exc:
            raise invalid(name, str(exc)) from None
        if param.repeated:
            args[name].append(parsed)
        else:
            args[name] = parsed
    for param in params:
        if param.required and param.name not in seen:
            raise invalid(param.name, "required")
    return args


def endpoint(lumina: Lumina, operations: list[Operation]) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of a path's operations: method, access check, parameters, then the handler."""
    by_method = {op.method: op for op in operations}

    async def run(request: Request) -> Response:
        operation = by_method["GET" if request.method == "HEAD" else request.method]  # the route allows no others
        key = key_from_headers(request.headers.get)
        try:
            access = await lumina.auth.access(key, operation.scope, request.query_params.get("project"))
        except InvalidProjectId as exc:
            raise invalid("project", str(exc)) from None
        except AuthError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            raise ApiError(exc.status, exc.code, str(exc), headers) from None
        return await operation.handler(request, access, parse_args(request, (PROJECT_PARAM, *operation.params)))

    return run


def operations(lumina: Lumina) -> list[Operation]:
    from lumina_core.api import alerts, analytics, data, keys, pricing, quality, queue, replay, traces

    return [
        *traces.operations(lumina),
        *analytics.operations(lumina),
        *pricing.operations(lumina),
        *quality.operations(lumina),
        *alerts.operations(lumina),
        *keys.operations(lumina),
        *queue.operations(lumina),
        *data.operations(lumina),
        *replay.operations(lumina),
    ]


def routes(lumina: Lumina) -> list[Route]:
    """Every route of the REST API and its OpenAPI document."""
    from lumina_core.api import openapi

    ops = operations(lumina)
    by_path: dict[str, list[Operation]] = {}
    for op in ops:
        by_path.setdefault(op.path, []).append(op)
    return [
        *(
            Route(path, endpoint(lumina, path_ops), methods=[op.method for op in path_ops])
            for path, path_ops in by_path.items()
        ),
        *openapi.routes(ops),
    ]


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)
