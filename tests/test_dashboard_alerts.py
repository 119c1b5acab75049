"""The Alerts pages in a real browser (Playwright driving Debian's headless Chromium): a cost spike sent
over OTLP/HTTP fires the rule from ``lumina.toml``; the list, the alert's chart, acknowledging, and the
rule editor are checked against ``/api/v1/alerts``. Screenshots go under ``test-output/dashboard/``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lumina_core.server import Endpoints
from tests.support.browser import chromium, shot, watched_page
from tests.support.otlp import raw_request

SECOND = 1_000_000_000
WINDOW = 300
RULE = {
    "name": "cost-spike",
    "kind": "cost_spike",
    "window": WINDOW,
    "baseline_windows": 3,
    "params": {"min_samples": 3, "above_pct": 100},
}
ALERTING = {"alerts.interval_seconds": 3600, "alerts.sinks": ["log"], "alerts.rules": [RULE]}


def llm_span(start_ns: int, tokens: tuple[int, int]) -> dict[str, Any]:
    return {
        "name": "chat gpt-4o",
        "start": start_ns,
        "end": start_ns + SECOND // 2,
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
        },
    }


def send_cost_spike(server: Endpoints, spike_end_ns: int) -> None:
    """Three calls in each of three 5-minute windows, then three calls with three times the tokens in the window
    ending at ``spike_end_ns``."""
    spans = []
    for back in (3, 2, 1, 0):
        window_start = spike_end_ns - (back + 1) * WINDOW * SECOND
        tokens = (3000, 600) if back == 0 else (1000, 200)
        spans += [llm_span(window_start + offset * SECOND, tokens) for offset in (60, 120, 180)]
    request = raw_request(spans, service="checkout")
    response = httpx.post(
        server.otlp_http_url,
        content=request.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200, response.text


def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@pytest.fixture
def alerting(lumina_factory: Callable[..., Endpoints]) -> Iterator[tuple[Endpoints, httpx.Client]]:
    """A Lumina (SQLite) with the cost-spike rule in its settings, and the spike fired."""
    server = lumina_factory(**ALERTING)
    spike_end = (time.time_ns() // SECOND - 60) * SECOND
    send_cost_spike(server, spike_end)
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        since = str((spike_end - 5 * WINDOW * SECOND) // 1_000_000)
        stored = lambda: len(api.get("/api/v1/spans", params={"llm": "true", "start": since}).json()["data"]) == 12  # noqa: E731
        assert eventually(stored), "the spans were not stored"
        decisions = api.post("/api/v1/alerts/evaluate", params={"at": str(spike_end // 1_000_000)})
        assert decisions.status_code == 200, decisions.text
        assert [d["action"] for d in decisions.json()["data"]] == ["fire"]
        yield server, api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, alerting: tuple[Endpoints, httpx.Client]) -> Iterator[Any]:
    with watched_page(browser, alerting[0].http_url) as page:
        yield page


def test_a_firing_alert_is_listed_charted_and_acknowledged(page: Any, alerting: tuple[Endpoints, httpx.Client]) -> None:
    _, api = alerting
    (alert,) = api.get("/api/v1/alerts", params={"state": "open"}).json()["data"]
    page.goto("/alerts")
    assert page.locator("nav.pages a", has_text="Alerts").get_attribute("aria-current") == "page"
    row = page.locator(f"#open-alerts tr[data-alert-id='{alert['id']}']")
    assert row.get_attribute("data-state") == "firing"
    assert "cost-spike" in row.inner_text() and "service=checkout" in row.inner_text()

    rule = page.locator("#rule-table tr[data-rule='cost-spike']")
    assert rule.get_attribute("data-source") == "config"
    assert "lumina.toml" in rule.inner_text()
    assert rule.locator("button").count() == 0  # read-only
    everywhere = rule.locator(".threshold-scope[data-scope='*']")
    assert everywhere.locator("code[data-key='above_pct']").inner_text() == "above_pct=100"
    assert everywhere.locator("code[data-key='min_samples']").inner_text() == "min_samples=3"
    assert everywhere.locator("code[data-key='cooldown_seconds']").count() == 1
    shot(page, "alerts")

    page.click(f"#open-alerts tr[data-alert-id='{alert['id']}'] a")
    page.wait_for_url(re.compile(f"/alerts/{alert['id']}"))
    page.wait_for_selector("figure[data-chart='alert'] canvas")
    chart = page.evaluate("JSON.parse(document.getElementById('chart-data').textContent)")
    assert any(v is not None for v in chart["value"])
    assert chart["threshold"][0] == pytest.approx(alert["threshold"])
    assert page.locator("#history tr[data-event='firing']").count() == 1
    assert page.locator("#deliveries tr[data-sink='log']").count() == 1
    shot(page, "alert")

    page.click("#alert-actions button:has-text('Acknowledge')")
    page.wait_for_load_state()
    assert page.locator("#f-state").inner_text() == "acknowledged"
    assert page.locator("#history tr[data-event='acknowledged']").count() == 1
    assert api.get(f"/api/v1/alerts/{alert['id']}").json()["state"] == "acknowledged"

    page.goto("/alerts/999999")
    assert "alert 999999 not found" in page.locator("#message").inner_text()


def test_rules_are_created_edited_and_refused_through_the_editor(
    page: Any, alerting: tuple[Endpoints, httpx.Client]
) -> None:
    _, api = alerting
    page.goto("/alerts")
    editor = page.locator("#rule-editor")
    editor.locator("input[name=name]").fill("checkout-errors")
    editor.locator("select[name=kind]").select_option("error_rate")
    editor.locator("input[name=window]").fill("600")
    editor.locator("input[name=group_by]").fill("service, model")
    editor.locator("input[name=where_service]").fill("checkout")
    editor.locator("textarea[name=params]").fill('{"max_rate": 0.1}')
    editor.locator("textarea[name=services]").fill('{"checkout": {"max_rate": 0.2}}')
    editor.locator("button").click()
    row = page.locator("#rule-table tr[data-rule='checkout-errors']")
    row.wait_for()
    assert row.get_attribute("data-source") == "api"
    assert row.locator(".threshold-scope[data-scope='*'] code[data-key='max_rate']").inner_text() == "max_rate=0.1"
    assert row.locator(".threshold-scope[data-scope='checkout']").inner_text().endswith("max_rate=0.2")
    (stored,) = [r for r in api.get("/api/v1/alerts/rules").json()["data"] if r["name"] == "checkout-errors"]
    assert stored["source"] == "api" and stored["window"] == 600 and stored["group_by"] == ["service", "model"]
    assert stored["where"]["service"] == "checkout" and stored["sinks"] is None and stored["enabled"] is True

    row.locator("button:has-text('Disable')").click()
    page.wait_for_load_state()
    assert api.get("/api/v1/alerts/rules/checkout-errors").json()["enabled"] is False

    page.click("#rule-table tr[data-rule='checkout-errors'] a:text-is('Edit')")
    page.wait_for_url(re.compile("edit=checkout-errors"))
    assert page.locator("#rule-editor input[name=name]").get_attribute("readonly") is not None
    page.locator("#rule-editor textarea[name=params]").fill('{"max_rate": 0.3')
    page.locator("#rule-editor button").click()
    assert "params: not valid JSON" in page.locator("#rule-errors").inner_text()
    assert page.locator("#rule-editor textarea[name=params]").input_value() == '{"max_rate": 0.3'  # kept
    page.locator("#rule-editor textarea[name=params]").fill('{"max_rate": 3}')
    page.locator("#rule-editor button").click()
    assert "less than or equal to 1" in page.locator("#rule-errors").inner_text()  # the kind refuses it
    page.locator("#rule-editor textarea[name=params]").fill('{"max_rate": 0.3}')
    page.locator("#rule-editor button").click()
    page.wait_for_url(re.compile(r"/alerts(\?|#|$)"))
    assert api.get("/api/v1/alerts/rules/checkout-errors").json()["params"] == {"max_rate": 0.3}
    shot(page, "alert-rules")

    page.locator("#rule-editor input[name=name]").fill("cost-spike")  # lumina.toml's
    page.locator("#rule-editor select[name=kind]").select_option("cost_spike")
    page.locator("#rule-editor button").click()
    assert "exists" in page.locator("#rule-errors").inner_text()

    page.goto("/alerts")
    page.click("#rule-table tr[data-rule='checkout-errors'] button:has-text('Delete')")
    page.wait_for_load_state()
    assert page.locator("#rule-table tr[data-rule='checkout-errors']").count() == 0
    assert api.get("/api/v1/alerts/rules/checkout-errors").status_code == 404


def test_alert_forms_refuse_foreign_posts_and_bad_input(alerting: tuple[Endpoints, httpx.Client]) -> None:
    _, api = alerting
    (alert,) = api.get("/api/v1/alerts", params={"state": "open"}).json()["data"]
    foreign = api.post(f"/alerts/{alert['id']}/resolve", headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    rule = {"name": "evil", "kind": "budget", "params": '{"limit_usd": 1}'}
    assert api.post("/alerts/rules", data=rule, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert api.get("/api/v1/alerts/rules/evil").status_code == 404
    assert api.get(f"/api/v1/alerts/{alert['id']}").json()["state"] == "firing"

    bad = api.post("/alerts/rules", data={"name": "x", "kind": "budget", "window": "week", "params": "[1]"})
    assert bad.status_code == 422 and "params: must be a JSON object" in bad.text
    bad = api.post("/alerts/rules", data={"name": "x", "kind": "budget", "window": "week", "params": "{}"})
    assert bad.status_code == 422 and "window" in bad.text and "limit_usd" not in bad.text
    bad = api.post("/alerts/rules", data={"name": "x", "kind": "budget", "window": "day", "params": "{}"})
    assert bad.status_code == 422 and "params.limit_usd: Field required" in bad.text
    bad = api.post("/alerts/rules", data={"name": "<b>x</b>", "kind": "nope"})
    assert bad.status_code == 422 and "<b>x</b>" not in bad.text  # escaped, and refused
    assert api.post("/alerts/rules/cost-spike/delete").status_code == 409  # lumina.toml's
    assert api.post("/alerts/rules/nope/toggle").status_code == 404
    assert api.post("/alerts/abc/ack").status_code == 404

    for path in ("/alerts", f"/alerts/{alert['id']}"):
        response = api.get(path)
        assert response.status_code == 200
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        assert "<script>" not in response.text.replace('<script type="application/json" id="chart-data">', "")

    resolved = api.post(f"/alerts/{alert['id']}/resolve", data={"back": "alert"}, follow_redirects=False)
    assert resolved.status_code == 303 and resolved.headers["location"] == f"/alerts/{alert['id']}"
    assert api.get(f"/api/v1/alerts/{alert['id']}").json()["state"] == "resolved"
    again = api.post(f"/alerts/{alert['id']}/resolve", follow_redirects=False)  # a second click: no error
    assert again.status_code == 303 and again.headers["location"] == "/alerts"
