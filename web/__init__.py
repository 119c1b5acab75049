"""The dashboard: server-rendered pages over the same query layer as the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from lumina_core.intake.export import DEFAULT_PROJECT
from lumina_core.storage import queries

if TYPE_CHECKING:
    from lumina_core.app import Lumina

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'"


def _page(request: Request, name: str, context: dict) -> Response:
    response = templates.TemplateResponse(request, name, context)
    response.headers["Content-Security-Policy"] = CSP
    return response


def routes(lumina: Lumina) -> list[BaseRoute]:
    async def trace_list(request: Request) -> Response:
        flt = queries.TraceFilter(
            service=request.query_params.get("service") or None,
            model=request.query_params.get("model") or None,
            status=request.query_params.get("status") or None,
        )
        try:
            traces, next_cursor = await queries.list_traces(
                lumina.engine, DEFAULT_PROJECT, flt, 50, request.query_params.get("cursor") or None
            )
        except queries.InvalidCursor:
            traces, next_cursor = [], None
        return _page(request, "traces.html", {"traces": traces, "next_cursor": next_cursor, "filter": flt})

    async def trace_detail(request: Request) -> Response:
        trace = await queries.get_trace(lumina.engine, DEFAULT_PROJECT, request.path_params["trace_id"].lower())
        if trace is None:
            return _page(request, "not_found.html", {"what": "trace"})
        flat: list[tuple[int, dict]] = []
        stack = [(0, span) for span in reversed(trace["spans"])]
        while stack:
            depth, span = stack.pop()
            flat.append((depth, span))
            stack.extend((depth + 1, child) for child in reversed(span["children"]))
        return _page(request, "trace.html", {"trace": trace, "rows": flat})

    return [
        Route("/", trace_list, methods=["GET"]),
        Route("/traces/{trace_id}", trace_detail, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
