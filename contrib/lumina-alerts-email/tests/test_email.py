"""The email sink against a real aiosmtpd server on 127.0.0.1 with trustme certificates: delivery over
STARTTLS with login and over implicit TLS, every failure raised, threading headers, and discovery
through the entry point."""

from __future__ import annotations

import asyncio
import email
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import aiosmtplib
import lumina_alerts_email
import pydantic
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from lumina_alerts_email import EmailConfig, EmailSink, build_message

from lumina_core import Alert
from lumina_core.plugins import PluginHost
from lumina_core.testing.contracts import AlertSinkContract

USER, PASSWORD = "lumina", "s3cret"


class EphemeralController(Controller):
    """aiosmtpd's threaded controller on port 0: it learns the real port before its start-up probe."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Inbox:
    """An aiosmtpd handler that keeps delivered messages and refuses the addresses in ``refused``."""

    def __init__(self, refused: tuple[str, ...] = ()) -> None:
        self.refused = refused
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    """Accept one user and password (aiosmtpd hands them over as bytes)."""
    accepted = LoginPassword(USER.encode(), PASSWORD.encode())
    return AuthResult(success=auth_data == accepted, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def serve(ca: trustme.CA) -> Iterator[Callable[..., int]]:
    """Start an SMTP server for an ``Inbox`` with STARTTLS, implicit TLS or no TLS; returns its port."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_tls)
    controllers: list[Controller] = []

    def start(inbox: Inbox, tls: str = "starttls") -> int:
        # aiosmtpd counts only STARTTLS as TLS, so with implicit TLS it must be told AUTH is safe
        modes: dict[str, dict[str, Any]] = {
            "starttls": {"tls_context": server_tls, "require_starttls": True, "auth_require_tls": True},
            "tls": {"ssl_context": server_tls, "auth_require_tls": False},
            "plain": {"auth_require_tls": False},
        }
        controller = EphemeralController(inbox, hostname="127.0.0.1", port=0, authenticator=authenticate, **modes[tls])
        controller.start()
        controllers.append(controller)
        return controller.port

    yield start
    for controller in controllers:
        controller.stop()


def make_alert(event: str = "firing", event_id: int = 7, **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": 3,
        "event_id": event_id,
        "event": event,
        "dedup_key": "cost-spike|service=checkout",
        "rule": "cost-spike",
        "kind": "cost_spike",
        "project_id": "default",
        "scope": {"service": "caisse-café", "model": "gpt-4o"},
        "severity": "critical",
        "summary": "Cost per call 0.42 > 3x baseline <0.12> & rising",
        "value": 0.42,
        "threshold": 0.36,
        "baseline": 0.12,
        "started_at": datetime(2025, 5, 1, 9, 30, tzinfo=UTC),
        "at": datetime(2025, 5, 1, 9, 45, tzinfo=UTC),
        "url": "https://lumina.example.com/alerts/3?tab=events&x=<y>",
    }
    return Alert(**(fields | changes))


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def config(port: int, ca_file: str | None, **changes: Any) -> EmailConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": USER,
        "password": PASSWORD,
        "sender": "Lumina <alerts@example.com>",
        "to": ["Ops <ops@example.com>", "oncall@example.com"],
        "ca_file": ca_file,
        "timeout_seconds": 5,
    }
    return EmailConfig(**(values | changes))


async def test_starttls_with_login_delivers_subject_recipients_and_both_bodies(
    serve: Callable[..., int], ca_file: str
) -> None:
    inbox = Inbox()
    await EmailSink(config(serve(inbox), ca_file)).send(make_alert())

    ((rcpt_tos, message),) = inbox.messages
    assert rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert message["Subject"] == "[Lumina] [FIRING] cost-spike (service=caisse-café, model=gpt-4o)"
    assert message["From"] == "Lumina <alerts@example.com>"
    assert message["To"] == "Ops <ops@example.com>, oncall@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    text = body(message, "plain").replace("\r\n", "\n")
    assert text.startswith("Cost per call 0.42 > 3x baseline <0.12> & rising\n")
    for line in ("Severity:  critical", "Scope:     service=caisse-café, model=gpt-4o", "Value:     0.42",
                 "Threshold: 0.36", "Baseline:  0.12", "Started:   2025-05-01T09:30:00+00:00",
                 "Dedup key: cost-spike|service=checkout"):  # fmt: skip
        assert line in text
    page = body(message, "html")
    assert "Cost per call 0.42 &gt; 3x baseline &lt;0.12&gt; &amp; rising" in page
    assert 'href="https://lumina.example.com/alerts/3?tab=events&amp;x=&lt;y&gt;"' in page
    assert "<0.12>" not in page and "<y>" not in page


async def test_implicit_tls_delivers(serve: Callable[..., int], ca_file: str) -> None:
    inbox = Inbox()
    await EmailSink(config(serve(inbox, "tls"), ca_file, security="tls")).send(make_alert())
    assert len(inbox.messages) == 1


async def test_starttls_never_falls_back_to_plain_text(serve: Callable[..., int], ca_file: str) -> None:
    inbox = Inbox()
    with pytest.raises(aiosmtplib.SMTPException, match="TLS"):
        await EmailSink(config(serve(inbox, "plain"), ca_file)).send(make_alert())
    assert inbox.messages == []


async def test_wrong_password_raises_and_delivers_nothing(serve: Callable[..., int], ca_file: str) -> None:
    inbox = Inbox()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await EmailSink(config(serve(inbox), ca_file, password="wrong")).send(make_alert())
    assert inbox.messages == []


@pytest.mark.parametrize(
    "refused", [("ops@example.com", "oncall@example.com"), ("oncall@example.com",)], ids=["all", "one"]
)
async def test_refused_recipient_raises(serve: Callable[..., int], ca_file: str, refused: tuple[str, ...]) -> None:
    with pytest.raises(aiosmtplib.SMTPException, match=r"oncall@example\.com"):
        await EmailSink(config(serve(Inbox(refused)), ca_file)).send(make_alert())


async def test_server_certificate_from_an_untrusted_ca_raises(serve: Callable[..., int]) -> None:
    inbox = Inbox()
    with pytest.raises(ssl.SSLCertVerificationError):
        await EmailSink(config(serve(inbox), ca_file=None)).send(make_alert())
    assert inbox.messages == []


async def test_validate_certs_false_accepts_any_certificate(serve: Callable[..., int]) -> None:
    inbox = Inbox()
    await EmailSink(config(serve(inbox), ca_file=None, validate_certs=False)).send(make_alert())
    assert len(inbox.messages) == 1


def test_events_of_one_alert_share_a_thread_and_a_retry_repeats_its_message_id() -> None:
    settings = config(587, None)
    firing, repeat, resolved = (
        build_message(make_alert(event, event_id), settings)
        for event, event_id in [("firing", 7), ("repeat", 8), ("resolved", 9)]
    )
    assert firing["References"] == repeat["References"] == resolved["References"] == firing["In-Reply-To"]
    assert firing["References"].endswith("@example.com>")
    assert len({firing["Message-ID"], repeat["Message-ID"], resolved["Message-ID"]}) == 3
    assert build_message(make_alert("firing", 7), settings)["Message-ID"] == firing["Message-ID"]
    other = build_message(make_alert(dedup_key="cost-spike|service=search"), settings)
    assert other["References"] != firing["References"]


def test_line_breaks_in_scope_values_do_not_break_the_subject() -> None:
    alert = make_alert(scope={"user_id": "eve\r\nBcc: victim@example.com"})
    subject = build_message(alert, config(587, None))["Subject"]
    assert subject == "[Lumina] [FIRING] cost-spike (user_id=eve Bcc: victim@example.com)"


@pytest.mark.parametrize("changes", [{"password": None}, {"to": []}, {"security": "ssl"}, {"smtp_host": "x"}])
def test_invalid_config_is_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        config(587, None, **changes)


def test_discovered_through_its_entry_point() -> None:
    host = PluginHost()
    assert "email" in host.factories["alert_sink"]
    (info,) = [i for i in host.describe() if i.types.get("alert_sink") == ["email"]]
    assert info.distribution == "lumina-alerts-email"


class TestEmailSinkContract(AlertSinkContract):
    type_name = "email"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_alerts_email

    @pytest.fixture
    def sink(self, serve: Callable[..., int], ca_file: str) -> EmailSink:
        return EmailSink(config(serve(Inbox()), ca_file))

    @pytest.fixture
    def failing_sink(self, serve: Callable[..., int], ca_file: str) -> EmailSink:
        return EmailSink(config(serve(Inbox()), ca_file, password="wrong"))
