"""``/api/v1/alerts``: alert rules (those of ``lumina.toml``, read-only, and those stored through the API),
alerts with their history, acknowledging and resolving them, and evaluating rules on demand."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core.alerting import store
from lumina_core.api import (
    ApiError,
    Operation,
    bool_param,
    choice_param,
    int_param,
    json_response,
    read_body,
    row_id,
    text_param,
    time_param,
)
from lumina_core.api import schemas as s
from lumina_core.auth import Access
from lumina_core.config import AlertRuleSettings
from lumina_core.storage.models import alert_events_table, alerts_table
from lumina_core.storage.queries import iso

if TYPE_CHECKING:
    from lumina_core.app import Lumina

RULE_BODY = s.inlined(AlertRuleSettings.model_json_schema())
RULE = {
    **RULE_BODY,
    "properties": {
        **RULE_BODY["properties"],
        "source": {"enum": ["config", "api"]},
        "thresholds": {"type": "object", "description": "effective thresholds: '*' and per service"},
    },
}
ALERT = s.obj({**s.table_row(alerts_table)["properties"], "started_at": s.TIME, "resolved_at": s.nullable(s.TIME)})
ALERT_DETAIL = s.obj(
    {
        **ALERT["properties"],
        "events": {"type": "array", "items": s.table_row(alert_events_table)},
        "deliveries": {"type": "array", "items": {"type": "object"}},
        "series": s.obj({"x": {"type": "array"}, "value": {"type": "array"}, "threshold": s.nullable(s.NUMBER)}),
    }
)
DECISION = s.obj(
    {
        "project_id": s.STRING,
        "rule": s.STRING,
        "scope": {"type": "object"},
        "firing": s.nullable(s.BOOLEAN),
        "value": s.nullable(s.NUMBER),
        "threshold": s.nullable(s.NUMBER),
        "baseline": s.nullable(s.NUMBER),
        "summary": s.STRING,
        "action": {"enum": ["fire", "repeat", "resolve", "keep", "cooldown", "none"]},
        "notification": s.nullable({"type": "object"}),
        "sinks": {"type": "array", "items": s.STRING},
    }
)


def alert_out(row: dict[str, Any]) -> dict[str, Any]:
    resolved = row["resolved_unix_nano"]
    return {**row, "started_at": iso(row["started_unix_nano"]), "resolved_at": iso(resolved) if resolved else None}


def alert_id_of(request: Request) -> int:
    raw = request.path_params["alert_id"]
    alert_id = row_id(raw)
    if alert_id is None:
        raise ApiError(404, "not_found", f"alert {raw} not found")
    return alert_id


def actor(access: Access) -> str:
    return f"API key {access.key_id}" if access.key_id is not None else "anonymous (open mode)"


def operations(lumina: Lumina) -> list[Operation]:
    kinds = lumina.alerts.kinds
    kind_names = sorted(lumina.plugins.factories.get("alert_rule", {}))
    kind_schema = {**RULE_BODY["properties"]["kind"], "enum": kind_names}
    body = {**RULE_BODY, "properties": {**RULE_BODY["properties"], "kind": kind_schema}}

    def rule_out(rule: AlertRuleSettings, source: str) -> dict[str, Any]:
        return {**rule.model_dump(mode="json"), "source": source, "thresholds": kinds.thresholds(rule)}

    async def all_rules(project_id: str) -> list[dict[str, Any]]:
        return [rule_out(rule, source) for rule, source in await lumina.alerts.listed_rules(project_id)]

    async def find_rule(project_id: str, name: str) -> dict[str, Any]:
        for rule, source in await lumina.alerts.listed_rules(project_id):
            if rule.name == name:
                return rule_out(rule, source)
        raise ApiError(404, "not_found", f"alert rule {name!r} not found")

    async def checked_body(request: Request) -> AlertRuleSettings:
        rule = await read_body(request, AlertRuleSettings)
        problems = kinds.check(rule)
        if problems:
            raise ApiError(422, "invalid_rule", "; ".join(f"{path}: {message}" for path, message in problems))
        return rule

    async def list_rules(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response({"data": await all_rules(access.project_id)})

    async def get_rule(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response(await find_rule(access.project_id, request.path_params["name"]))

    async def create_rule(request: Request, access: Access, args: dict[str, Any]) -> Response:
        rule = await checked_body(request)
        if not await lumina.alerts.save_rule(access.project_id, rule, create=True):
            raise ApiError(409, "conflict", f"an alert rule named {rule.name!r} exists")
        return json_response(rule_out(rule, "api"), 201)

    async def replace_rule(request: Request, access: Access, args: dict[str, Any]) -> Response:
        name = request.path_params["name"]
        if (await find_rule(access.project_id, name))["source"] == "config":
            raise ApiError(409, "read_only", f"alert rule {name!r} is defined in lumina.toml; change it there")
        rule = await checked_body(request)
        if rule.name != name:
            raise ApiError(422, "invalid_rule", f"name: the body names {rule.name!r}, the path {name!r}")
        await lumina.alerts.save_rule(access.project_id, rule, create=False)
        return json_response(rule_out(rule, "api"))

    async def delete_rule(request: Request, access: Access, args: dict[str, Any]) -> Response:
        name = request.path_params["name"]
        if (await find_rule(access.project_id, name))["source"] == "config":
            raise ApiError(409, "read_only", f"alert rule {name!r} is defined in lumina.toml; remove it there")
        await lumina.alerts.delete_rule(access.project_id, name)
        return Response(status_code=204)

    async def evaluate(request: Request, access: Access, args: dict[str, Any]) -> Response:
        if args["rule"] is not None:
            await find_rule(access.project_id, args["rule"])
        decisions = await lumina.alerts.evaluate(
            args["at"] if args["at"] is not None else time.time_ns(),
            rule=args["rule"],
            project_id=access.project_id,
            dry_run=args["dry_run"],
        )
        return json_response({"data": [d.to_dict() for d in decisions]})

    async def list_alerts(request: Request, access: Access, args: dict[str, Any]) -> Response:
        rows = await store.list_alerts(lumina.engine, access.project_id, args["state"], args["rule"], args["limit"])
        return json_response({"data": [alert_out(r) for r in rows]})

    async def get_alert(request: Request, access: Access, args: dict[str, Any]) -> Response:
        alert_id = alert_id_of(request)
        alert = await store.get_alert(lumina.engine, access.project_id, alert_id)
        if alert is None:
            raise ApiError(404, "not_found", f"alert {alert_id} not found")
        return json_response({**alert_out(alert), "series": await lumina.alerts.series(alert)})

    def act(verb: str) -> Any:
        async def handler(request: Request, access: Access, args: dict[str, Any]) -> Response:
            alert_id = alert_id_of(request)
            act_on = lumina.alerts.acknowledge if verb == "ack" else lumina.alerts.resolve
            alert = await act_on(access.project_id, alert_id, actor(access))
            if alert is None:
                raise ApiError(404, "not_found", f"no open alert {alert_id}")
            return json_response(alert_out(alert))

        return handler

    rule_path = "/api/v1/alerts/rules/{name}"
    return [
        Operation("GET", "/api/v1/alerts/rules", "Alert rules", list_rules, s.listing(RULE), tag="alerts"),
        Operation(
            "POST",
            "/api/v1/alerts/rules",
            "Create an alert rule (stored, applies at once)",
            create_rule,
            RULE,
            "admin",
            status=201,
            body=body,
            tag="alerts",
            errors=(400, 401, 403, 409, 422),
        ),
        Operation("GET", rule_path, "An alert rule", get_rule, RULE, tag="alerts", errors=(400, 401, 403, 404)),
        Operation(
            "PUT",
            rule_path,
            "Replace an alert rule created through the API",
            replace_rule,
            RULE,
            "admin",
            body=body,
            tag="alerts",
            errors=(400, 401, 403, 404, 409, 422),
        ),
        Operation(
            "DELETE",
            rule_path,
            "Delete an alert rule created through the API",
            delete_rule,
            {},
            "admin",
            status=204,
            tag="alerts",
            errors=(401, 403, 404, 409),
        ),
        Operation(
            "POST",
            "/api/v1/alerts/evaluate",
            "Evaluate the rules now (or as at a past time); with dry_run, only say what would be sent",
            evaluate,
            s.listing(DECISION),
            "admin",
            params=(
                text_param("rule", "only this rule (even when disabled)"),
                time_param("at", "evaluate as at this time (default: now)"),
                bool_param("dry_run", "change nothing, send nothing", False),
            ),
            tag="alerts",
            errors=(400, 401, 403, 404),
        ),
        Operation(
            "GET",
            "/api/v1/alerts",
            "Alerts, newest first",
            list_alerts,
            s.listing(ALERT),
            params=(
                choice_param("state", "open (firing or acknowledged), or one state", ("open", *store.ALERT_STATES)),
                text_param("rule", "only this rule's alerts"),
                int_param("limit", "how many", 1, 1000, 100),
            ),
            tag="alerts",
        ),
        Operation(
            "GET",
            "/api/v1/alerts/{alert_id}",
            "An alert with its history, deliveries and the chart of its metric",
            get_alert,
            ALERT_DETAIL,
            tag="alerts",
            errors=(400, 401, 403, 404),
        ),
        Operation(
            "POST",
            "/api/v1/alerts/{alert_id}/ack",
            "Acknowledge an open alert: no more re-notifications",
            act("ack"),
            ALERT,
            "admin",
            tag="alerts",
            errors=(401, 403, 404),
        ),
        Operation(
            "POST",
            "/api/v1/alerts/{alert_id}/resolve",
            "Resolve an open alert by hand (its sinks are told)",
            act("resolve"),
            ALERT,
            "admin",
            tag="alerts",
            errors=(401, 403, 404),
        ),
    ]
