"""The alert engine: evaluates every rule per project and scope on a schedule (and single calls as they are
stored), moves each scope's alert through ok → firing → resolved, and writes notifications to the outbox.

Per rule and scope (its *dedup key*) at most one alert is open. A new alert is not raised within the
rule's cooldown after the last one resolved; an open one is re-notified every ``renotify_seconds`` unless
acknowledged; a scope with too little data keeps its alert, or resolves it with ``no_data = "resolve"``.
The alert, its history event and its outbox rows are written in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumina_core.alerting import store
from lumina_core.alerting.rules import ActiveRule, RuleKinds, is_immediate, rule_sinks, scope_service_model
from lumina_core.alerting.stats import NONE, SPAN_COLUMNS, Scope, WindowQuery, WindowReader
from lumina_core.config import AlertRuleSettings, AlertSettings
from lumina_core.plugin_api import Alert, AlertThresholds, AlertVerdict, WindowStats
from lumina_core.storage.database import JobLock, writing
from lumina_core.storage.models import alert_events_table, alert_outbox_table, alerts_table
from lumina_core.storage.projects import list_projects

log = logging.getLogger(__name__)
Action = Literal["fire", "repeat", "resolve", "keep", "cooldown", "none"]
OPEN = ("firing", "acknowledged")
NS = 1_000_000_000
_a, _e = alerts_table.c, alert_events_table.c


def dedup_key(project_id: str, rule: str, scope: dict[str, str]) -> str:
    """Stable for one project, rule and scope; readable, and at most 255 characters (PagerDuty's limit)."""
    where = ",".join(f"{k}={v}" for k, v in scope.items())
    key = f"lumina/{project_id}/{rule}/{where}"
    if len(key) > 255:
        key = f"lumina/{project_id}/{rule[:100]}/" + hashlib.sha256(where.encode()).hexdigest()
    return key


@dataclass
class Decision:
    """What one evaluation decided for one rule and scope (``lumina alerts test`` prints these)."""

    project_id: str
    rule: str
    scope: dict[str, str]
    verdict: AlertVerdict
    action: Action
    alert: Alert | None = None
    """The notification sent (or, in a dry run, that would be sent)."""
    sinks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "rule": self.rule,
            "scope": self.scope,
            "firing": self.verdict.firing,
            "value": self.verdict.value,
            "threshold": self.verdict.threshold,
            "baseline": self.verdict.baseline,
            "summary": self.verdict.summary,
            "action": self.action,
            "notification": self.alert.to_dict() if self.alert else None,
            "sinks": self.sinks,
        }


def _time(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / NS, UTC)


def history_windows(rule: AlertRuleSettings, start: int, end: int) -> list[tuple[int, int]]:
    """The baseline windows of a window, oldest first; calendar windows (day, month) have none."""
    if not isinstance(rule.window, int) or rule.baseline == "none":
        return []
    step = end - start if rule.baseline == "previous" else 86400 * NS
    return [(start - k * step, end - k * step) for k in range(rule.baseline_windows, 0, -1)]


class AlertEngine:
    """Evaluates the rules and keeps the alerts' state; :meth:`run` is its scheduled task."""

    def __init__(
        self, engine: AsyncEngine, settings: AlertSettings, kinds: RuleKinds, on_notify: asyncio.Event
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.kinds = kinds
        self.on_notify = on_notify
        self.config_rules = [kinds.activate(rule, "config") for rule in settings.rules]
        self.stored_rules: dict[str, list[ActiveRule]] = {}
        self.immediate: list[ActiveRule] = []
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    # -- rules ---------------------------------------------------------------------------------

    async def load_rules(self) -> None:
        """Read the rules stored through the API (skipping, loudly, any that no longer validate)."""
        stored: dict[str, list[ActiveRule]] = {}
        for project_id, rule in await store.stored_rules(self.engine):
            problems = self.kinds.check(rule)
            if problems:  # e.g. the plugin of its kind is no longer installed
                log.warning("alert rule %s/%s is skipped: %s", project_id, rule.name, problems)
                continue
            stored.setdefault(project_id, []).append(self.kinds.activate(rule, "api"))
        self.stored_rules = stored
        self.kinds.forget()
        self.immediate = [
            r
            for r in [*self.config_rules, *(r for rules in stored.values() for r in rules)]
            if r.settings.enabled and is_immediate(self.kinds.kind("", r, None, None))
        ]

    def rules_of(self, project_id: str) -> list[ActiveRule]:
        """The rules that watch ``project_id``: ``lumina.toml``'s, then the project's stored ones."""
        return [
            *(r for r in self.config_rules if not r.settings.projects or project_id in r.settings.projects),
            *self.stored_rules.get(project_id, []),
        ]

    def defined_in_config(self, project_id: str, name: str) -> bool:
        """Whether ``lumina.toml`` defines a rule of this name for the project (read-only elsewhere)."""
        return any(r.name == name and r.source == "config" for r in self.rules_of(project_id))

    async def save_rule(self, project_id: str, rule: AlertRuleSettings, *, create: bool) -> bool:
        """Store a rule made or edited through the API or the dashboard and run it from now on. ``False``
        when creating a name already taken (``lumina.toml``'s included), or replacing one not stored."""
        if create and self.defined_in_config(project_id, rule.name):
            return False
        if not await store.save_rule(self.engine, project_id, rule, create=create):
            return False
        await self.load_rules()
        return True

    async def delete_rule(self, project_id: str, name: str) -> bool:
        """Delete a stored rule; its open alerts resolve at the next evaluation."""
        deleted = await store.delete_rule(self.engine, project_id, name)
        await self.load_rules()
        return deleted

    async def listed_rules(self, project_id: str) -> list[tuple[AlertRuleSettings, str]]:
        """What a project's people see as its rules, with their source: ``lumina.toml``'s (``config``),
        then those stored through the API (``api``) as stored now, running or not."""
        config = [(r.settings, r.source) for r in self.rules_of(project_id) if r.source == "config"]
        return config + [(rule, "api") for _, rule in await store.stored_rules(self.engine, project_id)]

    # -- evaluation ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate every ``alerts.interval_seconds`` until cancelled (rules are re-read each time, so
        changes made through another process's API apply too). Of several processes sharing a PostgreSQL
        database, only the one holding the advisory lock evaluates, so no alert is raised twice."""
        leader = JobLock(self.engine, "alert-evaluation")  # one process evaluates; the others stand by
        try:
            while True:
                await asyncio.sleep(self.settings.interval_seconds)
                try:
                    await self.load_rules()
                    if await leader.held():
                        await self.evaluate()
                except Exception:
                    log.exception("alert evaluation failed")
        finally:
            await leader.release()

    async def evaluate(
        self,
        now_ns: int | None = None,
        *,
        rule: str | None = None,
        project_id: str | None = None,
        dry_run: bool = False,
    ) -> list[Decision]:
        """Judge every enabled rule (or only ``rule``) for every project (or ``project_id``) now."""
        now = now_ns if now_ns is not None else time.time_ns()
        reader = WindowReader(self.engine)
        projects = [project_id] if project_id else [p["id"] for p in await list_projects(self.engine)]
        decisions: list[Decision] = []
        async with self._lock:
            for project in projects:
                open_alerts = await self._open_alerts(project)
                for active in self.rules_of(project):
                    if (rule is None and not active.settings.enabled) or (rule is not None and active.name != rule):
                        continue
                    mine = open_alerts.pop(active.name, {})
                    decisions += await self._evaluate_rule(reader, project, active, mine, now, dry_run)
                if rule is None:  # what is left are alerts of rules deleted or disabled since they fired
                    decisions += await self._retire(project, open_alerts, now, dry_run)
        return decisions

    async def _retire(
        self, project_id: str, orphans: dict[str, dict[str, dict[str, Any]]], now: int, dry_run: bool
    ) -> list[Decision]:
        decisions = []
        summary = "resolved: its rule was deleted or disabled"
        for rule, alerts in orphans.items():
            for alert in alerts.values():
                decision = Decision(project_id, rule, alert["scope"], AlertVerdict(None, summary=summary), "resolve")
                if not dry_run:
                    async with writing(self.engine) as conn:
                        decision.alert = await self._close(conn, alert, summary, now)
                    self.on_notify.set()
                decisions.append(decision)
        return decisions

    async def _evaluate_rule(
        self,
        reader: WindowReader,
        project_id: str,
        rule: ActiveRule,
        open_alerts: dict[str, dict[str, Any]],
        now: int,
        dry_run: bool,
    ) -> list[Decision]:
        spec = rule.settings
        start, end = spec.window_range(now)
        measures = self.kinds.kind(project_id, rule, None, None).measures

        def query(low: int, high: int) -> WindowQuery:
            where = tuple(sorted(spec.where.conditions().items()))
            return WindowQuery(project_id, low, high, tuple(spec.group_by), where, frozenset(measures))

        current = await reader.stats(query(start, end))
        history = [await reader.stats(query(low, high)) for low, high in history_windows(spec, start, end)]
        scopes: dict[str, tuple[dict[str, str], Scope]] = {}
        for values in current:
            scope = dict(zip(spec.group_by, values, strict=True))
            scopes[dedup_key(project_id, rule.name, scope)] = (scope, values)
        for key, row in open_alerts.items():
            scopes.setdefault(key, (row["scope"], tuple(row["scope"].get(d, "") for d in spec.group_by)))
        decisions = []
        for key, (scope, values) in scopes.items():
            empty = WindowStats(start, end)
            service, model = scope_service_model(spec, scope)
            kind = self.kinds.kind(project_id, rule, service, model)
            verdict = kind.judge(current.get(values, empty), [h.get(values, empty) for h in history])
            decisions.append(
                await self._transition(project_id, rule, scope, key, verdict, open_alerts.get(key), now, dry_run)
            )
        return decisions

    async def _open_alerts(self, project_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """The project's open alerts by rule and dedup key."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(alerts_table).where(_a.project_id == project_id, _a.state.in_(OPEN)))
            by_rule: dict[str, dict[str, dict[str, Any]]] = {}
            for row in rows.mappings():
                by_rule.setdefault(row["rule"], {})[row["dedup_key"]] = dict(row)
            return by_rule

    def _thresholds(self, project_id: str, rule: ActiveRule, scope: dict[str, str]) -> AlertThresholds:
        kind = self.kinds.kind(project_id, rule, *scope_service_model(rule.settings, scope))
        config = getattr(kind, "config", None)
        return config if isinstance(config, AlertThresholds) else AlertThresholds()

    async def _transition(
        self,
        project_id: str,
        rule: ActiveRule,
        scope: dict[str, str],
        key: str,
        verdict: AlertVerdict,
        alert: dict[str, Any] | None,
        now: int,
        dry_run: bool,
    ) -> Decision:
        limits = self._thresholds(project_id, rule, scope)
        decision = Decision(project_id, rule.name, scope, verdict, "none")
        if verdict.firing and alert is None:
            resolved = await self._last_resolved(key)
            if resolved is not None and now - resolved < limits.cooldown_seconds * NS:
                decision.action = "cooldown"
                return decision
            decision.action = "fire"
        elif verdict.firing and alert is not None:
            due = limits.renotify_seconds and now - alert["notified_unix_nano"] >= limits.renotify_seconds * NS
            decision.action = "repeat" if alert["state"] == "firing" and due else "keep"
        elif alert is not None and (verdict.firing is False or limits.no_data == "resolve"):
            decision.action = "resolve"
        elif alert is not None:
            decision.action = "keep"
        if decision.action == "none":
            return decision
        decision.sinks = rule_sinks(rule.settings, self.settings)
        if dry_run:
            if decision.action in ("fire", "repeat", "resolve"):
                event = {"fire": "firing", "repeat": "repeat", "resolve": "resolved"}[decision.action]
                row = alert or self._new_alert(project_id, rule, scope, key, verdict, limits, now)
                decision.alert = self._notification({**row, "id": row.get("id") or 0}, event, 0, verdict, now)
            return decision
        try:
            async with writing(self.engine) as conn:
                decision.alert = await self._write(conn, decision, rule, key, verdict, limits, alert, now)
        except IntegrityError:  # another process raised this scope's alert a moment ago
            decision.action, decision.alert = "keep", None
        if decision.alert is not None:
            self.on_notify.set()
        return decision

    def _new_alert(
        self,
        project_id: str,
        rule: ActiveRule,
        scope: dict[str, str],
        key: str,
        verdict: AlertVerdict,
        limits: AlertThresholds,
        now: int,
    ) -> dict[str, Any]:
        return {
            "project_id": project_id,
            "rule": rule.name,
            "kind": rule.settings.kind,
            "dedup_key": key,
            "scope": scope,
            "rule_spec": rule.settings.model_dump(mode="json"),
            "state": "firing",
            "severity": limits.severity,
            "summary": verdict.summary,
            "value": verdict.value,
            "threshold": verdict.threshold,
            "baseline": verdict.baseline,
            "started_unix_nano": now,
            "evaluated_unix_nano": now,
            "notified_unix_nano": now,
        }

    async def _write(
        self,
        conn: AsyncConnection,
        decision: Decision,
        rule: ActiveRule,
        key: str,
        verdict: AlertVerdict,
        limits: AlertThresholds,
        alert: dict[str, Any] | None,
        now: int,
    ) -> Alert | None:
        measured = {"value": verdict.value, "threshold": verdict.threshold, "baseline": verdict.baseline}
        if decision.action == "fire":
            row = self._new_alert(decision.project_id, rule, decision.scope, key, verdict, limits, now)
            row["id"] = (await conn.execute(sa.insert(alerts_table).values(row).returning(_a.id))).scalar_one()
            return await self._notify(conn, row, "firing", verdict, now, decision.sinks)
        assert alert is not None
        changes: dict[str, Any] = {"evaluated_unix_nano": now}
        if verdict.firing is not None:  # no data says nothing about the value
            changes.update(measured, summary=verdict.summary)
        if decision.action == "repeat":
            changes["notified_unix_nano"] = now
        if decision.action == "resolve":
            changes.update(state="resolved", resolved_unix_nano=now)
        await conn.execute(sa.update(alerts_table).where(_a.id == alert["id"]).values(changes))
        if decision.action == "keep":
            return None
        event = "repeat" if decision.action == "repeat" else "resolved"
        return await self._notify(conn, {**alert, **changes}, event, verdict, now, decision.sinks)

    async def _notify(
        self,
        conn: AsyncConnection,
        alert: dict[str, Any],
        event: str,
        verdict: AlertVerdict,
        now: int,
        sinks: Sequence[str],
        actor: str | None = None,
    ) -> Alert:
        """Record the event and queue its notification to every sink, in the caller's transaction."""
        summary = verdict.summary or alert["summary"]
        event_id = await _record_event(conn, alert["id"], event, now, summary, verdict.value, actor)
        notification = self._notification(alert, event, event_id, verdict, now)
        payload = notification.to_dict()
        if sinks:
            await conn.execute(
                sa.insert(alert_outbox_table),
                [
                    {
                        "event_id": event_id,
                        "alert_id": alert["id"],
                        "sink": sink,
                        "payload": payload,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_unix_nano": now,
                        "claimed_until_unix_nano": 0,
                    }
                    for sink in sinks
                ],
            )
        return notification

    def _notification(self, alert: dict[str, Any], event: str, event_id: int, verdict: AlertVerdict, now: int) -> Alert:
        base = self.settings.dashboard_url
        url = f"{base.rstrip('/')}/alerts/{alert['id']}?project={alert['project_id']}" if base else None
        return Alert(
            alert_id=alert["id"],
            event_id=event_id,
            event=event,  # type: ignore[arg-type]
            dedup_key=alert["dedup_key"],
            rule=alert["rule"],
            kind=alert["kind"],
            project_id=alert["project_id"],
            scope=dict(alert["scope"]),
            severity=alert["severity"],
            summary=verdict.summary or alert["summary"],
            value=verdict.value if verdict.value is not None else alert["value"],
            threshold=verdict.threshold if verdict.threshold is not None else alert["threshold"],
            baseline=verdict.baseline if verdict.baseline is not None else alert["baseline"],
            started_at=_time(alert["started_unix_nano"]),
            at=_time(now),
            url=url,
        )

    async def _last_resolved(self, key: str) -> int | None:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(sa.select(sa.func.max(_a.resolved_unix_nano)).where(_a.dedup_key == key))
            ).scalar_one()

    # -- single calls --------------------------------------------------------------------------

    def observe(self, project_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Check stored LLM calls against the immediate rules; alert at once on the ones that exceed them."""
        for rule in self.immediate:
            if rule.settings.projects and project_id not in rule.settings.projects:
                continue
            hits = self._exceeding(project_id, rule, rows)
            if hits:
                task = asyncio.create_task(self._fire_now(project_id, rule, hits))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    def _exceeding(
        self, project_id: str, rule: ActiveRule, rows: Sequence[dict[str, Any]]
    ) -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
        spec = rule.settings
        where = spec.where.conditions()
        hits: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}
        for row in rows:
            if not row["is_llm"] or any(_row_value(row, d) != v for d, v in where.items()):
                continue
            scope = {d: _row_value(row, d) for d in spec.group_by}
            kind = self.kinds.kind(project_id, rule, *scope_service_model(spec, scope))
            if kind.exceeds(row["cost_usd"], row["latency_ms"]):  # type: ignore[attr-defined]
                hits.setdefault(dedup_key(project_id, rule.name, scope), (scope, []))[1].append(row)
        return hits

    async def _fire_now(
        self, project_id: str, rule: ActiveRule, hits: dict[str, tuple[dict[str, str], list[dict[str, Any]]]]
    ) -> None:
        now = time.time_ns()
        try:
            async with self._lock:
                open_alerts = (await self._open_alerts(project_id)).get(rule.name, {})
                for key, (scope, rows) in hits.items():
                    costs = [r["cost_usd"] or 0.0 for r in rows]
                    stats = WindowStats(now, now, calls=len(rows), cost_usd=sum(costs), max_call_cost_usd=max(costs))
                    kind = self.kinds.kind(project_id, rule, *scope_service_model(rule.settings, scope))
                    verdict = kind.judge(stats, [])
                    await self._transition(project_id, rule, scope, key, verdict, open_alerts.get(key), now, False)
        except Exception:
            log.exception("alerting on single calls failed")

    # -- people --------------------------------------------------------------------------------

    async def acknowledge(self, project_id: str, alert_id: int, actor: str) -> dict[str, Any] | None:
        """Acknowledge an open alert: it stays open but is not re-notified. ``None`` if no such alert."""
        now = time.time_ns()
        async with writing(self.engine) as conn:
            alert = await _open_alert(conn, project_id, alert_id)
            if alert is None:
                return None
            if alert["state"] == "firing":
                changes = {"state": "acknowledged", "acknowledged_unix_nano": now, "acknowledged_by": actor}
                await conn.execute(sa.update(alerts_table).where(_a.id == alert_id).values(changes))
                await _record_event(conn, alert_id, "acknowledged", now, f"by {actor}", None, actor)
                alert.update(changes)
        return alert

    async def resolve(self, project_id: str, alert_id: int, actor: str) -> dict[str, Any] | None:
        """Resolve an open alert by hand and notify its sinks. ``None`` if no such open alert."""
        now = time.time_ns()
        async with writing(self.engine) as conn:
            alert = await _open_alert(conn, project_id, alert_id)
            if alert is None:
                return None
            await self._close(conn, alert, f"resolved by {actor}", now, actor)
        self.on_notify.set()
        return alert

    async def _close(
        self, conn: AsyncConnection, alert: dict[str, Any], summary: str, now: int, actor: str | None = None
    ) -> Alert:
        """Resolve an alert outside the rule's judgement (by hand, or its rule is gone) and tell its sinks."""
        changes = {"state": "resolved", "resolved_unix_nano": now}
        await conn.execute(sa.update(alerts_table).where(_a.id == alert["id"]).values(changes))
        alert.update(changes)
        sinks = rule_sinks(AlertRuleSettings.model_validate(alert["rule_spec"]), self.settings)
        return await self._notify(conn, alert, "resolved", AlertVerdict(False, summary=summary), now, sinks, actor)

    # -- charts --------------------------------------------------------------------------------

    async def series(self, alert: dict[str, Any], now_ns: int | None = None, points: int = 36) -> dict[str, Any]:
        """The rule's metric for the alert's scope, window by window, from before it started until it
        resolved (or now): what the dashboard charts around an alert."""
        spec = AlertRuleSettings.model_validate(alert["rule_spec"])
        factory = self.kinds.host.factories.get("alert_rule", {}).get(spec.kind)
        if factory is None:
            return {"x": [], "value": [], "threshold": alert["threshold"]}
        rule = ActiveRule(spec, "chart", factory)
        kind = self.kinds.kind(alert["project_id"], rule, *scope_service_model(spec, alert["scope"]))
        step = spec.window * NS if isinstance(spec.window, int) else 3600 * NS
        now = now_ns if now_ns is not None else time.time_ns()
        last = min(now, (alert["resolved_unix_nano"] or now) + 4 * step)
        first = max(alert["started_unix_nano"] - (points - 8) * step, last - points * step)
        reader = WindowReader(self.engine)
        where = tuple(sorted({**spec.where.conditions(), **alert["scope"]}.items()))
        xs, values = [], []
        for end in range(first + step, last + 1, step):
            start = spec.window_range(end)[0]
            query = WindowQuery(alert["project_id"], start, end, (), where, frozenset(kind.measures))
            stats = (await reader.stats(query)).get((), WindowStats(start, end))
            xs.append(end // NS)
            values.append(kind.metric(stats))
        return {"x": xs, "value": values, "threshold": alert["threshold"]}


async def _record_event(
    conn: AsyncConnection, alert_id: int, event: str, now: int, summary: str, value: float | None, actor: str | None
) -> int:
    """Add an event to an alert's history; returns its id."""
    values = {"alert_id": alert_id, "event": event, "at_unix_nano": now, "summary": summary, "value": value}
    inserted = await conn.execute(sa.insert(alert_events_table).values(**values, actor=actor).returning(_e.id))
    return int(inserted.scalar_one())


def _row_value(row: dict[str, Any], dimension: str) -> str:
    """A stored call's value of a scope dimension, as :mod:`stats` reads it from ``spans``."""
    if dimension.startswith("attribute:"):
        key = dimension.removeprefix("attribute:")
        value = row["attributes"].get(key, row["resource_attributes"].get(key))
    else:
        value = row[SPAN_COLUMNS[dimension]]
    if value is None:
        return NONE
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def _open_alert(conn: AsyncConnection, project_id: str, alert_id: int) -> dict[str, Any] | None:
    row = (
        (
            await conn.execute(
                sa.select(alerts_table).where(_a.id == alert_id, _a.project_id == project_id, _a.state.in_(OPEN))
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None
