"""``/api/v1/analytics``: cost, tokens, requests, errors and latency over time and by dimension; the most
expensive traces and span names; the services and models seen."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import ApiError, Operation, Param, bool_param, choice_param, int_param, json_response
from lumina_core.api import schemas as s
from lumina_core.api.traces import FILTER_PARAMS, span_filter
from lumina_core.auth import Access
from lumina_core.storage import analytics, queries

if TYPE_CHECKING:
    from lumina_core.app import Lumina

DEFAULT_RANGE_NS = 24 * 3600 * 10**9
MAX_BUCKETS = 2000
TOP = {"traces": None, "span_names": "span_name", "models": "model", "services": "service"}


def _group_by(value: str) -> str:
    if value in analytics.GROUPS or (value.startswith(analytics.ATTRIBUTE_GROUP) and len(value) > 10):
        return value
    raise ValueError(f"one of {', '.join(analytics.GROUPS)}, or {analytics.ATTRIBUTE_GROUP}<key>")


GROUP_BY = Param(
    "group_by",
    f"group by {', '.join(analytics.GROUPS)}, or {analytics.ATTRIBUTE_GROUP}<key> (e.g. attribute:user.id)",
    {"type": "string", "pattern": f"^({'|'.join(analytics.GROUPS)}|{analytics.ATTRIBUTE_GROUP}.+)$"},
    _group_by,
)
LLM_ONLY = bool_param("llm", "count LLM calls (true, the default) or the other spans (false)", True)


def time_range(args: dict[str, Any]) -> dict[str, Any]:
    """Analytics cover the last 24 hours unless told otherwise."""
    end = args["end"] if args["end"] is not None else time.time_ns()
    start = args["start"] if args["start"] is not None else max(0, end - DEFAULT_RANGE_NS)
    if start >= end:
        raise ApiError(400, "invalid_parameter", "start: must be before end")
    return {**args, "start": start, "end": end}


def operations(lumina: Lumina) -> list[Operation]:
    async def cached(access: Access, query: tuple[Any, ...], compute: Any) -> Any:
        return await lumina.cache.get(access.project_id, query, compute)

    async def series(request: Request, access: Access, args: dict[str, Any]) -> Response:
        args = time_range(args)
        bucket = args["bucket"]
        if bucket and (args["end"] - args["start"]) // analytics.BUCKETS[bucket] >= MAX_BUCKETS:
            raise ApiError(400, "invalid_parameter", f"bucket: more than {MAX_BUCKETS} {bucket}s in the range")
        flt = span_filter(args)
        group_by, latency = args["group_by"], args["latency"]
        data = await cached(
            access,
            ("analytics", flt, group_by, bucket, latency),
            lambda: analytics.aggregate(lumina.engine, access.project_id, flt, group_by, bucket, latency),
        )
        return json_response(
            {"data": data, "start": queries.iso(args["start"]), "end": queries.iso(args["end"]), "bucket": bucket}
        )

    async def top(request: Request, access: Access, args: dict[str, Any]) -> Response:
        args = time_range(args)
        flt, n, by = span_filter(args), args["n"], args["by"]
        if by == "traces":
            data, _ = await cached(
                access,
                ("top", flt, n),
                lambda: queries.list_traces(lumina.engine, access.project_id, flt, "-cost", n),
            )
            return json_response({"data": data})
        rows = await cached(
            access,
            ("analytics", flt, TOP[by], None, False),
            lambda: analytics.aggregate(lumina.engine, access.project_id, flt, TOP[by], None, False),
        )
        ranked = sorted(rows, key=lambda row: (-(row["cost_usd"] or 0), -row["requests"], str(row["group"])))
        return json_response({"data": ranked[:n]})

    async def services(request: Request, access: Access, args: dict[str, Any]) -> Response:
        data = await cached(access, ("services",), lambda: analytics.services(lumina.engine, access.project_id))
        return json_response({"data": data})

    async def models(request: Request, access: Access, args: dict[str, Any]) -> Response:
        data = await cached(access, ("models",), lambda: analytics.models(lumina.engine, access.project_id))
        return json_response({"data": data})

    return [
        Operation(
            "GET",
            "/api/v1/analytics",
            "Requests, errors, cost, tokens and latency percentiles, per group and time bucket",
            series,
            s.obj(
                {
                    "data": {"type": "array", "items": s.AGGREGATE},
                    "start": s.TIME,
                    "end": s.TIME,
                    "bucket": s.nullable(s.STRING),
                }
            ),
            params=(
                *FILTER_PARAMS,
                LLM_ONLY,
                GROUP_BY,
                choice_param("bucket", "time bucket (UTC); none: totals over the range", tuple(analytics.BUCKETS)),
                bool_param("latency", "compute latency percentiles p50/p95/p99 (nearest rank)", True),
            ),
            tag="analytics",
        ),
        Operation(
            "GET",
            "/api/v1/analytics/top",
            "The most expensive traces, span names, models or services",
            top,
            s.obj({"data": {"type": "array", "items": {"anyOf": [s.TRACE, s.AGGREGATE]}}}),
            params=(
                *FILTER_PARAMS,
                LLM_ONLY,
                choice_param("by", "what to rank by cost", tuple(TOP), "traces"),
                int_param("n", "how many", 1, 100, 10),
            ),
            tag="analytics",
        ),
        Operation("GET", "/api/v1/services", "Services seen", services, s.listing(s.SERVICE), tag="catalogue"),
        Operation("GET", "/api/v1/models", "Models called", models, s.listing(s.MODEL), tag="catalogue"),
    ]
