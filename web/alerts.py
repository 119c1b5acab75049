"""The alerts pages: open and recent alerts (acknowledge, resolve), the rules with the thresholds each service
gets, the rule editor over the same operations as ``/api/v1/alerts``, and one alert with its history,
deliveries and the chart of its metric around the time it fired."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lumina_core.alerting import store
from lumina_core.api import row_id, text_param
from lumina_core.api.alerts import actor
from lumina_core.auth import Access
from lumina_core.config import AlertRuleSettings
from lumina_core.plugin_api import AlertThresholds
from lumina_web import format as fmt
from lumina_web.frame import Dashboard, PageError, link, same_origin

if TYPE_CHECKING:
    from lumina_core.app import Lumina

EDIT_PARAM = text_param("edit", "stored alert rule to edit", 100)
RECENT = 50
SHARED_KEYS = ("min_samples", "cooldown_seconds", "severity")
"""Of the thresholds every kind has, those the rules table shows after the kind's own."""
JSON_FIELDS = ("params", "services")
FORM_FIELDS = (
    "name",
    "kind",
    "description",
    "window",
    "baseline",
    "baseline_windows",
    "group_by",
    "where_service",
    "sinks",
    *JSON_FIELDS,
)
UNITS = {"cost_spike": "usd", "budget": "usd", "call_cost": "usd", "error_rate": "ratio", "latency_p95": "ms"}
"""How the built-in kinds' metrics read; other kinds' values are shown as plain numbers."""


# ---- presentation ----


def unit_of(kind: str, params: dict[str, Any]) -> str:
    if kind == "quality_drop":
        return "ratio" if params.get("measure") == "changed_rate" else "score"
    return UNITS.get(kind, "number")


def measured(value: float | None, unit: str) -> str:
    """A metric or threshold in its unit: $0.0123, 4.5%, 850 ms, 0.912."""
    if value is None:
        return fmt.DASH
    if unit == "usd":
        return fmt.cost(value)
    if unit == "ratio":
        return fmt.pct(value)
    if unit == "ms":
        return fmt.ms(value)
    return f"{value:.3f}" if unit == "score" else f"{value:.4g}"


def window_text(window: int | str) -> str:
    if isinstance(window, str):
        return f"calendar {window}"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if window % size == 0:
            return f"{window // size} {unit}"
    return f"{window} s"


def _seconds(value: float) -> str:
    return window_text(int(value)) if float(value).is_integer() else f"{value:g} s"


def scope_text(scope: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope.items()) or "all calls"


def _shown(value: Any) -> str:
    if value is None:
        return fmt.DASH
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    """An alert row with its scope, value and threshold as the tables show them."""
    unit = unit_of(row["kind"], (row.get("rule_spec") or {}).get("params", {}))
    return {
        **row,
        "scope_text": scope_text(row["scope"]),
        "value_text": measured(row["value"], unit),
        "threshold_text": measured(row["threshold"], unit),
        "baseline_text": measured(row["baseline"], unit),
        "is_open": row["state"] in ("firing", "acknowledged"),
    }


def threshold_rows(lumina: Lumina, rule: AlertRuleSettings) -> tuple[list[tuple[str, list[tuple[str, str]]]], str]:
    """The effective thresholds, ``*`` in full and each service by what it changes; or what is wrong."""
    factory = lumina.plugins.factories.get("alert_rule", {}).get(rule.kind)
    if factory is None:
        return [], f"unknown kind {rule.kind!r}"
    try:
        effective = lumina.alerts.kinds.thresholds(rule)
    except ValidationError as exc:
        return [], "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
    own = [k for k in factory.config_model.model_fields if k not in AlertThresholds.model_fields]
    keys = [*own, *SHARED_KEYS]
    everywhere = effective.get("*", {})
    rows = [("*", [(k, _shown(everywhere.get(k))) for k in keys if k in everywhere])]
    for scope, values in effective.items():
        if scope != "*":
            changed = [(k, _shown(v)) for k, v in values.items() if v != everywhere.get(k)]
            rows.append((scope, changed))
    return [(scope, pairs) for scope, pairs in rows if pairs or scope == "*"], ""


async def rule_rows(lumina: Lumina, project: str) -> list[dict[str, Any]]:
    """``lumina.toml``'s rules, then the stored ones (those the engine skips say why)."""
    running = {r.name for r in lumina.alerts.rules_of(project) if r.source == "api"}
    rows = []
    for rule, source in await lumina.alerts.listed_rules(project):
        thresholds, problem = threshold_rows(lumina, rule)
        if source == "api" and rule.name not in running and not problem:
            problem = "not running: " + ("; ".join(m for _, m in lumina.alerts.kinds.check(rule)) or "reload pending")
        rows.append(
            {
                "rule": rule,
                "source": source,
                "window": window_text(rule.window),
                "thresholds": thresholds,
                "problem": problem,
            }
        )
    return rows


# ---- the rule editor's form ----


def form_of(rule: AlertRuleSettings | None) -> dict[str, Any]:
    """The editor's fields for a stored rule, or for a new one (the rule defaults)."""
    blank = AlertRuleSettings(name="new", kind="")  # the defaults of every other field
    spec = (rule or blank).model_dump(mode="json")
    return {
        "name": rule.name if rule else "",
        "kind": spec["kind"],
        "description": spec["description"],
        "window": str(spec["window"]),
        "baseline": spec["baseline"],
        "baseline_windows": str(spec["baseline_windows"]),
        "group_by": ", ".join(spec["group_by"]),
        "where_service": spec["where"]["service"] or "",
        "sinks": ", ".join(spec["sinks"]) if spec["sinks"] is not None else "",
        "params": json.dumps(spec["params"], indent=2),
        "services": json.dumps(spec["services"], indent=2),
        "enabled": spec["enabled"],
        "editing": rule.name if rule else None,
    }


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def form_values(data: FormData) -> dict[str, Any]:
    """The posted editor fields as text (a field not sent is empty; an unticked box is not sent)."""
    values: dict[str, Any] = {k: v.strip() if isinstance(v := data.get(k), str) else "" for k in FORM_FIELDS}
    values["enabled"] = data.get("enabled") is not None
    return values


def rule_from_form(
    lumina: Lumina, form: dict[str, Any], base: AlertRuleSettings | None
) -> tuple[AlertRuleSettings | None, list[str]]:
    """The rule the form describes, or what is wrong with it. Editing keeps what the form has no field for
    (``projects``, the rest of ``where``)."""
    spec: dict[str, Any] = base.model_dump(mode="json") if base else {}
    problems = []
    for field in JSON_FIELDS:
        try:
            value = json.loads(form[field]) if form[field] else {}
        except json.JSONDecodeError as exc:
            problems.append(f"{field}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
            continue
        if not isinstance(value, dict):
            problems.append(f'{field}: must be a JSON object, like {{"above_pct": 50}}')
        spec[field] = value
    if problems:
        return None, problems
    spec.update(
        name=base.name if base else form["name"],
        kind=form["kind"],
        description=form["description"],
        enabled=form["enabled"],
        baseline=form["baseline"] or "previous",
        group_by=_names(form["group_by"]),
        where={**spec.get("where", {}), "service": form["where_service"] or None},
        sinks=_names(form["sinks"]) or None,
    )
    for field in ("window", "baseline_windows"):
        text = form[field]
        if not text:
            spec.pop(field, None)  # the default
        else:
            spec[field] = int(text) if text.isascii() and text.isdecimal() else text
    try:
        rule = AlertRuleSettings.model_validate(spec)
    except ValidationError as exc:
        return None, [f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors()]
    checked = lumina.alerts.kinds.check(rule)
    if checked:
        return None, [f"{path}: {message}" for path, message in checked]
    return rule, []


async def stored_rule(lumina: Lumina, project: str, name: str) -> AlertRuleSettings | None:
    return next((r for _, r in await store.stored_rules(lumina.engine, project) if r.name == name), None)


# ---- pages ----


def alerts_page(dash: Dashboard) -> Any:
    async def handler(request: Request, access: Access) -> Response:
        return await render_alerts(dash, request, access)

    return handler


async def render_alerts(
    dash: Dashboard,
    request: Request,
    access: Access,
    form: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    """The page; after a refused rule change, with the form as sent and what was wrong with it."""
    lumina = dash.lumina
    args = dash.args(request, (EDIT_PARAM,))
    project = access.project_id
    can_edit = "admin" in access.scopes
    if form is None:
        editing = await stored_rule(lumina, project, args["edit"]) if args["edit"] and can_edit else None
        form = form_of(editing)
    open_alerts = await store.list_alerts(lumina.engine, project, "open", limit=200)
    recent = await store.list_alerts(lumina.engine, project, limit=RECENT)
    context = {
        "open_alerts": [alert_view(a) for a in open_alerts],
        "recent": [alert_view(a) for a in recent],
        "rules": await rule_rows(lumina, project),
        "kinds": sorted(lumina.plugins.factories.get("alert_rule", {}).values(), key=lambda f: f.type),
        "sinks": sorted(lumina.alerts.kinds.sinks),
        "default_sinks": lumina.settings.alerts.sinks,
        "settings": lumina.settings.alerts,
        "interval": _seconds(lumina.settings.alerts.interval_seconds),
        "form": form,
        "errors": errors or [],
        "can_edit": can_edit,
    }
    return await dash.render(request, access, "alerts.html", context, status)


def _alert_id(request: Request) -> int:
    raw = request.path_params["alert_id"]
    alert_id = row_id(raw)
    if alert_id is None:
        raise PageError(404, f"alert {raw} not found")
    return alert_id


def alert_page(dash: Dashboard) -> Any:
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        dash.args(request, ())
        alert_id = _alert_id(request)
        alert = await store.get_alert(lumina.engine, access.project_id, alert_id)
        if alert is None:
            raise PageError(404, f"alert {alert_id} not found")
        view = alert_view(alert)
        unit = unit_of(alert["kind"], alert["rule_spec"].get("params", {}))
        try:
            series = await lumina.alerts.series(alert)
            chart_problem = ""
        except ValidationError as exc:  # the thresholds changed so that the rule no longer validates
            series, chart_problem = {"x": [], "value": [], "threshold": alert["threshold"]}, str(exc)
        threshold = series["threshold"]
        chart = {
            "x": series["x"],
            "value": series["value"],
            "threshold": [threshold] * len(series["x"]),
            "unit": unit,
            "label": alert["kind"].replace("_", " "),
            "open": [alert["started_unix_nano"] // 10**9, (alert["resolved_unix_nano"] or 0) // 10**9 or None],
        }
        events = [{**e, "value_text": measured(e["value"], unit)} for e in alert["events"]]
        context = {
            "alert": view,
            "events": events,
            "deliveries": alert["deliveries"],
            "chart": chart,
            "chart_problem": chart_problem,
            "window": window_text(alert["rule_spec"].get("window", 300)),
            "rule_spec": json.dumps(alert["rule_spec"], indent=2),
            "can_edit": "admin" in access.scopes,
        }
        return await dash.render(request, access, "alert.html", context)

    return handler


def alert_actions(dash: Dashboard) -> Any:
    """``POST /alerts/{id}/ack`` and ``/alerts/{id}/resolve``; back to the list or the alert's page."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        alert_id = _alert_id(request)
        project = access.project_id
        act = lumina.alerts.acknowledge if request.url.path.endswith("/ack") else lumina.alerts.resolve
        acted = await act(project, alert_id, actor(access))
        # None: already resolved (by the engine, or another click), so nothing to do; or a wrong id
        if acted is None and await store.get_alert(lumina.engine, project, alert_id) is None:
            raise PageError(404, f"alert {alert_id} not found")
        form = await request.form()
        back = f"/alerts/{alert_id}" if form.get("back") == "alert" else "/alerts"
        return RedirectResponse(link(back, {"project": request.query_params.get("project")}), 303)

    return handler


def rule_edits(dash: Dashboard) -> Any:
    """``POST /alerts/rules`` (add), ``/alerts/rules/{name}`` (replace), ``…/toggle`` and ``…/delete``:
    stored rules only; ``lumina.toml``'s are changed there."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        project = access.project_id
        name = request.path_params.get("name")
        back = link("/alerts", {"project": request.query_params.get("project")})
        base = None
        if name is not None:
            base = await stored_rule(lumina, project, name)
            if base is None:
                if lumina.alerts.defined_in_config(project, name):
                    raise PageError(409, f"alert rule {name!r} is defined in lumina.toml; change it there")
                raise PageError(404, f"alert rule {name!r} not found")
        path = request.url.path
        if base is not None and path.endswith("/delete"):
            await lumina.alerts.delete_rule(project, base.name)
            return RedirectResponse(back + "#rules", 303)
        if base is not None and path.endswith("/toggle"):
            toggled = base.model_copy(update={"enabled": not base.enabled})
            await lumina.alerts.save_rule(project, toggled, create=False)
            return RedirectResponse(back + "#rules", 303)
        form = {**form_values(await request.form()), "editing": name}
        rule, problems = rule_from_form(lumina, form, base)
        if rule is None:
            return await render_alerts(dash, request, access, form, problems, 422)
        if not await lumina.alerts.save_rule(project, rule, create=base is None):
            if base is not None:
                raise PageError(404, f"alert rule {name!r} not found")
            problem = f"name: an alert rule named {rule.name!r} exists"
            return await render_alerts(dash, request, access, form, [problem], 409)
        return RedirectResponse(back + "#rules", 303)

    return handler
