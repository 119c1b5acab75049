"""``/api/v1/traces`` and ``/api/v1/spans``: filtered, sorted, cursor-paginated lists, and details."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import (
    ApiError,
    Operation,
    Param,
    bool_param,
    choice_param,
    int_param,
    json_response,
    number_param,
    text_param,
    time_param,
)
from lumina_core.api import schemas as s
from lumina_core.auth import Access
from lumina_core.storage import queries
from lumina_core.storage.filters import STATUSES, SpanFilter

if TYPE_CHECKING:
    from lumina_core.app import Lumina

TRACE_ID = re.compile(r"[0-9a-f]{32}")
SPAN_ID = re.compile(r"[0-9a-f]{16}")


def _attribute(value: str) -> tuple[str, str]:
    key, sep, expected = value.partition("=")
    if not sep or not key:
        raise ValueError("give key=value, e.g. user.id=42")
    if "\x00" in value or len(value) > 1000:
        raise ValueError("at most 1000 characters, no NUL")
    return key, expected


FILTER_PARAMS: tuple[Param, ...] = (
    text_param("service", "service.name of the span (for traces: of any span)"),
    text_param("span_name", "span name (for traces: of any span)"),
    text_param("model", "model called (for traces: by any span)"),
    text_param("provider", "provider of the model, e.g. openai"),
    text_param("user_id", "end user (from user.id, enduser.id or langfuse.user.id)", 256),
    text_param("session_id", "session (from session.id, gen_ai.conversation.id or langfuse.session.id)", 256),
    choice_param("status", "ok, error or degraded (for traces: the worst of its spans)", STATUSES),
    time_param("start", "started at or after"),
    time_param("end", "started before"),
    number_param("min_cost", "cost in USD at least (for traces: the trace total)"),
    number_param("max_cost", "cost in USD at most"),
    number_param("min_latency_ms", "latency at least, ms (for traces: duration)"),
    number_param("max_latency_ms", "latency at most, ms"),
    Param(
        "attribute",
        "key=value a span (or its resource) attribute must equal; repeatable",
        {"type": "string", "pattern": "^[^=]+=", "maxLength": 1000},
        _attribute,
        repeated=True,
    ),
    text_param("q", "text in span names, system prompts, input or output messages (case-insensitive)", 200),
)

LLM_PARAM = bool_param("llm", "only LLM calls (true) or only other spans (false)")


def span_filter(args: dict[str, Any]) -> SpanFilter:
    """The filter given by ``FILTER_PARAMS`` (and ``llm``) in parsed query arguments."""
    return SpanFilter(
        service=args["service"],
        span_name=args["span_name"],
        model=args["model"],
        provider=args["provider"],
        user_id=args["user_id"],
        session_id=args["session_id"],
        status=args["status"],
        start_ns=args["start"],
        end_ns=args["end"],
        min_cost=args["min_cost"],
        max_cost=args["max_cost"],
        min_latency_ms=args["min_latency_ms"],
        max_latency_ms=args["max_latency_ms"],
        attributes=tuple(args["attribute"]),
        text=args["q"],
        llm=args["llm"],
    )


def page_params(sorts: dict[str, Any]) -> tuple[Param, ...]:
    keys = tuple(f"{sign}{key}" for key in sorts for sign in ("-", ""))
    return (
        choice_param("sort", "sort key; a leading - sorts descending", keys, "-start_time"),
        int_param("limit", "page size", 1, queries.MAX_PAGE, 50),
        text_param("cursor", "next_cursor of the previous page (same filters and sort)", 2000),
    )


def operations(lumina: Lumina) -> list[Operation]:
    async def cached(access: Access, query: tuple[Any, ...], compute: Any) -> Any:
        return await lumina.cache.get(access.project_id, query, compute)

    async def list_page(kind: str, lister: Any, access: Access, args: dict[str, Any]) -> Response:
        flt = span_filter(args)
        query = (kind, flt, args["sort"], args["limit"], args["cursor"])
        try:
            data, next_cursor = await cached(
                access,
                query,
                lambda: lister(lumina.engine, access.project_id, flt, args["sort"], args["limit"], args["cursor"]),
            )
        except queries.InvalidCursor as exc:
            raise ApiError(400, "invalid_parameter", str(exc)) from None
        return json_response({"data": data, "next_cursor": next_cursor})

    async def list_traces(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return await list_page("traces", queries.list_traces, access, args)

    async def list_spans(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return await list_page("spans", queries.list_spans, access, args)

    async def get_trace(request: Request, access: Access, args: dict[str, Any]) -> Response:
        trace_id = request.path_params["trace_id"].lower()
        trace = None
        if TRACE_ID.fullmatch(trace_id):
            trace = await cached(
                access, ("trace", trace_id), lambda: queries.get_trace(lumina.engine, access.project_id, trace_id)
            )
        if trace is None:
            raise ApiError(404, "not_found", f"trace {trace_id} not found")
        return json_response(trace)

    async def get_span(request: Request, access: Access, args: dict[str, Any]) -> Response:
        trace_id, span_id = request.path_params["trace_id"].lower(), request.path_params["span_id"].lower()
        span = None
        if TRACE_ID.fullmatch(trace_id) and SPAN_ID.fullmatch(span_id):
            span = await queries.get_span(lumina.engine, access.project_id, trace_id, span_id)
        if span is None:
            raise ApiError(404, "not_found", f"span {trace_id}/{span_id} not found")
        return json_response(span)

    return [
        Operation(
            "GET",
            "/api/v1/traces",
            "List traces",
            list_traces,
            s.page(s.TRACE),
            params=(*FILTER_PARAMS, LLM_PARAM, *page_params(queries.TRACE_SORTS)),
            tag="traces",
        ),
        Operation(
            "GET",
            "/api/v1/traces/{trace_id}",
            "A trace with its spans as a tree",
            get_trace,
            s.TRACE_DETAIL,
            tag="traces",
            errors=(401, 403, 404),
        ),
        Operation(
            "GET",
            "/api/v1/spans",
            "Search spans",
            list_spans,
            s.page(s.SPAN_SUMMARY),
            params=(*FILTER_PARAMS, LLM_PARAM, *page_params(queries.SPAN_SORTS)),
            tag="spans",
        ),
        Operation(
            "GET",
            "/api/v1/spans/{trace_id}/{span_id}",
            "A span with attributes, events and LLM messages",
            get_span,
            s.SPAN,
            tag="spans",
            errors=(401, 403, 404),
        ),
    ]
