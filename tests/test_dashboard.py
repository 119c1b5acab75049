"""The dashboard in a real browser (Playwright driving Debian's headless Chromium), over traces sent
with the OpenTelemetry SDK. Pages are checked against the API, and a screenshot of each is saved under
``test-output/dashboard/`` (or ``$LUMINA_TEST_OUTPUT``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from lumina_core import NavItem, SpanPanel, hookimpl
from lumina_core.app import Lumina
from lumina_core.plugins import PluginHost, builtin_plugins
from lumina_core.server import Endpoints, LuminaServer
from tests.conftest import make_settings
from tests.support.browser import chromium, shot, watched_page

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 1">'


class DashboardPlugin:
    """A plugin adding a nav link and a span panel (whose rows carry markup that must stay text)."""

    @hookimpl
    def lumina_dashboard_nav_items(self) -> list[NavItem]:
        return [NavItem("Runbook", "/static/lumina.css")]

    @hookimpl
    def lumina_dashboard_span_panels(self) -> list[SpanPanel]:
        def rows(span: dict[str, Any]) -> list[tuple[str, str]] | None:
            if not span["is_llm"]:
                return None
            return [("Prompt chars", str(len(str(span["input_messages"])))), ("Note", XSS)]

        def broken(span: dict[str, Any]) -> list[tuple[str, str]]:
            raise RuntimeError("boom")

        return [SpanPanel("Prompt size", rows), SpanPanel("Broken panel", broken)]


# ---- traffic, sent with the OpenTelemetry SDK's OTLP/HTTP exporter ----


def sdk_tracer(server: Endpoints, service: str) -> tuple[Any, TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.otlp_http_url)))
    return provider.get_tracer("dashboard-tests"), provider


def llm_call(tracer: Any, provider: str, model: str, tokens: tuple[int, int], prompt: str, answer: str, **extra: Any):
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1],
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]),
        **extra,
    }
    with tracer.start_as_current_span(f"chat {model}", attributes=attributes):
        time.sleep(0.02)


def send_agent_trace(server: Endpoints) -> None:
    """support-bot: an agent run with two LLM calls (OpenAI, Anthropic) and a failing tool call."""
    tracer, provider = sdk_tracer(server, "support-bot")
    with tracer.start_as_current_span("agent.run", attributes={"user.id": "user-42"}):
        llm_call(tracer, "openai", "gpt-4o", (1200, 300), "Where is my order 123?", "Let me look it up.")
        with tracer.start_as_current_span("tool.lookup_order") as tool:
            time.sleep(0.01)
            tool.set_status(Status(StatusCode.ERROR, "order service timed out"))
        llm_call(
            tracer,
            "anthropic",
            "claude-3-5-sonnet-20241022",
            (800, 120),
            "Apologise for the delay.",
            "Sorry for the wait!",
        )
    provider.shutdown()


def send_simple_traces(server: Endpoints, service: str, model: str, n: int) -> None:
    tracer, provider = sdk_tracer(server, service)
    for i in range(n):
        with tracer.start_as_current_span("batch.item"):
            llm_call(tracer, "acme", model, (1000 + i, 100), f"Summarise item {i}", f"Summary {i}")
    provider.shutdown()


def send_hostile_trace(server: Endpoints, answer: str = XSS) -> None:
    """Markup in every place a span can carry text: span and service names, prompt, answer, attributes."""
    tracer, provider = sdk_tracer(server, f"svc {XSS}")
    with tracer.start_as_current_span(f"root {XSS}", attributes={"note": XSS, XSS: "key"}):
        llm_call(tracer, "openai", "gpt-4o", (10, 5), XSS, answer, **{"user.id": XSS})
    provider.shutdown()


# ---- fixtures ----


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """A Lumina (SQLite) with the test plugin, holding the agent trace and a few plain ones."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    settings = make_settings(tmp_path, **{"quality.detectors": ["exact_match"]})
    lumina = Lumina(settings, PluginHost([*builtin_plugins(), DashboardPlugin()], entry_points=False))
    with LuminaServer(lumina, log_level="warning").in_thread() as server:
        send_agent_trace(server)
        send_simple_traces(server, "batch-job", "acme-house-1", 3)
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, dashboard: Endpoints) -> Iterator[Any]:
    with watched_page(browser, dashboard.http_url, ["clipboard-read", "clipboard-write"]) as page:
        yield page


def api(server: Endpoints, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.http_url}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def eventually(check: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


# ---- tests ----


def test_overview_shows_the_api_totals_charts_and_unpriced_models(page: Any, dashboard: Endpoints) -> None:
    page.goto("/")
    totals = api(dashboard, "/api/v1/analytics")["data"][0]
    assert page.locator("#kpi-requests strong").inner_text() == str(totals["requests"])
    assert page.locator("#kpi-cost strong").inner_text().startswith("$")
    page.wait_for_selector("figure[data-chart='cost'] canvas")
    assert page.locator("figure[data-chart] canvas").count() == 5
    assert "acme/acme-house-1" in page.locator("#unpriced-warning").inner_text()
    assert "gpt-4o" in page.locator("#by-model").inner_text()
    assert "support-bot" in page.locator("#by-service").inner_text()
    assert page.locator("nav.pages a", has_text="Runbook").count() == 1  # the plugin's nav item
    shot(page, "overview")

    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") in ("dark", "light")
    shot(page, "overview-other-theme")
    page.click("#theme-toggle")


def test_trace_list_filters_sorts_and_keeps_filters_in_the_url(page: Any, dashboard: Endpoints) -> None:
    page.goto("/traces")
    assert page.locator("#trace-table tbody tr").count() == len(api(dashboard, "/api/v1/traces")["data"]) == 4
    page.select_option("#trace-filters select[name=service]", "batch-job")
    page.click("#trace-filters button")
    page.wait_for_url(re.compile(r"service=batch-job"))
    rows = page.locator("#trace-table tbody tr")
    expected = api(dashboard, "/api/v1/traces", service="batch-job")["data"]
    assert rows.count() == len(expected) == 3
    assert {rows.nth(i).get_attribute("data-trace-id") for i in range(3)} == {t["trace_id"] for t in expected}

    page.click("#trace-table th >> text=Cost")  # sort by cost, filters kept
    page.wait_for_url(re.compile(r"sort=-cost"))
    assert "service=batch-job" in page.url
    by_cost = api(dashboard, "/api/v1/traces", service="batch-job", sort="-cost")["data"]
    ids = [rows.nth(i).get_attribute("data-trace-id") for i in range(rows.count())]
    assert ids == [t["trace_id"] for t in by_cost]

    page.goto("/traces?limit=3")  # a page at a time, newest first, as the API pages
    first = [rows.nth(i).get_attribute("data-trace-id") for i in range(rows.count())]
    page.click("#next-page")
    page.wait_for_url(re.compile(r"cursor="))
    assert "limit=3" in page.url
    second = [rows.nth(i).get_attribute("data-trace-id") for i in range(rows.count())]
    assert first + second == [t["trace_id"] for t in api(dashboard, "/api/v1/traces")["data"]]
    assert len(first) == 3 and len(second) == 1 and page.locator("#next-page").count() == 0

    page.goto("/traces?status=error&range=1h")  # a shared URL opens the same view
    assert page.locator("#trace-filters select[name=status]").input_value() == "error"
    assert page.locator("#trace-table tbody tr").count() == 1
    page.goto("/traces?min_cost=abc")
    assert page.locator("#message").inner_text().startswith("min_cost: not a number")
    shot(page, "traces")


def test_trace_view_waterfall_and_span_panel_match_the_api(page: Any, dashboard: Endpoints) -> None:
    page.goto("/traces?service=support-bot")
    page.click("#trace-table tbody tr a")
    page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}"))
    trace_id = page.url.split("/traces/")[1][:32]
    trace = api(dashboard, f"/api/v1/traces/{trace_id}")

    spans = []
    stack = list(reversed(trace["spans"]))
    while stack:
        span = stack.pop()
        spans.append(span)
        stack.extend(reversed(span["children"]))
    rows = page.locator(".wf-row")
    assert rows.count() == len(spans) == 4
    assert [rows.nth(i).get_attribute("data-span-id") for i in range(4)] == [s["span_id"] for s in spans]
    assert [rows.nth(i).get_attribute("data-depth") for i in range(4)] == ["0", "1", "1", "1"]
    assert "status-row-error" in page.locator(".wf-row", has_text="tool.lookup_order").get_attribute("class")
    # bars to scale, as drawn: each starts at its offset into the trace and is as long as its share of it
    drawn = page.evaluate(
        """[...document.querySelectorAll('.wf-track svg')].map(svg => {
            const track = svg.getBoundingClientRect(), bar = svg.querySelector('rect').getBoundingClientRect();
            return [(bar.left - track.left) / track.width, bar.width / track.width];
        })"""
    )
    total = trace["end_time_unix_nano"] - trace["start_time_unix_nano"]
    for (offset, width), span in zip(drawn, spans, strict=True):
        assert offset == pytest.approx((span["start_time_unix_nano"] - trace["start_time_unix_nano"]) / total, abs=0.01)
        assert width == pytest.approx(max(span["latency_ms"] * 1e6 / total, 0.002), abs=0.01)

    claude = next(s for s in spans if s["model"] and s["model"].startswith("claude"))
    page.click(f".wf-row[data-span-id='{claude['span_id']}'] a")
    page.wait_for_url(re.compile(f"span={claude['span_id']}"))
    detail = api(dashboard, f"/api/v1/spans/{trace_id}/{claude['span_id']}")
    assert page.locator("#f-model").inner_text() == detail["model"]
    assert page.locator("#f-provider").inner_text() == "anthropic"
    for field in ("input_tokens", "output_tokens", "total_tokens"):
        assert page.locator(f"#f-tokens td[data-field={field}]").inner_text() == str(detail[field])
    assert float(page.locator("#f-cost").get_attribute("data-value")) == pytest.approx(detail["cost_usd"])
    assert page.locator("#f-rule").inner_text() == detail["pricing_rule"]
    assert page.locator("#f-finish").inner_text() == "stop"
    assert "Apologise for the delay." in page.locator("#chat .role-user").inner_text()
    assert "Sorry for the wait!" in page.locator("#chat .output").inner_text()
    assert page.locator(".plugin-panel", has_text="Prompt size").count() == 1
    assert "this panel failed: RuntimeError" in page.locator(".plugin-panel", has_text="Broken panel").inner_text()

    page.click("#span-id + button.copy")
    assert page.evaluate("navigator.clipboard.readText()") == claude["span_id"]
    shot(page, "trace")


def test_custom_price_editor_prices_new_calls(page: Any, dashboard: Endpoints) -> None:
    page.goto("/models")
    assert "acme/acme-house-1" in page.locator("#unpriced").inner_text()
    editor = page.locator("#editor")
    editor.locator("input[name=model]").fill("acme-house-1")
    editor.locator("input[name=input]").fill("2")
    editor.locator("input[name=output]").fill("10")
    editor.locator("button").click()
    page.wait_for_selector("#price-table tr[data-price-id]:has-text('acme-house-1')")
    (price,) = [p for p in api(dashboard, "/api/v1/pricing/custom")["data"] if p["model"] == "acme-house-1"]
    assert (price["input"], price["output"]) == (2.0, 10.0)

    page.click(f"#price-table tr[data-price-id='{price['id']}'] a:text-is('Edit')")
    page.wait_for_url(re.compile(f"edit={price['id']}"))
    page.locator("#editor input[name=input]").fill("3")
    page.locator("#editor button").click()
    page.wait_for_selector(f"#price-table tr[data-price-id='{price['id']}'] td:has-text('3.0')")

    page.locator("#editor input[name=model]").fill("(")
    page.locator("#editor select[name=match]").select_option("regex")
    page.locator("#editor input[name=input]").fill("1")
    page.locator("#editor input[name=output]").fill("1")
    page.locator("#editor button").click()
    assert "not a valid regular expression" in page.locator("#editor-error").inner_text()

    send_simple_traces(dashboard, "batch-job", "acme-house-1", 1)
    newest = eventually(lambda: api(dashboard, "/api/v1/spans", model="acme-house-1", limit=1)["data"])
    span = newest[0]
    assert span["cost_usd"] == pytest.approx((span["input_tokens"] * 3 + span["output_tokens"] * 10) / 1e6)
    page.goto(f"/traces/{span['trace_id']}?span={span['span_id']}")
    assert float(page.locator("#f-cost").get_attribute("data-value")) == pytest.approx(span["cost_usd"])
    assert "custom" in page.locator("#f-cost").inner_text()

    page.goto("/models")
    page.fill("#quote input[name=quote_model]", "acme-house-1")
    page.fill("#quote input[name=quote_input_tokens]", "1000000")
    page.click("#quote button")
    assert page.locator("#quote-result").inner_text().startswith("$3")
    shot(page, "models")

    page.click(f"#price-table tr[data-price-id='{price['id']}'] button:has-text('Delete')")
    page.wait_for_load_state()
    assert page.locator(f"#price-table tr[data-price-id='{price['id']}']").count() == 0


def test_span_content_never_runs_as_script(page: Any, dashboard: Endpoints) -> None:
    send_hostile_trace(dashboard)
    send_hostile_trace(dashboard, answer=XSS + " again")  # a drift from the first: both on the quality page
    eventually(lambda: len(api(dashboard, "/api/v1/quality/drifts")["data"]) == 1)
    trace = api(dashboard, "/api/v1/traces", q="window.__xss")["data"][0]
    root_id = trace["root_span_id"]
    llm = api(dashboard, "/api/v1/spans", llm="true", q="window.__xss")["data"][0]
    for path in (
        "/",
        "/traces",
        f"/traces?service={XSS}",
        f"/traces/{trace['trace_id']}?span={root_id}",
        f"/traces/{trace['trace_id']}?span={llm['span_id']}",
        "/models",
        "/quality",
    ):
        page.goto(path)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None, path
    page.goto(f"/traces/{trace['trace_id']}?span={llm['span_id']}")
    assert page.locator("#chat .role-user .content").inner_text() == XSS  # shown as text, not markup
    assert page.locator("#attributes").inner_text().count("window.__xss") >= 1
    page.goto("/quality")
    page.wait_for_selector("figure[data-chart='score'] canvas")
    assert page.locator("#drifts .side-by-side .content").nth(1).inner_text() == XSS + " again"
    shot(page, "quality")


def test_narrow_screen_and_login(browser: Any, tmp_path: Path) -> None:
    lumina = Lumina(make_settings(tmp_path), PluginHost(entry_points=False))
    with LuminaServer(lumina, log_level="warning").in_thread() as server:
        send_simple_traces(server, "phone-app", "gpt-4o-mini", 2)  # before the first key: open until then
        assert eventually(lambda: len(api(server, "/api/v1/traces")["data"]) == 2)
        made = httpx.post(f"{server.http_url}/api/v1/keys", json={"name": "ui", "scopes": ["read"]}).json()
        context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server.http_url)
        page = context.new_page()
        page.goto("/traces")
        page.wait_for_url(re.compile(r"/login\?next="))
        page.fill("input[name=key]", "lum_wrong")
        page.click("form.login button")
        assert "unknown or revoked" in page.locator("#login-error").inner_text()
        page.fill("input[name=key]", made["key"])
        page.click("form.login button")
        page.wait_for_url(re.compile(r"/traces$"))
        assert page.locator("#trace-table tbody tr").count() == 2
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], "the page must not scroll sideways on a phone"
        shot(page, "traces-narrow")
        page.goto("/models")
        assert page.locator("#editor").count() == 0  # a read key cannot change prices
        context.close()


def test_pages_forbid_inline_scripts_and_foreign_form_posts(dashboard: Endpoints) -> None:
    with httpx.Client(base_url=dashboard.http_url) as client:
        for path in ("/", "/traces", "/models", "/login"):
            policy = client.get(path).headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        price = {"model": "evil-model", "input": "0", "output": "0"}
        foreign = client.post("/models/prices", data=price, headers={"origin": "https://evil.example"})
        assert foreign.status_code == 403
        cross_site = client.post("/models/prices", data=price, headers={"sec-fetch-site": "cross-site"})
        assert cross_site.status_code == 403
        assert all(p["model"] != "evil-model" for p in api(dashboard, "/api/v1/pricing/custom")["data"])
        # after signing in, only paths on this server are followed
        assert client.get("/login", params={"next": "//evil.example/x"}).text.count('value="/"') == 1
        assert client.get("/login", params={"next": "/\t/evil.example"}).text.count('value="/"') == 1
        assert client.post("/logout", headers={"origin": "https://evil.example"}).status_code == 403
        foreign_login = client.post("/login", data={"key": "lum_x"}, headers={"sec-fetch-site": "cross-site"})
        assert foreign_login.status_code == 403


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        (None, "\u2013"),
        (0, "$0"),
        (1234.5, "$1,234"),
        (12.345, "$12.35"),
        (0.0123, "$0.0123"),
        (0.000042, "$0.000042"),
        (5.7e-06, "$0.0000057"),  # never 5.7e-06
        (1e-15, "<$0.0000001"),
    ],
)
def test_costs_are_written_for_people(usd: float | None, shown: str) -> None:
    from lumina_web.format import cost

    assert cost(usd) == shown
