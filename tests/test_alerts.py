"""Alerting end to end: real traffic from the OpenTelemetry SDK through intake, rules evaluated as at chosen
times, the state machine (fire once, keep, resolve, cooldown, minimum samples), delivery to real loopback
receivers (signed webhook, retries, outbox across a restart), rules edited through the API and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from lumina_core import (
    AlertRejected,
    AlertThresholds,
    AlertVerdict,
    ComponentConfig,
    ComponentFactory,
    WindowStats,
    hookimpl,
)
from lumina_core.alerting.engine import dedup_key
from lumina_core.alerting.rules import cascade
from lumina_core.cli import main as cli
from lumina_core.config import AlertRuleSettings, AlertSettings, load_settings
from lumina_core.server import Endpoints
from lumina_core.testing import RecordingSink, http_receiver
from lumina_plugins.alert_rules import (
    Budget,
    BudgetConfig,
    CostSpike,
    CostSpikeConfig,
    ErrorRate,
    ErrorRateConfig,
    LatencyConfig,
    LatencyP95,
    QualityDrop,
    QualityDropConfig,
)
from tests.conftest import make_settings, running_lumina
from tests.support.db import fetch_all
from tests.support.net import free_port

W = 300  # the rules' window, seconds
DAY_NS = 86400 * 10**9
# yesterday 10:00 UTC: in the past (the scheduled evaluation never sees it) and far from midnight
T0 = (time.time_ns() // DAY_NS) * DAY_NS - 14 * 3600 * 10**9
SECRET = "s3cret"


def at(windows: float) -> int:
    """Unix nanoseconds ``windows`` rule windows after T0."""
    return T0 + int(windows * W * 10**9)


class Traffic:
    """LLM calls sent with the OpenTelemetry SDK's OTLP/HTTP exporter, with explicit start times."""

    def __init__(self, server: Endpoints) -> None:
        self.server = server
        self.providers: dict[str, TracerProvider] = {}

    def calls(
        self,
        service: str,
        window: float,
        count: int,
        input_tokens: int = 1000,
        *,
        user: str | None = None,
        error: bool = False,
        latency_ms: float = 200,
        prompt: str = "Hello",
        answer: str = "Hi",
    ) -> None:
        provider = self.providers.get(service)
        if provider is None:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.server.otlp_http_url)))
            self.providers[service] = provider
        tracer = provider.get_tracer("alert-tests")
        for i in range(count):
            start = at(window) + int((i + 0.5) * W * 10**9 / count)
            span = tracer.start_span("chat gpt-4o", start_time=start)
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.output_tokens": input_tokens // 10,
                    "gen_ai.input.messages": json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
                    ),
                    "gen_ai.output.messages": json.dumps(
                        [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
                    ),
                    **({"user.id": user} if user else {}),
                }
            )
            if error:
                span.set_status(Status(StatusCode.ERROR, "rate limited"))
            span.end(end_time=start + int(latency_ms * 1e6))
        assert provider.force_flush(10_000)

    def close(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()


@contextmanager
def traffic(server: Endpoints) -> Iterator[Traffic]:
    sender = Traffic(server)
    try:
        yield sender
    finally:
        sender.close()


def evaluate(server: Endpoints, when: int, **params: Any) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.http_url}/api/v1/alerts/evaluate", params={"at": str(when // 10**6), **params}, timeout=30
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def acted(decisions: list[dict[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    return sorted((d["action"], d["scope"]) for d in decisions if d["action"] not in ("none", "keep"))  # type: ignore[return-value]


def alerts_of(server: Endpoints, **params: Any) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.http_url}/api/v1/alerts", params=params).json()["data"])


def alert_settings(url: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "alerts.interval_seconds": 3600,
        "alerts.sinks": ["webhook/hook"],
        "alerts.dashboard_url": "http://lumina.example",
        "alerts.delivery": {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "timeout_seconds": 5},
        "alert_sinks": {"webhook/hook": {"url": url, "secret": SECRET, "headers": {"X-Team": "llm"}}},
        "alerts.rules": rules,
        **extra,
    }


COST_SPIKE = {
    "name": "cost-spike",
    "kind": "cost_spike",
    "window": W,
    "baseline_windows": 3,
    "params": {"min_samples": 5, "above_pct": 100, "cooldown_seconds": 900, "severity": "critical"},
}


def test_a_cost_spike_fires_once_for_its_service_resolves_and_cools_down(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    with http_receiver() as hook:
        server = lumina_factory(database_url, **alert_settings(hook.url, [COST_SPIKE]))
        with traffic(server) as send:
            for window in range(3):  # a steady baseline: 10 calls of 1,000 input tokens per window
                for service in ("checkout", "search"):
                    send.calls(service, window, 10)
                send.calls("tiny", window, 2)
            send.calls("checkout", 3, 10, input_tokens=3000)  # the spike: 3x the cost
            send.calls("search", 3, 10)
            send.calls("tiny", 3, 2, input_tokens=30000)  # 10x, but fewer calls than min_samples

            assert acted(evaluate(server, at(3))) == []  # nothing yet: the baseline alone
            assert acted(evaluate(server, at(4))) == [("fire", {"service": "checkout"})]
            assert acted(evaluate(server, at(4.1))) == []  # still firing: no second alert
            (alert,) = alerts_of(server)
            assert (alert["state"], alert["severity"], alert["scope"]) == (
                "firing",
                "critical",
                {"service": "checkout"},
            )

            (firing,) = hook.wait_for(1)
            body = firing.json()
            assert (body["event"], body["rule"], body["scope"], body["kind"]) == (
                "firing",
                "cost-spike",
                {"service": "checkout"},
                "cost_spike",
            )
            assert body["value"] == pytest.approx(3 * body["baseline"])
            assert body["url"] == f"http://lumina.example/alerts/{alert['id']}?project=default"
            assert body["dedup_key"] == "lumina/default/cost-spike/service=checkout"
            expected = hmac.new(
                SECRET.encode(), f"{firing.headers['x-lumina-timestamp']}.".encode() + firing.body, hashlib.sha256
            )
            assert firing.headers["x-lumina-signature"] == f"sha256={expected.hexdigest()}"
            assert firing.headers["x-team"] == "llm"

            send.calls("checkout", 4, 10)  # back to normal
            assert acted(evaluate(server, at(5))) == [("resolve", {"service": "checkout"})]
            resolved = hook.wait_for(2)[1].json()
            assert (resolved["event"], resolved["dedup_key"]) == ("resolved", body["dedup_key"])

            send.calls("checkout", 5, 10, input_tokens=4000)  # spikes again within the cooldown
            assert acted(evaluate(server, at(6))) == [("cooldown", {"service": "checkout"})]
        assert [a["state"] for a in alerts_of(server)] == ["resolved"]
        detail = httpx.get(f"{server.http_url}/api/v1/alerts/{alert['id']}").json()
        assert [e["event"] for e in detail["events"]] == ["firing", "resolved"]
        assert [d["state"] for d in detail["deliveries"]] == ["delivered", "delivered"]
        series = detail["series"]
        assert len(series["x"]) == len(series["value"]) > 5 and max(v for v in series["value"] if v) > 0
        per_call = {**COST_SPIKE, "name": "per-call", "enabled": False}
        per_call["params"] = {**COST_SPIKE["params"], "measure": "cost_per_call"}
        assert httpx.post(f"{server.http_url}/api/v1/alerts/rules", json=per_call).status_code == 201
        backtest = evaluate(server, at(4), rule="per-call", dry_run="true")  # the spike, judged per call
        checkout = next(d for d in backtest if d["scope"] == {"service": "checkout"})
        assert (checkout["firing"], checkout["action"]) == (True, "fire")  # would: a dry run sends nothing
        assert checkout["value"] == pytest.approx(3 * checkout["baseline"])
        time.sleep(0.2)
        assert len(hook.requests) == 2  # exactly one firing and one resolved notification


def test_a_receiver_failing_twice_gets_the_alert_exactly_once(lumina_factory: Callable[..., Endpoints]) -> None:
    budget = {"name": "daily-budget", "kind": "budget", "window": "day", "params": {"limit_usd": 0.01}}
    with http_receiver(fail_first=2) as hook:
        server = lumina_factory(**alert_settings(hook.url, [budget]))
        with traffic(server) as send:
            send.calls("checkout", 0, 5)
        assert acted(evaluate(server, at(1))) == [("fire", {"service": "checkout"})]
        (received,) = hook.wait_for(1)
        time.sleep(0.3)
        assert len(hook.requests) == 3 and len(hook.accepted) == 1
        assert received.json()["rule"] == "daily-budget"
        (delivery,) = httpx.get(f"{server.http_url}/api/v1/alerts/{received.json()['alert_id']}").json()["deliveries"]
        assert (delivery["state"], delivery["attempts"]) == ("delivered", 3)
        ready = httpx.get(f"{server.http_url}/-/ready").json()["checks"]["alerts"]
        assert ready == {"ok": True, "notifications": {"pending": 0, "failed": 0}}


def test_a_firing_alert_is_renotified_until_acknowledged_and_resolved_through_the_api(
    lumina_factory: Callable[..., Endpoints],
) -> None:
    budget = {
        "name": "daily-budget",
        "kind": "budget",
        "window": "day",
        "params": {"limit_usd": 0.01, "renotify_seconds": 60},
    }
    with http_receiver() as hook:
        server = lumina_factory(**alert_settings(hook.url, [budget]))
        with traffic(server) as send:
            send.calls("checkout", 0, 5)
        minute = 60 * 10**9
        assert acted(evaluate(server, at(1))) == [("fire", {"service": "checkout"})]
        assert acted(evaluate(server, at(1) + minute // 2)) == []  # not yet due
        assert acted(evaluate(server, at(1) + minute)) == [("repeat", {"service": "checkout"})]
        (alert,) = alerts_of(server, state="open")
        acked = httpx.post(f"{server.http_url}/api/v1/alerts/{alert['id']}/ack")
        assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
        assert acted(evaluate(server, at(1) + 3 * minute)) == []  # acknowledged: no more reminders
        resolved = httpx.post(f"{server.http_url}/api/v1/alerts/{alert['id']}/resolve")
        assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
        assert httpx.post(f"{server.http_url}/api/v1/alerts/{alert['id']}/resolve").status_code == 404
        events = [r.json()["event"] for r in hook.wait_for(3)]
        assert events == ["firing", "repeat", "resolved"]
        history = httpx.get(f"{server.http_url}/api/v1/alerts/{alert['id']}").json()["events"]
        assert [(e["event"], e["actor"]) for e in history] == [
            ("firing", None),
            ("repeat", None),
            ("acknowledged", "anonymous (open mode)"),
            ("resolved", "anonymous (open mode)"),
        ]


def test_an_alert_waits_in_the_outbox_across_a_restart(tmp_path: Path, database_url: str) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    budget = {"name": "daily-budget", "kind": "budget", "window": "day", "params": {"limit_usd": 0.01}}
    settings = make_settings(tmp_path, database_url, **alert_settings(f"http://127.0.0.1:{port}/hook", [budget]))
    with running_lumina(settings) as (_, server):
        with traffic(server) as send:
            send.calls("checkout", 0, 5)
        assert acted(evaluate(server, at(1))) == [("fire", {"service": "checkout"})]
        (alert,) = alerts_of(server)
        deadline = time.monotonic() + 10
        while not httpx.get(f"{server.http_url}/api/v1/alerts/{alert['id']}").json()["deliveries"][0]["attempts"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with http_receiver(port=port) as hook, running_lumina(settings):
        (received,) = hook.wait_for(1)
        assert (received.json()["alert_id"], received.json()["event"]) == (alert["id"], "firing")
        time.sleep(0.3)
        assert len(hook.accepted) == 1


def test_quality_drop_error_rate_latency_and_per_user_scopes(lumina_factory: Callable[..., Endpoints]) -> None:
    rules = [
        {
            "name": "quality",
            "kind": "quality_drop",
            "window": W,
            "params": {"min_samples": 3, "measure": "changed_rate", "max_changed_rate": 0.2},
        },
        {"name": "errors", "kind": "error_rate", "window": W, "params": {"min_samples": 5, "max_rate": 0.1}},
        {"name": "slow", "kind": "latency_p95", "window": W, "params": {"min_samples": 5, "max_ms": 2000}},
        {
            "name": "user-spend",
            "kind": "budget",
            "window": W,
            "group_by": ["user_id"],
            "where": {"service": "chat"},
            "params": {"limit_usd": 0.05},
        },
    ]
    with http_receiver() as hook:
        server = lumina_factory(**alert_settings(hook.url, rules, **{"quality.detectors": ["exact_match"]}))
        with traffic(server) as send:
            send.calls("faq", 0, 1, prompt="Capital of France?", answer="Paris")  # the baseline
            send.calls("faq", 0, 5, prompt="Capital of France?", answer="Lyon")  # drifted answers
            send.calls("api", 0, 10, error=True)
            send.calls("api", 0, 10)
            send.calls("batch", 0, 10, latency_ms=5000)
            send.calls("chat", 0, 5, input_tokens=10_000, user="alice")  # $0.125
            send.calls("chat", 0, 5, user="bob")  # $0.0175
        deadline = time.monotonic() + 15  # quality verdicts are written after the spans, by their own task
        while len(httpx.get(f"{server.http_url}/api/v1/quality/results").json()["data"]) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        decisions = evaluate(server, at(1))
        fired = sorted((d["rule"], d["scope"]) for d in decisions if d["action"] == "fire")
        assert fired == [
            ("errors", {"service": "api"}),
            ("quality", {"service": "faq"}),
            ("slow", {"service": "batch"}),
            ("user-spend", {"user_id": "alice"}),
        ]
        quality = next(d for d in decisions if d["rule"] == "quality" and d["action"] == "fire")
        assert quality["value"] == pytest.approx(1.0)  # all 5 compared responses changed
        assert len(hook.wait_for(4)) == 4


def test_a_single_expensive_call_alerts_at_once(lumina_factory: Callable[..., Endpoints]) -> None:
    rule = {"name": "pricey-call", "kind": "call_cost", "params": {"max_usd": 0.5}, "group_by": ["service", "model"]}
    with http_receiver() as hook:
        server = lumina_factory(**alert_settings(hook.url, [rule]))
        with traffic(server) as send:
            send.calls("agent", 0, 3)  # $0.0035 each
            send.calls("agent", 0, 1, input_tokens=400_000)  # $1.40: alerts without waiting for a cycle
        (received,) = hook.wait_for(1)
        body = received.json()
        assert (body["rule"], body["scope"]) == ("pricey-call", {"service": "agent", "model": "gpt-4o"})
        assert body["value"] == pytest.approx(1.4)


def test_rules_are_created_edited_and_deleted_through_the_api_and_persist(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, **{"alerts.rules": [COST_SPIKE]})
    rule = {
        "name": "errors",
        "kind": "error_rate",
        "params": {"max_rate": 0.2},
        "services": {"checkout": {"max_rate": 0.01}},
    }
    with running_lumina(settings) as (_, server):
        base = f"{server.http_url}/api/v1/alerts/rules"
        created = httpx.post(base, json=rule)
        assert created.status_code == 201, created.text
        assert created.json()["thresholds"]["checkout"]["max_rate"] == 0.01
        assert created.json()["thresholds"]["*"]["max_rate"] == 0.2
        assert httpx.post(base, json=rule).status_code == 409
        bad = httpx.post(base, json={**rule, "name": "bad", "params": {"max_rate": 7}})
        assert bad.status_code == 422 and "params.max_rate" in bad.json()["error"]["message"]
        unknown = httpx.post(base, json={**rule, "name": "bad", "kind": "nope"})
        assert unknown.status_code == 422 and "unknown alert rule kind" in unknown.json()["error"]["message"]
        assert httpx.put(f"{base}/cost-spike", json=COST_SPIKE).status_code == 409  # lumina.toml's: read-only
        assert httpx.delete(f"{base}/cost-spike").status_code == 409
        edited = httpx.put(f"{base}/errors", json={**rule, "enabled": False})
        assert edited.status_code == 200 and edited.json()["enabled"] is False
    with running_lumina(settings) as (_, server):
        base = f"{server.http_url}/api/v1/alerts/rules"
        listed = {r["name"]: (r["source"], r["enabled"]) for r in httpx.get(base).json()["data"]}
        assert listed == {"cost-spike": ("config", True), "errors": ("api", False)}
        assert httpx.delete(f"{base}/errors").status_code == 204
        assert httpx.get(f"{base}/errors").status_code == 404


def test_deleting_a_rule_resolves_its_open_alerts(lumina_factory: Callable[..., Endpoints]) -> None:
    with http_receiver() as hook:
        server = lumina_factory(**alert_settings(hook.url, []))
        budget = {"name": "spend", "kind": "budget", "window": "day", "params": {"limit_usd": 0.01}}
        assert httpx.post(f"{server.http_url}/api/v1/alerts/rules", json=budget).status_code == 201
        with traffic(server) as send:
            send.calls("checkout", 0, 5)
        assert acted(evaluate(server, at(1))) == [("fire", {"service": "checkout"})]
        assert httpx.delete(f"{server.http_url}/api/v1/alerts/rules/spend").status_code == 204
        (retired,) = evaluate(server, at(1.5))
        assert (retired["rule"], retired["action"]) == ("spend", "resolve")
        assert [a["state"] for a in alerts_of(server)] == ["resolved"]
        assert hook.wait_for(2)[1].json()["summary"] == "resolved: its rule was deleted or disabled"


def test_cli_tests_a_rule_and_acknowledges_and_resolves_alerts(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    with http_receiver() as hook:
        rule = "\n".join(f"{k} = {json.dumps(v)}" for k, v in COST_SPIKE.items() if k != "params")
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            "[server]\nport = 0\notlp_http_port = 0\notlp_grpc_port = 0\n"
            "[plugins]\nentry_points = false\n"
            '[alerts]\ninterval_seconds = 3600\nsinks = ["webhook/hook"]\n'
            "[alerts.delivery]\nbackoff_seconds = 0.05\n"
            f'[alert_sinks."webhook/hook"]\nurl = "{hook.url}"\n'
            f"[[alerts.rules]]\n{rule}\n[alerts.rules.params]\nmin_samples = 5\n"
        )
        env = {"LUMINA_CONFIG": str(config)}
        settings = load_settings(config, env={})
        with running_lumina(settings) as (_, server), traffic(server) as send:
            for window in range(6):
                send.calls("checkout", window, 10)
            send.calls("checkout", 6, 10, input_tokens=5000)
        when = datetime.fromtimestamp(at(7) / 1e9, UTC).isoformat()
        result = CliRunner().invoke(cli, ["alerts", "test", "cost-spike", "--at", when], env=env)
        assert result.exit_code == 0, result.output
        assert "cost-spike (service=checkout): FIRING" in result.output and "would fire" in result.output
        assert '"event": "firing"' in result.output
        assert hook.requests == []  # a test sends nothing
        with running_lumina(settings) as (_, server):
            evaluate(server, at(7))
            hook.wait_for(1)
        listed = CliRunner().invoke(cli, ["alerts", "list", "--state", "open"], env=env)
        assert listed.exit_code == 0 and "firing" in listed.output, listed.output
        alert_id = listed.output.split()[0]
        assert CliRunner().invoke(cli, ["alerts", "ack", alert_id], env=env).exit_code == 0
        assert "acknowledged" in CliRunner().invoke(cli, ["alerts", "list"], env=env).output
        resolved = CliRunner().invoke(cli, ["alerts", "resolve", alert_id], env=env)
        assert resolved.exit_code == 0, resolved.output
        assert hook.wait_for(2)[1].json()["summary"] == "resolved by cli"
        assert CliRunner().invoke(cli, ["alerts", "resolve", alert_id], env=env).exit_code == 1


# ---- the pure parts: rule kinds, the threshold cascade, and plugin rule kinds and sinks ----


def window(calls: int = 20, **values: Any) -> WindowStats:
    return WindowStats(0, 1, calls=calls, **values)


@pytest.mark.parametrize(
    ("config", "current", "history", "firing"),
    [
        ({"above_pct": 100}, 3.0, [1.0, 1.0, 1.0], True),
        ({"above_pct": 100}, 1.9, [1.0, 1.0, 1.0], False),
        ({"above_pct": 100}, 3.0, [1.0, 1.0], None),  # too few baseline windows
        ({"above_pct": None, "z_score": 3}, 1.5, [1.0, 1.1, 0.9, 1.0], True),
        ({"above_pct": None, "z_score": 3}, 1.2, [1.0, 1.1, 0.9, 1.0], False),
        ({"above_pct": 50, "z_score": 3}, 1.4, [1.0, 1.0, 1.0], False),  # both must hold
        ({"above_pct": 50, "average": "ewma", "ewma_alpha": 0.9}, 2.5, [1.0, 1.0, 2.0], False),  # recent level
        ({"above_pct": 50, "average": "mean"}, 2.5, [1.0, 1.0, 2.0], True),
        ({"above_pct": 100, "min_cost_usd": 5}, 3.0, [1.0, 1.0, 1.0], False),
    ],
)
def test_cost_spike_judgement(
    config: dict[str, Any], current: float, history: Sequence[float], firing: bool | None
) -> None:
    kind = CostSpike(CostSpikeConfig.model_validate(config))
    verdict = kind.judge(window(cost_usd=current), [window(cost_usd=v) for v in history])
    assert verdict.firing is firing


def test_the_other_kinds_judge_their_own_metric() -> None:
    few = window(calls=3)
    assert ErrorRate(ErrorRateConfig()).judge(window(errors=1), []).firing is False  # 5%: not above
    assert ErrorRate(ErrorRateConfig()).judge(window(errors=2, calls=20), []).value == 0.1
    assert ErrorRate(ErrorRateConfig()).judge(few, []).firing is None
    assert LatencyP95(LatencyConfig(max_ms=1000)).judge(window(latency_p95_ms=1500), []).firing is True
    relative = LatencyP95(LatencyConfig(above_pct=50))
    assert relative.judge(window(latency_p95_ms=1400), [window(latency_p95_ms=1000)]).firing is False
    assert relative.judge(window(latency_p95_ms=1600), [window(latency_p95_ms=1000)]).firing is True
    assert Budget(BudgetConfig(limit_usd=10)).judge(window(calls=1, cost_usd=11), []).firing is True
    scores = QualityDrop(QualityDropConfig(min_score=0.8, min_samples=5))
    assert scores.judge(window(quality_checked=10, quality_score_sum=7.0), []).firing is True
    assert scores.judge(window(quality_checked=10, quality_score_sum=9.0), []).firing is False
    assert scores.judge(window(quality_checked=4, quality_score_sum=0.0), []).firing is None


@pytest.mark.parametrize(
    ("service", "model", "expected"),
    [
        (None, None, {"above_pct": 150, "min_samples": 20, "cooldown_seconds": 60}),
        ("search", None, {"above_pct": 150, "min_samples": 5, "cooldown_seconds": 60}),
        ("checkout", None, {"above_pct": 300, "min_samples": 5, "cooldown_seconds": 60}),
        ("checkout", "gpt-4o", {"above_pct": 300, "min_samples": 50, "cooldown_seconds": 60}),
        ("checkout", "o3", {"above_pct": 500, "min_samples": 5, "cooldown_seconds": 60}),
    ],
)
def test_thresholds_cascade_from_defaults_to_the_rules_own_service_overrides(
    service: str | None, model: str | None, expected: dict[str, Any]
) -> None:
    settings = AlertSettings.model_validate(
        {
            "defaults": {"min_samples": 20, "cooldown_seconds": 60, "max_rate": 0.5},  # max_rate: not a cost key
            "services": {
                "search": {"min_samples": 5},
                "checkout": {"min_samples": 5},
                "checkout/gpt-4o": {"min_samples": 50},
            },
        }
    )
    rule = AlertRuleSettings.model_validate(
        {
            "name": "r",
            "kind": "cost_spike",
            "params": {"above_pct": 150},
            "services": {"checkout": {"above_pct": 300}, "checkout/o3": {"above_pct": 500}},
        }
    )
    assert cascade(set(CostSpikeConfig.model_fields), settings, rule, service, model) == expected


class SpendConfig(AlertThresholds):
    max_tokens: int = 1000


class TokenFlood:
    measures: frozenset[str] = frozenset()

    def __init__(self, config: SpendConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        return stats.tokens

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        return AlertVerdict(current.tokens > self.config.max_tokens, current.tokens, self.config.max_tokens)


@hookimpl
def lumina_register_alert_rules() -> list[ComponentFactory]:
    return [ComponentFactory("token_flood", lambda ctx, c: TokenFlood(c), SpendConfig, "Too many tokens.")]


def test_a_plugins_rule_kind_works_like_the_built_in_ones(
    lumina_server: Callable[..., Endpoints], recording_sink: RecordingSink
) -> None:
    rule = {"name": "tokens", "kind": "token_flood", "window": W, "params": {"max_tokens": 5000, "min_samples": 0}}
    settings = {"alerts.interval_seconds": 3600, "alerts.sinks": ["recording"], "alerts.rules": [rule]}
    server = lumina_server(plugins=[sys.modules[__name__], recording_sink], settings=settings)
    with traffic(server) as send:
        send.calls("bulk", 0, 10)  # 11,000 tokens
    assert acted(evaluate(server, at(1))) == [("fire", {"service": "bulk"})]
    (alert,) = recording_sink.wait_for(1)
    assert (alert.rule, alert.kind, alert.value) == ("tokens", "token_flood", 11000)


class Refusing:
    """A sink whose receiver refuses every alert as invalid."""

    async def send(self, alert: Any) -> None:
        raise AlertRejected("400 invalid payload")

    @hookimpl
    def lumina_register_alert_sinks(self) -> list[ComponentFactory]:
        return [ComponentFactory("refusing", lambda ctx, c: self, ComponentConfig, "Refuses everything.")]


def test_a_sink_that_rejects_an_alert_for_good_is_not_retried(lumina_server: Callable[..., Endpoints]) -> None:
    budget = {"name": "spend", "kind": "budget", "window": "day", "params": {"limit_usd": 0.01}}
    settings = {"alerts.interval_seconds": 3600, "alerts.sinks": ["refusing"], "alerts.rules": [budget]}
    server = lumina_server(plugins=[Refusing()], settings=settings)
    with traffic(server) as send:
        send.calls("checkout", 0, 5)
    assert acted(evaluate(server, at(1))) == [("fire", {"service": "checkout"})]
    (alert,) = alerts_of(server)
    deadline = time.monotonic() + 10
    while (delivery := httpx.get(f"{server.http_url}/api/v1/alerts/{alert['id']}").json()["deliveries"][0])[
        "state"
    ] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "failed",
        1,
        "rejected: 400 invalid payload",
    )


@pytest.mark.postgres
def test_one_process_of_several_on_postgresql_evaluates_alerts() -> None:
    from lumina_core.storage.database import JobLock, create_engine
    from tests.conftest import postgres_database

    async def run(url: str) -> list[bool]:
        engines = [create_engine(url), create_engine(url)]  # as two processes would have
        first, second = (JobLock(engine, "alert-evaluation") for engine in engines)
        seen = [await first.held(), await second.held(), await first.held()]
        await first.release()  # the leader stops (or dies: its connection closes)
        seen.append(await second.held())
        await second.release()
        for engine in engines:
            await engine.dispose()
        return seen

    with postgres_database() as url:
        assert asyncio.run(run(url)) == [True, False, True, True]


def test_two_processes_raising_one_alert_at_once_store_it_once(tmp_path: Path, database_url: str) -> None:
    """Per-call rules run in every worker process: a process whose view of the open alerts is a moment old
    finds the alert raised by the other (a unique index on open dedup keys) and keeps it."""
    from lumina_core.app import Lumina
    from lumina_core.storage.database import migrate

    budget = {"name": "spend", "kind": "budget", "window": "day", "params": {"limit_usd": 0.01}}
    settings = make_settings(tmp_path, database_url, **alert_settings("http://127.0.0.1:9/none", [budget]))

    async def raise_twice() -> list[str]:
        first, second = Lumina(settings), Lumina(settings)  # as two processes would have
        await migrate(first.engine)
        actions = []
        for lumina in (first, second):
            await lumina.alerts.load_rules()
            (rule,) = lumina.alerts.rules_of("default")
            scope = {"service": "checkout"}
            key = dedup_key("default", "spend", scope)
            verdict = AlertVerdict(True, 0.05, 0.01, None, "spent $0.05 of a $0.01 budget")
            stale = None  # neither has seen an open alert for the scope
            decision = await lumina.alerts._transition("default", rule, scope, key, verdict, stale, at(1), False)
            actions.append(decision.action)
            await lumina.engine.dispose()
        return actions

    assert asyncio.run(raise_twice()) == ["fire", "keep"]
    assert fetch_all(database_url, "SELECT state FROM alerts") == [("firing",)]
