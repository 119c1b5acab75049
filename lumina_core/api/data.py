"""``/api/v1/data``: how a project's data is kept — retention, the daily trace limit with what it refused,
sampling with what it dropped — and ``/api/v1/retention/run`` to sweep now (admin)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import ApiError, Operation, bool_param, json_response
from lumina_core.api import schemas as s
from lumina_core.auth import Access
from lumina_core.retention import SweepRunning
from lumina_core.sampling import sampled_out_totals
from lumina_core.storage.limits import daily_usage
from lumina_core.storage.models import DAY_NS

if TYPE_CHECKING:
    from lumina_core.app import Lumina

USAGE_DAY = s.obj({"day": s.STRING, "traces": s.INTEGER, "refused_traces": s.INTEGER, "refused_spans": s.INTEGER})
DATA = s.obj(
    {
        "retention": s.obj(
            {
                "days": s.INTEGER,
                "services": {"type": "object", "additionalProperties": s.INTEGER},
                "archiver": s.nullable(s.STRING),
                "next_sweep": s.nullable(s.TIME),
            }
        ),
        "limits": s.obj({"daily_traces": s.INTEGER, "days": {"type": "array", "items": USAGE_DAY}}),
        "sampling": s.obj(
            {
                "samplers": {"type": "array", "items": s.STRING},
                "dropped_last_24h": s.obj({"spans": s.INTEGER, "traces": s.INTEGER}),
            }
        ),
    }
)
SWEEP = s.obj(
    {
        "spans": s.INTEGER,
        "traces": s.INTEGER,
        "archives": {"type": "array", "items": s.STRING},
        "error": s.nullable(s.STRING),
    }
)


async def data_settings(lumina: Lumina, project_id: str) -> dict[str, Any]:
    """What the API's ``/api/v1/data`` and the dashboard's Settings page show."""
    settings = lumina.settings
    retention = settings.retention
    project = retention.projects.get(project_id)
    services = {**retention.services, **(project.services if project else {})}
    now_ns = time.time_ns()
    return {
        "retention": {
            "days": retention.days_for(project_id),
            "services": {svc: retention.days_for(project_id, svc) for svc in sorted(services)},
            "archiver": retention.archiver,
            "next_sweep": lumina.retention.next_sweep(datetime.now(UTC)).isoformat() if retention.enabled else None,
        },
        "limits": {
            "daily_traces": settings.limits.daily_traces_for(project_id),
            "days": await daily_usage(lumina.engine, project_id),
        },
        "sampling": {
            "samplers": settings.sampling.samplers,
            "dropped_last_24h": await sampled_out_totals(lumina.engine, project_id, now_ns - DAY_NS, now_ns),
        },
    }


def operations(lumina: Lumina) -> list[Operation]:
    async def show(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response(await data_settings(lumina, access.project_id))

    async def sweep(request: Request, access: Access, args: dict[str, Any]) -> Response:
        try:
            report = await lumina.retention.sweep(dry_run=args["dry_run"], project=access.project_id)
        except SweepRunning as exc:
            raise ApiError(409, "sweep_running", str(exc)) from exc
        done = report.get(access.project_id)
        return json_response(done.as_dict() if done else {"spans": 0, "traces": 0, "archives": [], "error": None})

    dry_run = bool_param("dry_run", "count what would be deleted; change nothing", False)
    return [
        Operation(
            "GET",
            "/api/v1/data",
            "Retention, daily limit and sampling, with what was refused or dropped",
            show,
            DATA,
            tag="data",
        ),
        Operation(
            "POST",
            "/api/v1/retention/run",
            "Sweep the project now: archive, then delete, spans older than their retention",
            sweep,
            SWEEP,
            "admin",
            params=(dry_run,),
            errors=(400, 401, 403, 409),
            tag="data",
        ),
    ]
