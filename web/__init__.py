"""The dashboard: server-rendered pages over the same query layer as the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from lumina_core.auth import Access, AuthError, InvalidProjectId, key_from_headers
from lumina_core.storage import queries
from lumina_core.storage.filters import STATUSES, SpanFilter

if TYPE_CHECKING:
    from lumina_core.app import Lumina

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'"


def _page(request: Request, name: str, context: dict, status: int = 200) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    return response


def routes(lumina: Lumina) -> list[BaseRoute]:
    async def access(request: Request) -> Access | Response:
        """Read access from the request's API key (header or ``lumina_key`` cookie), or an explanation."""
        key = key_from_headers(request.headers.get) or request.cookies.get("lumina_key")
        try:
            return await lumina.auth.access(key, "read", request.query_params.get("project") or None)
        except (AuthError, InvalidProjectId) as exc:
            status = exc.status if isinstance(exc, AuthError) else 400
            return _page(request, "denied.html", {"message": str(exc)}, status)

    async def trace_list(request: Request) -> Response:
        allowed = await access(request)
        if isinstance(allowed, Response):
            return allowed
        status = request.query_params.get("status")
        flt = SpanFilter(
            service=request.query_params.get("service") or None,
            model=request.query_params.get("model") or None,
            status=status if status in STATUSES else None,
        )
        try:
            traces, next_cursor = await queries.list_traces(
                lumina.engine, allowed.project_id, flt, cursor=request.query_params.get("cursor") or None
            )
        except queries.InvalidCursor:
            traces, next_cursor = [], None
        return _page(request, "traces.html", {"traces": traces, "next_cursor": next_cursor, "filter": flt})

    async def trace_detail(request: Request) -> Response:
        allowed = await access(request)
        if isinstance(allowed, Response):
            return allowed
        trace = await queries.get_trace(lumina.engine, allowed.project_id, request.path_params["trace_id"].lower())
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
