"""Quality monitoring: baselines per prompt fingerprint, the exact-match detector, pinning, degraded
status per service, and a plugin's deferred detector; through real intake, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from lumina_core import ComponentConfig, ComponentFactory, ConfigError, hookimpl
from lumina_core.app import Lumina
from lumina_core.cli import main as cli
from lumina_core.plugins import PluginHost, builtin_plugins
from lumina_core.server import Endpoints, LuminaServer
from tests.conftest import make_settings
from tests.support.otlp import raw_request

EXACT = {"quality.detectors": ["exact_match"]}


class Reply:
    """One LLM call sent through OTLP/HTTP; ``result()`` waits for a detector's verdict on it."""

    def __init__(self, server: Endpoints, service: str, prompt: str, answer: str, model: str = "gpt-4o") -> None:
        self.server = server
        self.trace_id, self.span_id = os.urandom(16), os.urandom(8)
        attributes = {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 20,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}]),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
            ),
        }
        span = {"trace_id": self.trace_id, "span_id": self.span_id, "name": "chat", "attributes": attributes}
        response = httpx.post(
            server.otlp_http_url,
            content=raw_request([span], service=service).SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert response.status_code == 200, response.text

    @property
    def ids(self) -> tuple[str, str]:
        return self.trace_id.hex(), self.span_id.hex()

    def result(self, detector: str = "exact_match", timeout: float = 15) -> dict[str, Any]:
        trace_id, span_id = self.ids
        deadline = time.monotonic() + timeout
        while True:
            found = httpx.get(
                f"{self.server.http_url}/api/v1/quality/results", params={"trace_id": trace_id, "span_id": span_id}
            ).json()["data"]
            mine = [r for r in found if r["detector"] == detector]
            if mine:
                return mine[0]
            assert time.monotonic() < deadline, f"no {detector} verdict on {trace_id}/{span_id}"
            time.sleep(0.05)

    def verdict(self, detector: str = "exact_match") -> str:
        return str(self.result(detector)["verdict"])

    def span(self) -> dict[str, Any]:
        trace_id, span_id = self.ids
        return httpx.get(f"{self.server.http_url}/api/v1/spans/{trace_id}/{span_id}").json()


def test_identical_and_reformatted_answers_match_and_one_changed_word_does_not(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    server = lumina_factory(database_url, **EXACT)
    question = "What is the capital of France?"
    first = Reply(server, "faq", question, "The capital of France is Paris.")
    assert first.verdict() == "baseline"
    assert Reply(server, "faq", question, "The capital of France is Paris.").verdict() == "match"
    assert Reply(server, "faq", question, "  The capital of France\nis  Paris.\n").verdict() == "match"
    changed = Reply(server, "faq", question, "The capital of France is Lyon.")
    result = changed.result()
    assert (result["verdict"], result["score"]) == ("changed", 0.0)
    assert result["baseline_id"] == first.result()["baseline_id"]
    assert changed.span()["status"] == "ok"  # no threshold configured: a change is reported, not degraded

    structured = "Give me the order as JSON"
    assert Reply(server, "orders", structured, '{"id": 7, "items": ["a", "b"], "paid": true}').verdict() == "baseline"
    assert Reply(server, "orders", structured, '{"paid":true,"items":["a","b"],"id":7}').verdict() == "match"
    assert Reply(server, "orders", structured, '{"id": 7, "items": ["b", "a"], "paid": true}').verdict() == "changed"
    progress = httpx.get(f"{server.http_url}/-/ready").json()["checks"]["quality"]  # what operators watch
    assert (progress["checked"], progress["waiting_calls"], progress["skipped"]) == (7, 0, 0)


def test_different_prompts_models_and_services_are_never_compared(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    server = lumina_factory(database_url, **EXACT)
    assert Reply(server, "faq", "Capital of France?", "Paris").verdict() == "baseline"
    others = [
        Reply(server, "faq", "Capital of Spain?", "Madrid"),  # another prompt
        Reply(server, "faq", "Capital of France?", "Paris, France", model="gpt-4o-mini"),  # another model
        Reply(server, "travel", "Capital of France?", "Lutetia"),  # another service
    ]
    assert [r.verdict() for r in others] == ["baseline"] * 3
    assert len({r.result()["fingerprint"] for r in others}) == 3


def test_baselines_can_be_pinned_and_re_pinned_with_history(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    server = lumina_factory(database_url, **EXACT, **{"quality.baseline_size": 2})
    prompt = "Summarise the refund policy"
    one, two = Reply(server, "faq", prompt, "Refunds within 30 days."), Reply(server, "faq", prompt, "No refunds.")
    assert (one.verdict(), two.verdict()) == ("baseline", "baseline")  # the first two responses
    assert Reply(server, "faq", prompt, "No refunds.").verdict() == "match"
    three = Reply(server, "faq", prompt, "Refunds within 14 days.")
    assert three.verdict() == "changed"

    trace_id, span_id = three.ids
    pinned = httpx.post(f"{server.http_url}/api/v1/quality/baselines", json={"trace_id": trace_id, "span_id": span_id})
    assert pinned.status_code == 201, pinned.text
    assert Reply(server, "faq", prompt, "Refunds within 14 days.").verdict() == "match"
    assert Reply(server, "faq", prompt, "No refunds.").verdict() == "changed"  # the old baselines retired

    result = CliRunner().invoke(cli, ["quality", "pin", *one.ids], env={"LUMINA_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert Reply(server, "faq", prompt, "Refunds within 30 days.").verdict() == "match"

    fingerprint = one.result()["fingerprint"]
    history = httpx.get(f"{server.http_url}/api/v1/quality/baselines", params={"fingerprint": fingerprint}).json()
    rows = history["data"]
    assert [(r["span_id"], r["pinned"], r["retired_unix_nano"] is None) for r in rows] == [
        (one.ids[1], True, True),
        (three.ids[1], True, False),
        (two.ids[1], False, False),
        (one.ids[1], False, False),
    ]
    nowhere = {"trace_id": "0" * 32, "span_id": "0" * 16}
    assert httpx.post(f"{server.http_url}/api/v1/quality/baselines", json=nowhere).status_code == 404


def test_degraded_status_follows_each_services_threshold(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    server = lumina_factory(database_url, **EXACT, **{"quality.services": {"checkout": {"degraded_below": 0.5}}})
    for service in ("checkout", "chitchat"):
        assert Reply(server, service, "Confirm the order", "Order 42 confirmed.").verdict() == "baseline"
    strict = Reply(server, "checkout", "Confirm the order", "Order 42 cancelled.")
    lax = Reply(server, "chitchat", "Confirm the order", "Order 42 cancelled.")
    assert (strict.result()["degraded"], lax.result()["degraded"]) == (True, False)
    assert (strict.span()["status"], lax.span()["status"]) == ("degraded", "ok")
    trace = httpx.get(f"{server.http_url}/api/v1/traces/{strict.ids[0]}").json()
    assert trace["status"] == "degraded"  # the rollup follows
    listed = httpx.get(f"{server.http_url}/api/v1/traces", params={"status": "degraded"}).json()["data"]
    assert [t["trace_id"] for t in listed] == [strict.ids[0]]
    page = httpx.get(f"{server.http_url}/traces/{strict.ids[0]}", params={"span": strict.ids[1]}).text
    assert 'id="quality"' in page and "changed · score 0.000" in page  # the span panel shows the verdict


class LengthDetector:
    """A deferred detector from a plugin: how close the response's length is to the baselines'."""

    mode = "deferred"

    async def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        return [max(min(len(o), len(b)) / max(len(o), len(b), 1) for b in baselines) for o, baselines in pairs]


class LengthPlugin:
    @hookimpl
    def lumina_register_detectors(self) -> list[ComponentFactory]:
        return [ComponentFactory("length_ratio", lambda ctx, config: LengthDetector(), ComponentConfig, "test")]


def test_a_plugin_detector_runs_deferred_beside_exact_match(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        **{"quality.detectors": ["exact_match", "length_ratio"], "quality.services": {"quiet": {"detectors": []}}},
    )
    lumina = Lumina(settings, PluginHost([*builtin_plugins(), LengthPlugin()], entry_points=False))
    with LuminaServer(lumina, log_level="warning").in_thread() as server:
        Reply(server, "faq", "Say hello", "Hello there!").verdict("length_ratio")
        later = Reply(server, "faq", "Say hello", "Hello!")
        assert later.result("length_ratio")["score"] == pytest.approx(6 / 12)
        assert later.verdict("exact_match") == "changed"
        quiet = Reply(server, "quiet", "Say hello", "Hello!")
        Reply(server, "faq", "Say bye", "Bye").verdict()  # sent after quiet's, checked after it
        unchecked = httpx.get(f"{server.http_url}/api/v1/quality/results", params={"span_id": quiet.ids[1]})
        assert unchecked.json()["data"] == []


def test_an_unknown_detector_is_a_startup_error_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Lumina(make_settings(tmp_path, **{"quality.detectors": ["exact_mtach"]}))
    assert "exact_match" in str(raised.value.errors)


def test_quality_checks_are_off_unless_configured(lumina_factory: Callable[..., Endpoints]) -> None:
    server = lumina_factory()
    reply = Reply(server, "faq", "Capital of France?", "Paris")
    reply.span()  # stored
    time.sleep(0.3)
    results = httpx.get(f"{server.http_url}/api/v1/quality/results", params={"span_id": reply.ids[1]})
    assert results.json()["data"] == []


def test_quality_analytics_and_drifts_count_what_was_sent(
    lumina_factory: Callable[..., Endpoints], database_url: str
) -> None:
    server = lumina_factory(database_url, **EXACT)
    sent = [
        ("faq", "Capital?", "Paris"),
        ("faq", "Capital?", "Paris"),
        ("faq", "Capital?", "Lyon"),
        ("faq", "Capital?", "Marseille"),
        ("orders", "Status?", "Shipped"),
        ("orders", "Status?", "Shipped"),
    ]
    replies = [Reply(server, *call) for call in sent]
    for reply in replies:
        reply.verdict()
    window = {"start": "2023-11-14T00:00:00Z", "end": "2023-11-15T00:00:00Z"}  # raw_request's span times
    by_service = httpx.get(
        f"{server.http_url}/api/v1/quality/analytics", params={**window, "group_by": "service"}
    ).json()["data"]
    rows = {row["group"]: row for row in by_service}
    assert (rows["faq"]["baselines"], rows["faq"]["compared"], rows["faq"]["changed"]) == (1, 3, 2)
    assert rows["faq"]["mean_score"] == pytest.approx(1 / 3)
    assert rows["faq"]["changed_rate"] == pytest.approx(2 / 3)
    assert (rows["orders"]["baselines"], rows["orders"]["compared"], rows["orders"]["changed"]) == (1, 1, 0)
    hourly = httpx.get(f"{server.http_url}/api/v1/quality/analytics", params={**window, "bucket": "hour"}).json()
    assert [(r["compared"], r["changed"]) for r in hourly["data"]] == [(4, 2)]

    drifts = httpx.get(f"{server.http_url}/api/v1/quality/drifts", params=window).json()["data"]
    assert sorted((d["baseline_output"], d["output"]) for d in drifts) == [("Paris", "Lyon"), ("Paris", "Marseille")]
    page = httpx.get(f"{server.http_url}/quality", params={"start": window["start"], "end": window["end"]}).text
    assert "Marseille" in page and "Paris" in page and 'id="by-service"' in page


def test_a_response_too_deep_to_encode_is_stored_unchecked_beside_the_others(
    lumina_factory: Callable[..., Endpoints],
) -> None:
    server = lumina_factory(**EXACT)
    deep: Any = "bottom"
    for _ in range(400):
        deep = [deep]
    nested = [{"role": "assistant", "content": deep}]
    spans = [
        {
            "name": "chat",
            "attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai.output.messages": json.dumps(nested)},
        },
        {
            "name": "chat",
            "attributes": {
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "fine"}]),
            },
        },
    ]
    response = httpx.post(
        server.otlp_http_url,
        content=raw_request(spans, service="deep").SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 15
    while not (results := httpx.get(f"{server.http_url}/api/v1/quality/results").json()["data"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [r["verdict"] for r in results] == ["baseline"]  # the readable one
    assert len(httpx.get(f"{server.http_url}/api/v1/spans", params={"service": "deep"}).json()["data"]) == 2
