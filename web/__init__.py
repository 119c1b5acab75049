"""The dashboard: server-rendered pages over the same query layer (and query cache) as the REST API.

Pages are plain HTML that work without JavaScript; ``static/lumina.js`` adds the charts, the theme
switch, auto-refresh and copy buttons. The Content-Security-Policy forbids inline scripts and styles,
and Jinja escapes everything a span carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from lumina_web.alerts import alert_actions, alert_page, alerts_page, rule_edits
from lumina_web.frame import HERE, Dashboard, page
from lumina_web.models import models_page, price_edits
from lumina_web.overview import overview
from lumina_web.quality import quality_page
from lumina_web.queue import dead_letter_actions, queue_page
from lumina_web.replay import compare_page, replay_page, run_cancel, run_page, run_start, set_creation
from lumina_web.session import login, logout
from lumina_web.settings import settings_page, sweep_action
from lumina_web.traces import trace_list, trace_view

if TYPE_CHECKING:
    from lumina_core.app import Lumina


def routes(lumina: Lumina) -> list[BaseRoute]:
    dash = Dashboard(lumina)
    edits = page(dash, price_edits(dash), scope="admin")
    rule_changes = page(dash, rule_edits(dash), scope="admin")
    alert_changes = page(dash, alert_actions(dash), scope="admin")
    letter_changes = page(dash, dead_letter_actions(dash), scope="admin")
    return [
        Route("/", page(dash, overview(dash)), methods=["GET"]),
        Route("/traces", page(dash, trace_list(dash)), methods=["GET"]),
        Route("/traces/{trace_id}", page(dash, trace_view(dash)), methods=["GET"]),
        Route("/models", page(dash, models_page(dash)), methods=["GET"]),
        Route("/quality", page(dash, quality_page(dash)), methods=["GET"]),
        Route("/alerts", page(dash, alerts_page(dash)), methods=["GET"]),
        Route("/alerts/rules", rule_changes, methods=["POST"]),
        Route("/alerts/rules/{name}", rule_changes, methods=["POST"]),
        Route("/alerts/rules/{name}/toggle", rule_changes, methods=["POST"]),
        Route("/alerts/rules/{name}/delete", rule_changes, methods=["POST"]),
        Route("/alerts/{alert_id}", page(dash, alert_page(dash)), methods=["GET"]),
        Route("/alerts/{alert_id}/ack", alert_changes, methods=["POST"]),
        Route("/alerts/{alert_id}/resolve", alert_changes, methods=["POST"]),
        Route("/replay", page(dash, replay_page(dash)), methods=["GET"]),
        Route("/replay/sets", page(dash, set_creation(dash), scope="admin"), methods=["POST"]),
        Route("/replay/runs", page(dash, run_start(dash), scope="admin"), methods=["POST"]),
        Route("/replay/compare", page(dash, compare_page(dash)), methods=["GET"]),
        Route("/replay/runs/{run_id}", page(dash, run_page(dash)), methods=["GET"]),
        Route("/replay/runs/{run_id}/cancel", page(dash, run_cancel(dash), scope="admin"), methods=["POST"]),
        Route("/queue", page(dash, queue_page(dash)), methods=["GET"]),
        Route("/settings", page(dash, settings_page(dash)), methods=["GET"]),
        Route("/settings/sweep", page(dash, sweep_action(dash), scope="admin"), methods=["POST"]),
        Route("/queue/dead-letters/redrive", letter_changes, methods=["POST"]),
        Route("/queue/dead-letters/discard", letter_changes, methods=["POST"]),
        Route("/models/prices", edits, methods=["POST"]),
        Route("/models/prices/{price_id}", edits, methods=["POST"]),
        Route("/models/prices/{price_id}/delete", edits, methods=["POST"]),
        Route("/login", login(dash), methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
