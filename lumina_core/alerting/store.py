"""Stored alert rules (created and edited through the API) and the alerts with their history, as rows."""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.config import AlertRuleSettings
from lumina_core.storage.database import writing
from lumina_core.storage.models import alert_events_table, alert_outbox_table, alert_rules_table, alerts_table

log = logging.getLogger(__name__)
_r, _a = alert_rules_table.c, alerts_table.c
ALERT_STATES = ("firing", "acknowledged", "resolved")


async def stored_rules(engine: AsyncEngine, project_id: str | None = None) -> list[tuple[str, AlertRuleSettings]]:
    """``(project, rule)`` for the rules stored (of one project), skipping any that no longer validate (a
    newer Lumina may have stored it): the engine logs those when it loads them."""
    query = sa.select(_r.project_id, _r.spec).order_by(_r.project_id, _r.name)
    if project_id is not None:
        query = query.where(_r.project_id == project_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = []
    for project, spec in rows:
        try:
            out.append((project, AlertRuleSettings.model_validate(spec)))
        except ValidationError as exc:
            log.warning("stored alert rule %s/%s no longer validates: %s", project, spec.get("name"), exc)
    return out


async def save_rule(engine: AsyncEngine, project_id: str, rule: AlertRuleSettings, *, create: bool) -> bool:
    """Store a new rule (``create``) or replace a stored one; ``False`` if it exists (create) or not (replace)."""
    now = time.time_ns()
    spec = rule.model_dump(mode="json")
    here = (_r.project_id == project_id) & (_r.name == rule.name)
    async with writing(engine) as conn:
        exists = (await conn.execute(sa.select(sa.func.count()).where(here))).scalar_one() > 0
        if exists == create:
            return False
        if create:
            values = {"project_id": project_id, "name": rule.name, "spec": spec}
            await conn.execute(
                sa.insert(alert_rules_table).values(**values, created_unix_nano=now, updated_unix_nano=now)
            )
        else:
            await conn.execute(sa.update(alert_rules_table).where(here).values(spec=spec, updated_unix_nano=now))
    return True


async def delete_rule(engine: AsyncEngine, project_id: str, name: str) -> bool:
    async with writing(engine) as conn:
        result = await conn.execute(sa.delete(alert_rules_table).where(_r.project_id == project_id, _r.name == name))
        return bool(result.rowcount)


async def list_alerts(
    engine: AsyncEngine, project_id: str, state: str | None = None, rule: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Alerts newest first; ``state="open"`` means firing or acknowledged."""
    query = sa.select(alerts_table).where(_a.project_id == project_id)
    if state == "open":
        query = query.where(_a.state.in_(("firing", "acknowledged")))
    elif state is not None:
        query = query.where(_a.state == state)
    if rule is not None:
        query = query.where(_a.rule == rule)
    async with engine.connect() as conn:
        rows = await conn.execute(query.order_by(_a.started_unix_nano.desc(), _a.id.desc()).limit(limit))
        return [dict(row) for row in rows.mappings()]


async def get_alert(engine: AsyncEngine, project_id: str, alert_id: int) -> dict[str, Any] | None:
    """An alert with its ``events`` (oldest first) and its notifications' ``deliveries``."""
    e, o = alert_events_table.c, alert_outbox_table.c
    async with engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(alerts_table).where(_a.id == alert_id, _a.project_id == project_id)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        events = await conn.execute(sa.select(alert_events_table).where(e.alert_id == alert_id).order_by(e.id))
        deliveries = await conn.execute(
            sa.select(o.id, o.event_id, o.sink, o.state, o.attempts, o.last_error, o.delivered_unix_nano)
            .where(o.alert_id == alert_id)
            .order_by(o.id)
        )
        return {
            **dict(row),
            "events": [dict(r) for r in events.mappings()],
            "deliveries": [dict(r) for r in deliveries.mappings()],
        }
