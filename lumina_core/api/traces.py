"""``/api/v1/traces``: the trace list with filters and keyset pagination, and one trace as a span tree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.api import ApiError, int_param, json_response, time_param
from lumina_core.intake.export import DEFAULT_PROJECT
from lumina_core.storage import queries

if TYPE_CHECKING:
    from lumina_core.app import Lumina

TRACE_STATUSES = ("ok", "error", "degraded")


def routes(lumina: Lumina) -> list[Route]:
    async def list_traces(request: Request) -> Response:
        status = request.query_params.get("status")
        if status and status not in TRACE_STATUSES:
            raise ApiError(400, "invalid_parameter", f"status: one of {', '.join(TRACE_STATUSES)}")
        flt = queries.TraceFilter(
            service=request.query_params.get("service"),
            model=request.query_params.get("model"),
            status=status,
            start_ns=time_param(request, "start"),
            end_ns=time_param(request, "end"),
        )
        limit = int_param(request, "limit", 50, 1, queries.MAX_PAGE)
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

    return [
        Route("/api/v1/traces", list_traces, methods=["GET"]),
        Route("/api/v1/traces/{trace_id}", get_trace, methods=["GET"]),
    ]
