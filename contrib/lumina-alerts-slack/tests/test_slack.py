"""The Slack sink against a real webhook receiver on 127.0.0.1: message shape, failures, config, discovery."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import lumina_alerts_slack
import pytest
from lumina_alerts_slack import SlackConfig, SlackSink, SlackWebhookError
from pydantic import ValidationError

from lumina_core import Alert, AlertRejected, AlertSink, ComponentContext
from lumina_core.plugins import PluginHost
from lumina_core.testing.contracts import AlertSinkContract

STARTED = datetime(2025, 3, 4, 5, 6, tzinfo=UTC)


@dataclasses.dataclass
class Receiver:
    """A stand-in for Slack's webhook endpoint: records every POST and answers with ``status`` and ``body``."""

    url: str = ""
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0
    posts: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@pytest.fixture
def slack() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            post = {"path": self.path, "content_type": self.headers["Content-Type"], "json": json.loads(body)}
            receiver.posts.append(post)
            time.sleep(receiver.delay)
            self.send_response(receiver.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(receiver.body)))
            self.end_headers()
            self.wfile.write(receiver.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/services/T000/B000/secret-token"
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join()


def make_alert(**changes: Any) -> Alert:
    alert = Alert(
        alert_id=7,
        event_id=42,
        event="firing",
        dedup_key="cost-spike/service=checkout",
        rule="cost-spike",
        kind="cost_spike",
        project_id="shop",
        scope={"service": "checkout", "model": "gpt-4o"},
        severity="critical",
        summary="cost per call 0.42 USD is 3.1 times the baseline 0.135 USD",
        value=0.42,
        threshold=0.27,
        baseline=0.135,
        started_at=STARTED,
        at=STARTED,
        url="http://127.0.0.1:9/alerts/7",
    )
    return dataclasses.replace(alert, **changes)


def sink_for(slack: Receiver, **config: Any) -> SlackSink:
    return SlackSink(SlackConfig(webhook_url=slack.url, **config))


async def test_firing_alert_is_posted_as_header_summary_fields_context_and_button(slack: Receiver) -> None:
    await sink_for(slack).send(make_alert())

    (post,) = slack.posts
    assert post["path"] == "/services/T000/B000/secret-token"
    assert post["content_type"] == "application/json"
    message = post["json"]
    title = "[FIRING] cost-spike (service=checkout, model=gpt-4o)"
    assert message["text"] == f"🔥 {title}: cost per call 0.42 USD is 3.1 times the baseline 0.135 USD"
    header, summary, fields, context, actions = message["blocks"]
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "context", "actions"]
    assert header["text"] == {"type": "plain_text", "text": f"🔥 {title}"}
    assert summary["text"] == {"type": "mrkdwn", "text": "cost per call 0.42 USD is 3.1 times the baseline 0.135 USD"}
    started = f"<!date^{int(STARTED.timestamp())}^{{date_short_pretty}} {{time}}|2025-03-04 05:06 UTC>"
    assert [f["text"] for f in fields["fields"]] == [
        "*Severity*\ncritical",
        "*Scope*\nservice=checkout, model=gpt-4o",
        "*Value*\n0.42",
        "*Threshold*\n0.27",
        "*Baseline*\n0.135",
        f"*Started*\n{started}",
    ]
    assert [e["text"] for e in context["elements"]] == ["Project *shop*", "Dedup key `cost-spike/service=checkout`"]
    (button,) = actions["elements"]
    assert button["type"] == "button"
    assert button["url"] == "http://127.0.0.1:9/alerts/7"
    assert button["text"]["text"] == "Open in Lumina"
    assert "channel" not in message and "username" not in message


async def test_resolved_alert_has_a_check_mark_and_resolve_time_and_no_button_without_url(slack: Receiver) -> None:
    resolved_at = datetime(2025, 3, 4, 6, 0, tzinfo=UTC)
    alert = make_alert(event="resolved", at=resolved_at, url=None, scope={}, value=None, baseline=None)
    await sink_for(slack).send(alert)

    message = slack.posts[0]["json"]
    assert message["text"].startswith("✅ [RESOLVED] cost-spike (all): ")
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "context"]
    assert message["blocks"][0]["text"]["text"] == "✅ [RESOLVED] cost-spike (all)"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in message["blocks"][2]["fields"]}
    assert fields["*Scope*"] == "all"
    assert fields["*Value*"] == fields["*Baseline*"] == "—"
    assert fields["*Resolved*"].startswith(f"<!date^{int(resolved_at.timestamp())}^")


async def test_repeat_alert_has_its_own_marker(slack: Receiver) -> None:
    await sink_for(slack).send(make_alert(event="repeat"))
    assert slack.posts[0]["json"]["blocks"][0]["text"]["text"].startswith("🔁 [REPEAT] cost-spike")


async def test_mention_goes_before_new_alerts_of_the_chosen_severities_only(slack: Receiver) -> None:
    sink = sink_for(slack, mention="<!here>", channel="#llm-alerts", username="Lumina")
    await sink.send(make_alert())
    await sink.send(make_alert(event="repeat"))
    await sink.send(make_alert(severity="warning"))
    await sink.send(make_alert(event="resolved"))

    first, *others = [p["json"] for p in slack.posts]
    assert first["blocks"][1]["text"]["text"].startswith("<!here> cost per call")
    assert first["text"].startswith("<!here> 🔥 [FIRING]")
    assert first["channel"] == "#llm-alerts" and first["username"] == "Lumina"
    assert not any("<!here>" in json.dumps(message) for message in others)


async def test_markup_in_alert_text_is_escaped_so_it_cannot_ping_or_link(slack: Receiver) -> None:
    alert = make_alert(summary="<!channel> spend > 5 & rising <http://evil|click>", scope={"user_id": "<@U1>"})
    await sink_for(slack).send(alert)

    message = slack.posts[0]["json"]
    escaped = "&lt;!channel&gt; spend &gt; 5 &amp; rising &lt;http://evil|click&gt;"
    assert message["blocks"][1]["text"]["text"] == escaped
    assert message["blocks"][2]["fields"][1]["text"] == "*Scope*\nuser_id=&lt;@U1&gt;"
    assert "<!channel>" not in json.dumps(message)
    assert message["blocks"][0]["text"]["text"] == "🔥 [FIRING] cost-spike (user_id=<@U1>)"  # plain text is literal


async def test_long_texts_are_cut_to_slack_limits(slack: Receiver) -> None:
    alert = make_alert(rule="r" * 400, summary="a&b " * 2000, scope={"service": "s" * 3000})
    await sink_for(slack, mention="<!here>").send(alert)

    message = slack.posts[0]["json"]
    header, summary, fields = message["blocks"][:3]
    assert len(header["text"]["text"]) <= 150 and header["text"]["text"].endswith("…")
    assert len(summary["text"]["text"]) <= 3000 and summary["text"]["text"].startswith("<!here> a&amp;b")
    assert summary["text"]["text"].endswith("…")
    assert "&…" not in summary["text"]["text"] and "&am…" not in summary["text"]["text"]
    assert all(len(f["text"]) <= 2000 for f in fields["fields"])
    assert len(message["text"]) <= 3000


@pytest.mark.parametrize(("status", "body"), [(500, b"internal error"), (404, b"no_service")])
async def test_non_2xx_reply_raises_with_status_and_body_and_is_not_retried(
    slack: Receiver, status: int, body: bytes
) -> None:
    slack.status, slack.body = status, body
    with pytest.raises(SlackWebhookError, match=f"replied {status}: {body.decode()}") as caught:
        await sink_for(slack).send(make_alert())
    assert caught.value.status == status
    assert isinstance(caught.value, AlertRejected) == (status == 404)  # a removed webhook: no retry helps
    assert len(slack.posts) == 1  # Lumina's outbox retries, not the sink


async def test_slow_webhook_raises_after_the_timeout(slack: Receiver) -> None:
    slack.delay = 1.0
    started = time.monotonic()
    with pytest.raises(SlackWebhookError, match="could not post to the Slack webhook: ReadTimeout"):
        await sink_for(slack, timeout_seconds=0.2).send(make_alert())
    assert time.monotonic() - started < 0.9


async def test_unreachable_webhook_raises_without_leaking_the_url() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/secret-token"
    with pytest.raises(SlackWebhookError, match="could not post") as caught:
        await SlackSink(SlackConfig(webhook_url=url)).send(make_alert())
    assert caught.value.status is None
    assert "secret-token" not in str(caught.value)


def test_config_needs_an_http_webhook_url_and_keeps_it_out_of_reprs() -> None:
    for bad in [{}, {"webhook_url": "hooks.slack.com/services/x"}, {"webhook_url": "https://x", "colour": "red"}]:
        with pytest.raises(ValidationError):
            SlackConfig.model_validate(bad)
    config = SlackConfig.model_validate({"webhook_url": "https://hooks.slack.com/services/T/B/secret-token"})
    assert config.timeout_seconds == 10 and config.mention is None
    assert "secret-token" not in repr(config) and "secret-token" not in config.model_dump_json()


async def test_discovered_through_its_entry_point_and_built_by_its_factory(slack: Receiver) -> None:
    host = PluginHost()
    assert "slack" in host.factories["alert_sink"]
    (info,) = [i for i in host.describe() if i.types.get("alert_sink") == ["slack"]]
    assert info.distribution == "lumina-alerts-slack"

    factory = host.factories["alert_sink"]["slack"]
    sink = factory.create(ComponentContext(name="team", data_dir="."), factory.config_model(webhook_url=slack.url))
    assert isinstance(sink, AlertSink)
    await sink.send(make_alert())
    assert slack.posts[0]["json"]["blocks"][0]["type"] == "header"


class TestSlackSinkContract(AlertSinkContract):
    type_name = "slack"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_alerts_slack

    @pytest.fixture
    def sink(self, slack: Receiver) -> SlackSink:
        return sink_for(slack)

    @pytest.fixture
    def failing_sink(self, slack: Receiver) -> SlackSink:
        slack.status = 404
        return sink_for(slack)
