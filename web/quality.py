"""The quality page: how responses compare with their baselines over the range, by service and span
name, and the worst drifts side by side with their baselines."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core import quality
from lumina_core.auth import Access
from lumina_core.storage.analytics import BUCKETS
from lumina_web.frame import Dashboard, time_range


def quality_page(dash: Dashboard) -> Any:
    engine = dash.lumina.engine

    async def handler(request: Request, access: Access) -> Response:
        when = time_range(dash.args(request, ()))
        project, start, end = access.project_id, when.start_ns, when.end_ns
        width = BUCKETS[when.bucket]
        totals, series, by_service, by_name, worst = await asyncio.gather(
            quality.analytics(engine, project, start, end),
            quality.analytics(engine, project, start, end, bucket_ns=width),
            quality.analytics(engine, project, start, end, "service"),
            quality.analytics(engine, project, start, end, "span_name"),
            quality.drifts(engine, project, start, end, 10),
        )
        by_slot = {row["bucket_unix_nano"]: row for row in series}
        slots = range(start // width * width, end, width)
        chart = {
            "x": [slot // 10**9 for slot in slots],
            "score": [by_slot[slot]["mean_score"] if slot in by_slot else None for slot in slots],
            "changed_rate": [
                round(by_slot[slot]["changed_rate"] * 100, 2)
                if slot in by_slot and by_slot[slot]["changed_rate"] is not None
                else None
                for slot in slots
            ],
        }
        context = {
            "when": when,
            "enabled": dash.lumina.quality is not None,
            "totals": totals[0] if totals else None,
            "chart": chart,
            "by_service": by_service,
            "by_name": by_name,
            "worst": worst,
        }
        return await dash.render(request, access, "quality.html", context)

    return handler
