"""An alert sink that sends Lumina alerts to PagerDuty's Events API v2 (trigger and resolve by dedup key)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from pydantic import Field, SecretStr

from lumina_core import Alert, AlertRejected, ComponentConfig, ComponentContext, ComponentFactory, LuminaError, hookimpl

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
SEVERITIES = {"info": "info", "warning": "warning", "critical": "critical"}


class PagerDutyError(LuminaError):
    """PagerDuty did not accept an event (refused it, throttled, failed, or could not be reached)."""


class PagerDutyRejected(PagerDutyError, AlertRejected):
    """PagerDuty found the event invalid (HTTP 400): sending it again cannot help, so Lumina stops."""


class PagerDutyConfig(ComponentConfig):
    routing_key: SecretStr = Field(description="the integration key of an Events API v2 integration")
    base_url: str = Field("https://events.pagerduty.com", description="events are POSTed to {base_url}/v2/enqueue")
    source: str = Field("lumina", description="payload.source: the system PagerDuty shows as affected")
    timeout_seconds: float = Field(10, gt=0, description="how long one request may take")


def dedup_key(alert: Alert) -> str:
    """The alert's dedup key, or (when longer than PagerDuty allows) a stable shortened form of it."""
    if len(alert.dedup_key) <= MAX_DEDUP_KEY:
        return alert.dedup_key
    digest = hashlib.sha256(alert.dedup_key.encode()).hexdigest()
    return f"{alert.dedup_key[: MAX_DEDUP_KEY - len(digest) - 1]}:{digest}"


def event_body(alert: Alert, routing_key: str, source: str) -> dict[str, Any]:
    """The Events API v2 request for ``alert``: ``resolve`` for a resolved alert, else ``trigger``."""
    body: dict[str, Any] = {"routing_key": routing_key, "dedup_key": dedup_key(alert)}
    if alert.event == "resolved":
        return {**body, "event_action": "resolve"}
    payload: dict[str, Any] = {
        "summary": ": ".join(filter(None, [alert.title(), alert.summary]))[:MAX_SUMMARY],
        "source": source,
        # an unknown severity still pages: PagerDuty would reject the whole event otherwise
        "severity": SEVERITIES.get(alert.severity, "warning"),
        "timestamp": alert.at.isoformat(),
        "group": alert.project_id,
        "class": alert.kind,
        "custom_details": {
            "rule": alert.rule,
            "event": alert.event,
            "event_id": alert.event_id,
            "alert_id": alert.alert_id,
            "scope": alert.scope,
            "value": alert.value,
            "threshold": alert.threshold,
            "baseline": alert.baseline,
            "started_at": alert.started_at.isoformat(),
        },
    }
    if "service" in alert.scope:
        payload["component"] = alert.scope["service"]
    body |= {"event_action": "trigger", "payload": payload, "client": "Lumina"}
    if alert.url:
        body |= {"client_url": alert.url, "links": [{"href": alert.url, "text": "Open in Lumina"}]}
    return body


class PagerDutySink:
    """Posts each alert as one Events API v2 event; raises on any failure so Lumina's outbox retries it."""

    def __init__(self, config: PagerDutyConfig) -> None:
        self.config = config
        self.url = f"{config.base_url.rstrip('/')}/v2/enqueue"

    async def send(self, alert: Alert) -> None:
        """Send one trigger or resolve event; raise :class:`PagerDutyError` unless PagerDuty accepts it."""
        body = event_body(alert, self.config.routing_key.get_secret_value(), self.config.source)
        try:
            async with httpx.AsyncClient(timeout=self.config.timeout_seconds) as client:
                response = await client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise PagerDutyError(f"cannot reach PagerDuty at {self.url}: {exc!r}") from exc
        if not response.is_success:
            error = PagerDutyRejected if response.status_code == 400 else PagerDutyError
            raise error(
                f"PagerDuty refused {body['event_action']} of alert {alert.alert_id} (event {alert.event_id}): "
                f"HTTP {response.status_code} {response.text[:500]}"
            )


def _create(ctx: ComponentContext, config: PagerDutyConfig) -> PagerDutySink:
    return PagerDutySink(config)


@hookimpl
def lumina_register_alert_sinks() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="pagerduty",
            create=_create,
            config_model=PagerDutyConfig,
            description="Triggers and resolves PagerDuty alerts through the Events API v2.",
            stability="beta",
        )
    ]
