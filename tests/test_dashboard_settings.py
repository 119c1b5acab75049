"""The dashboard's Settings page and the overview's sampling notice, in Chromium: retention, the daily limit
with what it refused, sampling with what it dropped, and a retention sweep from the page."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from lumina_core.testing import llm_span, otlp_request
from tests.support.browser import chromium, shot, watched_page

DAY_NS = 86_400 * 10**9


def send(url: str, spans: list[dict[str, Any]]) -> httpx.Response:
    body = otlp_request(spans, service="svc").SerializeToString()
    return httpx.post(url, content=body, headers={"content-type": "application/x-protobuf"})


def test_settings_page_shows_retention_limits_and_sampling_and_sweeps(lumina_server: Callable[..., Any]) -> None:
    server = lumina_server(
        settings={
            "limits.daily_traces": 150,
            "sampling.samplers": ["head"],
            "samplers.head": {"ratio": 0.5},
            "retention.services": {"audit": 30},
        }
    )
    now = time.time_ns()
    fresh = [{**llm_span(start_ns=now - 60 * 10**9), "trace_id": os.urandom(16)} for _ in range(200)]
    old = [{**llm_span(start_ns=now - 9 * DAY_NS), "trace_id": os.urandom(16)} for _ in range(20)]
    assert send(server.otlp_http_url, old).status_code == 200
    reply = send(server.otlp_http_url, fresh)
    assert reply.status_code == 200 and "daily limit" in reply.text
    with chromium() as browser, watched_page(browser, server.http_url) as page:
        page.goto("/settings")
        assert page.locator("#retention-days").inner_text() == "7 days"
        assert page.locator("#retention dd[data-service=audit]").inner_text() == "30 days"
        today = page.locator("#limit-today").inner_text()
        assert today == "Today: 150 traces (100.0% of the limit), 70 refused.", "20 old traces, then 130 of 200"
        assert page.locator("#daily-limit tbody tr").count() == 1
        assert page.locator("#daily-limit tbody td").nth(2).inner_text() == "70"
        assert "Dropped in the last 24 hours" in page.locator("#sampled-out").inner_text()
        shot(page, "settings")
        page.click("#sweep-preview")
        page.wait_for_url("**/settings?*done=*")
        assert page.locator("#settings-done").inner_text().startswith("would delete ")
        page.click("#sweep-now")  # asks first; the watched page accepts
        page.wait_for_url("**/settings?*done=deleted*")
        assert page.locator("#settings-done").inner_text().startswith("deleted ")
        page.goto("/?range=1h")
        notice = page.locator("#sampled-notice")
        assert "dropped by sampling" in notice.inner_text() and "head" in notice.inner_text()
        shot(page, "overview-sampled")
