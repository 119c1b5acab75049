"""The trace list (the API's filters, sorts and cursors, in the page's URL) and the trace view (waterfall,
span panel with LLM fields, chat transcript, attributes and events, plugin panels)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core import quality
from lumina_core.api import Param
from lumina_core.api.traces import FILTER_PARAMS, LLM_PARAM, TRACE_ID, page_params, span_filter
from lumina_core.auth import Access
from lumina_core.plugin_api import SpanPanel
from lumina_core.storage import analytics, queries
from lumina_core.storage.filters import STATUSES
from lumina_web.frame import Dashboard, PageError, time_range

log = logging.getLogger("lumina.web")
LIST_PARAMS = (
    *(p for p in FILTER_PARAMS if p.name not in ("start", "end")),  # the frame's range gives these
    LLM_PARAM,
    *page_params(queries.TRACE_SORTS),
)
SPAN_PARAM = Param("span", "the span shown in the panel", {}, str)
COLUMNS = (("start_time", "Started"), ("span_count", "Spans"), ("duration", "Duration"), ("cost", "Cost"))


def trace_list(dash: Dashboard) -> Any:
    engine, cache = dash.lumina.engine, dash.lumina.cache

    async def handler(request: Request, access: Access) -> Response:
        args = dash.args(request, LIST_PARAMS)
        when = time_range(args)
        flt = span_filter({**args, "start": when.start_ns, "end": when.end_ns})
        project, sort, cursor = access.project_id, args["sort"], args["cursor"]
        query = ("traces", flt, sort, args["limit"], cursor)
        try:
            traces, next_cursor = await cache.get(
                project, query, lambda: queries.list_traces(engine, project, flt, sort, args["limit"], cursor)
            )
        except queries.InvalidCursor as exc:
            raise PageError(400, str(exc)) from None
        services = await cache.get(project, ("services",), lambda: analytics.services(engine, project))
        models = await cache.get(project, ("models",), lambda: analytics.models(engine, project))
        filters = {
            p.name: request.query_params.getlist(p.name) if p.repeated else args[p.name]
            for p in LIST_PARAMS
            if p.name != "cursor" and args[p.name] != p.default  # links carry what differs from the defaults
        }
        context = {
            "when": when,
            "traces": traces,
            "next_cursor": next_cursor,
            "args": args,
            "filters": filters,
            "sort": sort,
            "columns": COLUMNS,
            "statuses": STATUSES,
            "services": [row["service_name"] for row in services],
            "models": [row["model"] for row in models],
            "filtered": any(v not in (None, []) for k, v in filters.items() if k not in ("limit", "sort")),
        }
        return await dash.render(request, access, "traces.html", context)

    return handler


@dataclass(frozen=True)
class Row:
    """One line of the waterfall: a span, its depth, and its bar as fractions of the trace's duration."""

    span: dict[str, Any]
    depth: int
    offset: float
    width: float


def waterfall(trace: dict[str, Any]) -> list[Row]:
    """The span tree flattened in display order (children under their parent, by start time)."""
    start = trace["start_time_unix_nano"]
    total = max(trace["end_time_unix_nano"] - start, 1)
    rows: list[Row] = []
    stack = [(span, 0) for span in reversed(trace["spans"])]
    while stack:
        span, depth = stack.pop()
        offset = min(max((span["start_time_unix_nano"] - start) / total, 0.0), 1.0)
        width = min(max((span["end_time_unix_nano"] - span["start_time_unix_nano"]) / total, 0.0), 1.0 - offset)
        rows.append(Row(span, depth, offset, width))
        stack.extend((child, depth + 1) for child in reversed(span["children"]))
    return rows


def panel_rows(panel: SpanPanel, span: dict[str, Any]) -> list[tuple[str, str]] | str | None:
    """A plugin panel's rows for ``span``, or the error it raised (as text: one panel cannot break a page)."""
    try:
        rows = panel.rows(span)
    except Exception as exc:
        log.exception("span panel %r failed", panel.title)
        return f"this panel failed: {exc.__class__.__name__}"
    return [(str(label), str(value)) for label, value in rows] if rows is not None else None


def trace_view(dash: Dashboard) -> Any:
    engine, cache = dash.lumina.engine, dash.lumina.cache

    async def handler(request: Request, access: Access) -> Response:
        dash.args(request, (SPAN_PARAM,))
        trace_id = request.path_params["trace_id"].lower()
        project = access.project_id
        trace = None
        if TRACE_ID.fullmatch(trace_id):
            trace = await cache.get(project, ("trace", trace_id), lambda: queries.get_trace(engine, project, trace_id))
        if trace is None:
            raise PageError(404, f"trace {trace_id} not found in project {project}")
        rows = waterfall(trace)
        wanted = request.query_params.get("span")
        selected = next((row.span for row in rows if row.span["span_id"] == wanted), rows[0].span if rows else None)
        panels = []
        verdicts: list[dict[str, Any]] = []
        if selected is not None and selected["is_llm"]:
            verdicts = await quality.results(engine, project, trace_id=trace_id, span_id=selected["span_id"], limit=20)
        if selected is not None:
            panels = [
                (p.title, rendered) for p in dash.span_panels if (rendered := panel_rows(p, selected)) is not None
            ]
        context = {"trace": trace, "rows": rows, "selected": selected, "panels": panels, "verdicts": verdicts}
        return await dash.render(request, access, "trace.html", context)

    return handler
