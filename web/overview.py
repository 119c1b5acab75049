"""The overview page: totals and charts over the chosen range, where the money goes, what is unpriced."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core.auth import Access
from lumina_core.sampling import sampled_out_totals
from lumina_core.storage import analytics
from lumina_core.storage.filters import SpanFilter
from lumina_core.storage.queries import list_traces
from lumina_web.frame import Dashboard, TimeRange, time_range

TOKEN_SERIES = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def chart_data(rows: list[dict[str, Any]], when: TimeRange) -> dict[str, Any]:
    """Columns for the charts (uPlot's layout: x in seconds, then one list per series), with every bucket
    of the range present: counts are 0 where nothing happened, rates and latencies have no point."""
    width = analytics.BUCKETS[when.bucket]
    by_slot = {row["bucket_unix_nano"]: row for row in rows}
    slots = range(when.start_ns // width * width, when.end_ns, width)
    empty: dict[str, Any] = {"requests": 0, "errors": 0, "error_rate": None, "cost_usd": 0, "latency_p95_ms": None}
    filled = [by_slot.get(slot, empty) for slot in slots]
    return {
        "x": [slot // 10**9 for slot in slots],
        "requests": [row["requests"] for row in filled],
        "errors": [row["errors"] for row in filled],
        "error_rate": [round(row["error_rate"] * 100, 3) if row["error_rate"] is not None else None for row in filled],
        "cost": [row["cost_usd"] or 0 for row in filled],
        **{bucket: [row.get(bucket) or 0 for row in filled] for bucket in TOKEN_SERIES},
        "p95": [row["latency_p95_ms"] for row in filled],
    }


def ranked(rows: list[dict[str, Any]], n: int = 8) -> list[dict[str, Any]]:
    """The ``n`` costliest groups, each with its share of the largest (for the bars)."""
    rows = sorted(rows, key=lambda row: (-(row["cost_usd"] or 0), -row["requests"]))[:n]
    top = max((row["cost_usd"] or 0 for row in rows), default=0) or 1
    return [{**row, "share": (row["cost_usd"] or 0) / top} for row in rows]


def overview(dash: Dashboard) -> Any:
    engine, cache = dash.lumina.engine, dash.lumina.cache

    async def handler(request: Request, access: Access) -> Response:
        when = time_range(dash.args(request, ()))
        project = access.project_id
        flt = SpanFilter(start_ns=when.start_ns, end_ns=when.end_ns, llm=True)

        def agg(group_by: str | None, bucket: str | None, latency: bool) -> Any:
            return cache.get(
                project,
                ("analytics", flt, group_by, bucket, latency),
                lambda: analytics.aggregate(engine, project, flt, group_by, bucket, latency),
            )

        totals, series, by_model, by_service, by_name, unpriced, (traces, _), sampled = await asyncio.gather(
            agg(None, None, True),
            agg(None, when.bucket, True),
            agg("model", None, False),
            agg("service", None, False),
            agg("span_name", None, False),
            cache.get(project, ("unpriced",), lambda: analytics.models(engine, project, pricing_status="unpriced")),
            cache.get(project, ("top", flt, 5), lambda: list_traces(engine, project, flt, "-cost", 5)),
            cache.get(
                project,
                ("sampled_out", when.start_ns, when.end_ns),
                lambda: sampled_out_totals(engine, project, when.start_ns, when.end_ns),
            ),
        )
        context = {
            "when": when,
            "totals": totals[0] if totals else None,
            "chart": chart_data(series, when),
            "by_model": ranked(by_model),
            "by_service": ranked(by_service),
            "by_name": ranked(by_name),
            "unpriced": unpriced,
            "top_traces": traces,
            "sampled": sampled,
            "samplers": dash.lumina.settings.sampling.samplers,
        }
        return await dash.render(request, access, "overview.html", context)

    return handler
