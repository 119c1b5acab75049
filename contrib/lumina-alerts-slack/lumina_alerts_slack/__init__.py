"""An alert sink that posts Lumina alerts to a Slack incoming webhook as Block Kit messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from lumina_core import Alert, AlertRejected, ComponentConfig, ComponentContext, ComponentFactory, hookimpl

# Slack refuses a whole message when one block is over its limit, and the outbox would retry it forever.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
BODY_SNIPPET = 200

EVENT_EMOJI = {"firing": "🔥", "repeat": "🔁", "resolved": "✅"}


class SlackConfig(ComponentConfig):
    webhook_url: SecretStr = Field(description="the incoming webhook URL: a secret, since anyone with it can post")
    channel: str | None = Field(None, description="channel override (legacy webhooks only; app webhooks ignore it)")
    username: str | None = Field(None, description="sender name override (legacy webhooks only)")
    timeout_seconds: float = Field(10.0, gt=0, description="timeout of one POST to Slack")
    mention: str | None = Field(None, description='put before new alerts of mention_severities, e.g. "<!here>"')
    mention_severities: list[Literal["info", "warning", "critical"]] = Field(
        ["critical"], description="severities whose firing alerts carry the mention"
    )

    @field_validator("webhook_url")
    @classmethod
    def _is_http_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class SlackWebhookError(RuntimeError):
    """Slack did not take the message; ``status`` is its HTTP status, ``None`` when it was not reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SlackRejected(SlackWebhookError, AlertRejected):
    """Slack refused the message for good (a bad payload, a removed webhook, an archived channel): retrying
    cannot help, so Lumina stops."""


PERMANENT = {400, 403, 404, 410}


def _escape(text: str) -> str:
    """Slack's mrkdwn reads ``&``, ``<`` and ``>`` as markup (links, mentions), so alert text escapes them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str, limit: int) -> str:
    """``text`` escaped for mrkdwn and cut to ``limit`` characters, never ending in half an entity."""
    escaped = _escape(text)
    return escaped if len(escaped) <= limit else re.sub(r"&[a-z]*$", "", escaped[: limit - 1]) + "…"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _date(at: datetime) -> str:
    """A Slack date token: each reader sees it in their own time zone; clients without it show UTC."""
    fallback = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def slack_message(alert: Alert, config: SlackConfig) -> dict[str, Any]:
    """The webhook body for one alert: Block Kit ``blocks``, and ``text`` for notifications and old clients."""
    emoji = EVENT_EMOJI.get(alert.event, "🔔")
    mentioned = config.mention and alert.event == "firing" and alert.severity in config.mention_severities
    lead = f"{config.mention} " if mentioned else ""
    summary = alert.summary or "(no summary)"
    scope = ", ".join(f"{k}={v}" for k, v in alert.scope.items()) or "all"
    fields = [
        ("Severity", _escape(alert.severity)),
        ("Scope", _mrkdwn(scope, FIELD_LIMIT - len("*Scope*\n"))),
        ("Value", _number(alert.value)),
        ("Threshold", _number(alert.threshold)),
        ("Baseline", _number(alert.baseline)),
        ("Started", _date(alert.started_at)),
    ]
    if alert.event == "resolved":
        fields.append(("Resolved", _date(alert.at)))
    blocks: list[dict[str, Any]] = [
        # the emoji and its space take up to three of the header's characters (Slack counts UTF-16 units)
        {"type": "header", "text": {"type": "plain_text", "text": f"{emoji} {_clip(alert.title(), HEADER_LIMIT - 3)}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": lead + _mrkdwn(summary, SECTION_LIMIT - len(lead))}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in fields]},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Project *{_mrkdwn(alert.project_id, 200)}*"},
                {"type": "mrkdwn", "text": f"Dedup key `{_mrkdwn(alert.dedup_key, 500)}`"},
            ],
        },
    ]
    if alert.url:
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in Lumina"},
            "url": alert.url,
            "action_id": "lumina_open_alert",
        }
        blocks.append({"type": "actions", "elements": [button]})
    message: dict[str, Any] = {
        "text": lead + _mrkdwn(f"{emoji} {alert.title()}: {summary}", SECTION_LIMIT - len(lead)),
        "blocks": blocks,
    }
    if config.channel:
        message["channel"] = config.channel
    if config.username:
        message["username"] = config.username
    return message


class SlackSink:
    """Posts each alert to one Slack incoming webhook, once: Lumina's outbox retries a send that raised."""

    def __init__(self, config: SlackConfig) -> None:
        self.config = config

    async def send(self, alert: Alert) -> None:
        """Post ``alert``; raise :class:`SlackWebhookError` unless Slack answers 2xx."""
        try:
            async with httpx.AsyncClient(timeout=self.config.timeout_seconds) as client:
                response = await client.post(
                    self.config.webhook_url.get_secret_value(), json=slack_message(alert, self.config)
                )
        except httpx.HTTPError as exc:  # the message leaves out the URL: it is the secret
            raise SlackWebhookError(f"could not post to the Slack webhook: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            snippet = _clip(response.text.strip(), BODY_SNIPPET)
            error = SlackRejected if response.status_code in PERMANENT else SlackWebhookError
            raise error(f"Slack webhook replied {response.status_code}: {snippet}", response.status_code)


def _create(ctx: ComponentContext, config: SlackConfig) -> SlackSink:
    return SlackSink(config)


@hookimpl
def lumina_register_alert_sinks() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="slack",
            create=_create,
            config_model=SlackConfig,
            description="Posts alerts to a Slack incoming webhook as Block Kit messages.",
            stability="beta",
        )
    ]
