"""The Settings page: how the project's data is kept — retention (with a sweep now), the daily trace limit
and what it refused, sampling and what it dropped. The values come from ``lumina.toml``; the page shows
them, as ``/api/v1/data`` does."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lumina_core.api.data import data_settings
from lumina_core.auth import Access
from lumina_web.frame import Dashboard, PageError, link, same_origin


def settings_page(dash: Dashboard) -> Any:
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        data = await data_settings(lumina, access.project_id)
        limit = data["limits"]["daily_traces"]
        today = next((d for d in data["limits"]["days"] if d["day"] == lumina.limiter.today()), None)
        context = {
            **data,
            "today": today,
            "used_pct": (today["traces"] / limit * 100) if today and limit else None,
            "sampler_configs": {name: lumina.settings.samplers.get(name, {}) for name in data["sampling"]["samplers"]},
            "can_sweep": "admin" in access.scopes,
            "done": request.query_params.get("done"),
        }
        return await dash.render(request, access, "settings.html", context)

    return handler


def sweep_action(dash: Dashboard) -> Any:
    """``POST /settings/sweep``: the retention sweep of this project, now (``dry_run=1`` only counts)."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        dry_run = (await request.form()).get("dry_run") == "1"
        report = await lumina.retention.sweep(dry_run=dry_run, project=access.project_id)
        done = report.get(access.project_id)
        if done is None:
            message = "nothing is older than its retention"
        elif done.error:
            message = f"the sweep stopped: {done.error}; what was not archived is kept"
        else:
            verb = "would delete" if dry_run else "deleted"
            message = f"{verb} {done.spans} spans ({done.traces} traces)"
        return RedirectResponse(
            link("/settings", {"project": request.query_params.get("project"), "done": message}), 303
        )

    return handler
