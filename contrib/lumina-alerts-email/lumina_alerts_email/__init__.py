"""The ``email`` alert sink: sends each Lumina alert as a plain-text and HTML e-mail over SMTP.

The connection is secured with STARTTLS (default) or implicit TLS, certificates are verified (against
``ca_file`` when given), and the sink logs in when a username is set. One connection per alert; any
failure raises, so Lumina's outbox retries it. Every event of one rule and scope carries the same
``References``, so mail clients thread firing, repeat and resolved messages together.
"""

from __future__ import annotations

import hashlib
import html
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib
from pydantic import Field, model_validator

from lumina_core import Alert, ComponentConfig, ComponentContext, ComponentFactory, hookimpl


class EmailConfig(ComponentConfig):
    host: str = Field(description="the SMTP server")
    port: int = Field(587, ge=1, le=65535, description="587 for STARTTLS, 465 for implicit TLS")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="STARTTLS (required, never falls back to plain text), implicit TLS, or none"
    )
    username: str | None = Field(None, description="log in as this user (with password)")
    password: str | None = Field(None, description="use ${env:SMTP_PASSWORD}")
    sender: str = Field(description="the From address, e.g. Lumina <alerts@example.com>")
    to: list[str] = Field(min_length=1, description="recipient addresses")
    subject_prefix: str = Field("[Lumina]", description="put before the alert's title in the subject")
    timeout_seconds: float = Field(10, gt=0, description="for connecting and for each SMTP command")
    ca_file: str | None = Field(None, description="a PEM CA bundle to trust instead of the system's")
    validate_certs: bool = Field(True, description="verify the server's certificate and host name")

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        return self


def tls_context(config: EmailConfig) -> ssl.SSLContext | None:
    """The client TLS context for ``config``, or ``None`` when the connection stays plain text."""
    if config.security == "none":
        return None
    context = ssl.create_default_context(cafile=config.ca_file)
    if not config.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _format(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def _rows(alert: Alert) -> list[tuple[str, str]]:
    """The labelled facts both bodies show; facts the alert does not have are left out."""
    rows = [
        ("Event", alert.event),
        ("Severity", alert.severity),
        ("Rule", f"{alert.rule} ({alert.kind})"),
        ("Project", alert.project_id),
        ("Scope", ", ".join(f"{k}={v}" for k, v in alert.scope.items()) or "all"),
        ("Value", _format(alert.value)),
        ("Threshold", _format(alert.threshold)),
        ("Baseline", _format(alert.baseline)),
        ("Started", alert.started_at.isoformat()),
        ("At", alert.at.isoformat()),
        ("Link", alert.url),
        ("Dedup key", alert.dedup_key),
    ]
    return [(label, value) for label, value in rows if value is not None]


def _text_body(alert: Alert, rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows) + 2
    return alert.summary + "\n\n" + "".join(f"{label + ':':<{width}}{value}\n" for label, value in rows)


def _html_body(alert: Alert, rows: list[tuple[str, str]]) -> str:
    cells = "".join(f'<tr><th align="left">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>' for k, v in rows)
    link = f'<p><a href="{html.escape(alert.url)}">Open in Lumina</a></p>' if alert.url else ""
    return (
        f"<html><body><h2>{html.escape(alert.title())}</h2><p>{html.escape(alert.summary)}</p>"
        f'<table cellpadding="4">{cells}</table>{link}</body></html>'
    )


def build_message(alert: Alert, config: EmailConfig) -> EmailMessage:
    """The e-mail for one alert: plain text with an HTML alternative, and threading headers.

    ``Message-ID`` depends only on the dedup key and the event id, so a retried send repeats it and
    clients can drop the duplicate; ``In-Reply-To``/``References`` name one thread per dedup key.
    """
    domain = parseaddr(config.sender)[1].rpartition("@")[2] or "lumina.invalid"
    thread = hashlib.sha256(alert.dedup_key.encode()).hexdigest()[:32]
    message = EmailMessage()
    # scope values come from span attributes: a line break in one must not make the header unsendable
    message["Subject"] = " ".join(f"{config.subject_prefix} {alert.title()}".split())
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Date"] = format_datetime(alert.at)
    message["Message-ID"] = f"<lumina.{thread}.{alert.event_id}@{domain}>"
    message["In-Reply-To"] = message["References"] = f"<lumina.{thread}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to alerts
    rows = _rows(alert)
    message.set_content(_text_body(alert, rows))
    message.add_alternative(_html_body(alert, rows), subtype="html")
    return message


class EmailSink:
    """Sends alerts through one SMTP server, one connection per alert."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.tls_context = tls_context(config)

    async def send(self, alert: Alert) -> None:
        """Deliver ``alert`` to every recipient; raise if the server refuses any of them."""
        config = self.config
        refused, _ = await aiosmtplib.send(
            build_message(alert, config),
            sender=parseaddr(config.sender)[1],
            recipients=[parseaddr(address)[1] for address in config.to],
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            timeout=config.timeout_seconds,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self.tls_context,
        )
        if refused:  # aiosmtplib raises only when every recipient is refused; one refused is a failure too
            details = "; ".join(f"{address}: {reply.code} {reply.message}" for address, reply in refused.items())
            raise aiosmtplib.SMTPException(f"recipients refused: {details}")


def _create(ctx: ComponentContext, config: EmailConfig) -> EmailSink:
    return EmailSink(config)


@hookimpl
def lumina_register_alert_sinks() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="email",
            create=_create,
            config_model=EmailConfig,
            description="E-mails alerts over SMTP (STARTTLS or TLS, with login).",
            stability="beta",
        )
    ]
