"""``/api/v1/quality``: detector verdicts per span, and the baselines of a prompt fingerprint (pin one)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from lumina_core import quality
from lumina_core.api import (
    ApiError,
    Operation,
    Param,
    choice_param,
    int_param,
    json_response,
    read_body,
    text_param,
    time_param,
)
from lumina_core.api import schemas as s
from lumina_core.api.analytics import MAX_BUCKETS, time_range
from lumina_core.auth import Access
from lumina_core.storage.analytics import BUCKETS
from lumina_core.storage.models import quality_baselines_table, quality_results_table
from lumina_core.storage.queries import iso

if TYPE_CHECKING:
    from lumina_core.app import Lumina

VERDICTS = ("baseline", "match", "changed")
ANALYTICS_ROW = s.obj(
    {
        "group": s.nullable(s.STRING),
        "bucket_unix_nano": s.nullable(s.INTEGER),
        **{k: s.INTEGER for k in ("compared", "baselines", "changed", "degraded")},
        **{k: s.nullable(s.NUMBER) for k in ("changed_rate", "degraded_rate", "mean_score", "min_score")},
    }
)
DRIFT = {
    **s.table_row(quality_results_table),
    "properties": {
        **s.table_row(quality_results_table)["properties"],
        "baseline_output": s.nullable(s.STRING),
        "output": s.nullable(s.STRING),
    },
}
FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def _fingerprint(value: str) -> str:
    if not FINGERPRINT.fullmatch(value):
        raise ValueError("64 lowercase hex digits, as a result gives it")
    return value


FINGERPRINT_PARAM = Param(
    "fingerprint",
    "prompt fingerprint (from a result)",
    {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    _fingerprint,
    required=True,
)


class PinRequest(BaseModel):
    """The span whose response becomes the one baseline of its prompt."""

    model_config = ConfigDict(extra="forbid")
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")


def operations(lumina: Lumina) -> list[Operation]:
    async def list_results(request: Request, access: Access, args: dict[str, Any]) -> Response:
        rows = await quality.results(
            lumina.engine,
            access.project_id,
            trace_id=args["trace_id"],
            span_id=args["span_id"],
            service=args["service"],
            verdict=args["verdict"],
            limit=args["limit"],
        )
        return json_response({"data": rows})

    async def list_baselines(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response({"data": await quality.baselines(lumina.engine, access.project_id, args["fingerprint"])})

    async def pin_baseline(request: Request, access: Access, args: dict[str, Any]) -> Response:
        body = await read_body(request, PinRequest)
        try:
            pinned = await quality.pin_span(lumina.engine, access.project_id, body.trace_id, body.span_id)
        except quality.NotPinnable as exc:
            status, code = (422, "not_pinnable") if exc.found else (404, "not_found")
            raise ApiError(status, code, str(exc)) from None
        return json_response(pinned, 201)

    async def quality_analytics(request: Request, access: Access, args: dict[str, Any]) -> Response:
        args = time_range(args)
        bucket = args["bucket"]
        if bucket and (args["end"] - args["start"]) // BUCKETS[bucket] >= MAX_BUCKETS:
            raise ApiError(400, "invalid_parameter", f"bucket: more than {MAX_BUCKETS} {bucket}s in the range")
        data = await quality.analytics(
            lumina.engine,
            access.project_id,
            args["start"],
            args["end"],
            args["group_by"],
            BUCKETS[bucket] if bucket else None,
            args["detector"],
        )
        return json_response({"data": data, "start": iso(args["start"]), "end": iso(args["end"]), "bucket": bucket})

    async def list_drifts(request: Request, access: Access, args: dict[str, Any]) -> Response:
        args = time_range(args)
        data = await quality.drifts(lumina.engine, access.project_id, args["start"], args["end"], args["n"])
        return json_response({"data": data})

    window = (time_param("start", "spans started at or after (default: 24 h ago)"), time_param("end", "before"))
    return [
        Operation(
            "GET",
            "/api/v1/quality/analytics",
            "Compared, changed and degraded responses and their mean score, per group and time bucket",
            quality_analytics,
            s.obj(
                {
                    "data": {"type": "array", "items": ANALYTICS_ROW},
                    "start": s.TIME,
                    "end": s.TIME,
                    "bucket": s.nullable(s.STRING),
                }
            ),
            params=(
                *window,
                choice_param("group_by", "group by", tuple(quality.QUALITY_GROUPS)),
                choice_param("bucket", "time bucket (UTC); none: totals over the range", tuple(BUCKETS)),
                text_param("detector", "only this detector's verdicts"),
            ),
            tag="quality",
        ),
        Operation(
            "GET",
            "/api/v1/quality/drifts",
            "The lowest-scored responses, each with its baseline's output",
            list_drifts,
            s.listing(DRIFT),
            params=(*window, int_param("n", "how many", 1, 100, 10)),
            tag="quality",
        ),
        Operation(
            "GET",
            "/api/v1/quality/results",
            "Quality verdicts of LLM spans, newest first",
            list_results,
            s.listing(s.table_row(quality_results_table)),
            params=(
                text_param("trace_id", "only this trace's spans", 32),
                text_param("span_id", "only this span", 16),
                text_param("service", "only this service"),
                choice_param("verdict", "baseline, match or changed", VERDICTS),
                int_param("limit", "how many", 1, 1000, 100),
            ),
            tag="quality",
        ),
        Operation(
            "GET",
            "/api/v1/quality/baselines",
            "Every baseline a prompt fingerprint has had, newest first",
            list_baselines,
            s.listing(s.table_row(quality_baselines_table)),
            params=(FINGERPRINT_PARAM,),
            tag="quality",
        ),
        Operation(
            "POST",
            "/api/v1/quality/baselines",
            "Pin a span's response as the one baseline of its prompt (the active ones retire)",
            pin_baseline,
            s.table_row(quality_baselines_table),
            "admin",
            status=201,
            body=PinRequest.model_json_schema(),
            tag="quality",
            errors=(400, 401, 403, 404, 422),
        ),
    ]
