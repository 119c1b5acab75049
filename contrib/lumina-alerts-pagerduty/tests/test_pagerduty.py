"""The PagerDuty sink against a loopback Events API v2 receiver, and its discovery through the entry point."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import lumina_alerts_pagerduty
import pytest
from lumina_alerts_pagerduty import PagerDutyError, PagerDutySink, lumina_register_alert_sinks

from lumina_core import Alert, AlertRejected, ComponentContext
from lumina_core.plugins import PluginHost
from lumina_core.testing.contracts import AlertSinkContract

ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"

ALERT = Alert(
    alert_id=7,
    event_id=41,
    event="firing",
    dedup_key="lumina:default:cost-spike:service=checkout",
    rule="cost-spike",
    kind="cost_spike",
    project_id="default",
    scope={"service": "checkout", "model": "gpt-4o"},
    severity="critical",
    summary="cost per call 0.42 USD is 3.5x the 7-day mean 0.12 USD",
    value=0.42,
    threshold=0.36,
    baseline=0.12,
    started_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    at=datetime(2025, 3, 1, 12, 5, tzinfo=UTC),
    url="http://lumina.example/alerts/7",
)


@dataclass
class EventsReceiver:
    """A stand-in for events.pagerduty.com that records every request and answers with ``status``."""

    url: str = ""
    status: int = 202
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[EventsReceiver]:
    state = EventsReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, body))
            if state.status == 202:
                answer = {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}
            else:
                answer = {"status": "invalid event", "message": "Event object is invalid", "errors": ["throttled"]}
            data = json.dumps(answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def make_sink(base_url: str) -> PagerDutySink:
    """A sink built the way Lumina builds it: the factory validates a lumina.toml table, then creates."""
    (factory,) = lumina_register_alert_sinks()
    config = factory.config_model.model_validate({"routing_key": ROUTING_KEY, "base_url": base_url})
    return factory.create(ComponentContext(name="oncall", data_dir="."), config)


async def test_firing_alert_triggers_with_dedup_key_severity_details_and_link(receiver: EventsReceiver) -> None:
    await make_sink(receiver.url).send(ALERT)
    ((path, body),) = receiver.requests
    assert path == "/v2/enqueue"
    assert body["routing_key"] == ROUTING_KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == ALERT.dedup_key
    payload = body["payload"]
    assert payload["summary"] == f"{ALERT.title()}: {ALERT.summary}"
    assert payload["severity"] == "critical"
    assert payload["source"] == "lumina"
    assert payload["timestamp"] == "2025-03-01T12:05:00+00:00"
    assert (payload["component"], payload["group"], payload["class"]) == ("checkout", "default", "cost_spike")
    details = payload["custom_details"]
    assert (details["value"], details["threshold"], details["baseline"]) == (0.42, 0.36, 0.12)
    assert details["scope"] == ALERT.scope
    assert (details["rule"], details["event_id"]) == ("cost-spike", 41)
    assert body["links"] == [{"href": ALERT.url, "text": "Open in Lumina"}]
    assert body["client_url"] == ALERT.url


async def test_repeat_triggers_again_and_resolve_closes_the_same_dedup_key(receiver: EventsReceiver) -> None:
    sink = make_sink(receiver.url)
    await sink.send(replace(ALERT, event="repeat", event_id=42))
    await sink.send(replace(ALERT, event="resolved", event_id=43, url=None))
    (_, repeat), (_, resolve) = receiver.requests
    assert repeat["event_action"] == "trigger"
    assert resolve == {"routing_key": ROUTING_KEY, "dedup_key": ALERT.dedup_key, "event_action": "resolve"}


async def test_over_long_dedup_key_is_shortened_the_same_way_for_trigger_and_resolve(
    receiver: EventsReceiver,
) -> None:
    sink = make_sink(receiver.url)
    long_key = "lumina:default:latency:" + "attribute:tenant=" * 30
    await sink.send(replace(ALERT, dedup_key=long_key))
    await sink.send(replace(ALERT, dedup_key=long_key, event="resolved"))
    (_, trigger), (_, resolve) = receiver.requests
    assert len(trigger["dedup_key"]) <= 255
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["dedup_key"].startswith("lumina:default:latency:")


async def test_no_url_means_no_links(receiver: EventsReceiver) -> None:
    await make_sink(receiver.url).send(replace(ALERT, url=None, scope={}))
    ((_, body),) = receiver.requests
    assert "links" not in body and "client_url" not in body
    assert "component" not in body["payload"]


@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_refused_event_raises_so_the_outbox_retries(receiver: EventsReceiver, status: int) -> None:
    receiver.status = status
    with pytest.raises(PagerDutyError, match=f"HTTP {status}") as caught:
        await make_sink(receiver.url).send(ALERT)
    assert isinstance(caught.value, AlertRejected) == (status == 400)  # invalid: retrying cannot help
    assert len(receiver.requests) == 1  # the sink never retries by itself


async def test_unreachable_pagerduty_raises() -> None:
    with pytest.raises(PagerDutyError, match="cannot reach"):
        await make_sink("http://127.0.0.1:9").send(ALERT)


def test_routing_key_stays_out_of_the_config_repr() -> None:
    (factory,) = lumina_register_alert_sinks()
    assert ROUTING_KEY not in repr(factory.config_model.model_validate({"routing_key": ROUTING_KEY}))


def test_discovered_through_its_entry_point() -> None:
    host = PluginHost()
    assert "pagerduty" in host.factories["alert_sink"]
    (info,) = [i for i in host.describe() if i.types.get("alert_sink") == ["pagerduty"]]
    assert info.distribution == "lumina-alerts-pagerduty"


class TestPagerDutySinkContract(AlertSinkContract):
    type_name = "pagerduty"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_alerts_pagerduty

    @pytest.fixture
    def sink(self, receiver: EventsReceiver) -> PagerDutySink:
        return make_sink(receiver.url)

    @pytest.fixture
    def failing_sink(self, receiver: EventsReceiver) -> PagerDutySink:
        receiver.status = 503
        return make_sink(receiver.url)
