"""The built-in alert sinks: ``log`` (Lumina's own log) and ``webhook`` (signed JSON over HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import httpx
import orjson
from pydantic import Field

from lumina_core import Alert, ComponentConfig, ComponentFactory, hookimpl

log = logging.getLogger("lumina.alerts")
LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class LogSink:
    """Writes each alert as one line to the ``lumina.alerts`` logger, at its severity."""

    async def send(self, alert: Alert) -> None:
        level = logging.INFO if alert.event == "resolved" else LEVELS.get(alert.severity, logging.WARNING)
        log.log(level, "%s: %s [%s]", alert.title(), alert.summary, alert.dedup_key)


class WebhookConfig(ComponentConfig):
    url: str = Field(description="where the alert's JSON is POSTed")
    secret: str | None = Field(None, description="signs each request: X-Lumina-Signature")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"`` with the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSink:
    """POSTs ``alert.to_dict()`` as JSON. With a secret, the receiver checks ``X-Lumina-Signature``
    against :func:`signature` of ``X-Lumina-Timestamp`` and the raw body (and refuses old timestamps)."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    async def send(self, alert: Alert) -> None:
        body = orjson.dumps(alert.to_dict())
        timestamp = str(int(time.time()))
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "User-Agent": "lumina-alerts",
            "X-Lumina-Event": alert.event,
            "X-Lumina-Event-Id": str(alert.event_id),
            "X-Lumina-Timestamp": timestamp,
        }
        if self.config.secret:
            headers["X-Lumina-Signature"] = signature(self.config.secret, timestamp, body)
        async with httpx.AsyncClient(timeout=None) as client:  # Lumina times the send out
            response = await client.post(self.config.url, content=body, headers=headers)
        if not response.is_success:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")


@hookimpl
def lumina_register_alert_sinks() -> list[ComponentFactory]:
    return [
        ComponentFactory("log", lambda ctx, config: LogSink(), ComponentConfig, LogSink.__doc__ or ""),
        ComponentFactory("webhook", lambda ctx, config: WebhookSink(config), WebhookConfig, "Signed JSON over HTTP."),
    ]
