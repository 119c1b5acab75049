"""The Replay pages in a real browser (Playwright driving Debian's headless Chromium): captured LLM calls
frozen as a set through the "New set" form, run again with another model through the "Run a set" form
against a fake OpenAI on 127.0.0.1 (the server's workers run it; the run's page reloads until it is done),
its summary and calls checked against ``/api/v1/replay``, a run cancelled, two runs compared, the forms'
refusals, and runs of other projects not found. Screenshots go under ``test-output/dashboard/``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lumina_core.testing.fake_llm import FakeLLM
from lumina_web import format as fmt
from lumina_web.replay import change, similarity
from tests.support.browser import chromium, shot, watched_page
from tests.test_replay import capture

SECRET = "sk-test-dashboard-replay-secret"
RUN_URL = re.compile(r"/replay/runs/\d+$")
WAIT_MS = 30_000


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def replaying(lumina_server: Callable[..., Any], llm: FakeLLM) -> Any:
    """A Lumina whose workers replay OpenAI calls against the fake provider."""
    executors = {"openai": {"api_key": SECRET, "base_url": llm.openai_base_url}}
    return lumina_server(settings={"replay_executors": executors})


@pytest.fixture
def api(replaying: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replaying.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, replaying: Any) -> Iterator[Any]:
    with watched_page(browser, replaying.http_url) as page:
        yield page


def new_set(page: Any, name: str, limit: str) -> None:
    page.goto("/replay")
    page.fill("#set-form input[name=name]", name)
    page.fill("#set-form input[name=service]", "support")
    page.fill("#set-form input[name=limit]", limit)
    page.click("#create-set")


def start_run(page: Any, **fields: str) -> int:
    """Start a run of the (newest) set through the form; its id, once on its page."""
    page.goto("/replay")
    for name, value in fields.items():
        page.fill(f"#run-form input[name={name}]", value)
    page.click("#start-run")
    page.wait_for_url(RUN_URL)
    return int(page.url.rsplit("/", 1)[1])


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def test_a_set_is_frozen_run_followed_and_compared_from_the_pages(
    page: Any, replaying: Any, llm: FakeLLM, api: httpx.Client
) -> None:
    capture(replaying, 5)
    page.goto("/replay")
    assert page.locator("nav.pages a[aria-current=page]").inner_text() == "Replay"
    assert "No sets yet" in text(page, "#set-table") and "No runs yet" in text(page, "#run-table")

    new_set(page, "support", "5")
    page.wait_for_url("**/replay?*done=*")
    assert text(page, "#replay-done") == "Set “support” froze 5 calls"
    row = page.locator("#set-table tr[data-set-id]")
    assert row.count() == 1
    assert "service=support · newest 5" in row.locator("td.selection").inner_text()
    assert row.locator("td.num").inner_text() == "5"

    # slow enough that the run's page shows it under way, then reloads itself until it is done
    llm.latency = 0.3
    reloads: list[str] = []
    page.on("framenavigated", lambda frame: reloads.append(frame.url) if frame == page.main_frame else None)
    mini = start_run(page, model="gpt-4o-mini", concurrency="1")
    assert page.locator("#run-state").get_attribute("data-state") in ("queued", "running")
    assert page.locator("#refreshing").count() == 1 and page.locator("#cancel-run").count() == 1
    page.wait_for_selector("#run-state[data-state=done]", timeout=WAIT_MS)
    assert sum(url.endswith(f"/replay/runs/{mini}") for url in reloads) >= 2, "the page reloaded itself"
    assert page.locator("#refreshing").count() == 0 and page.locator("#cancel-run").count() == 0
    llm.latency = 0

    detail = api.get(f"/api/v1/replay/runs/{mini}").json()
    summary = detail["summary"]
    assert summary["finished"] == 5 and summary["errors"] == 0 and summary["identical_share"] == 0
    assert text(page, "#k-finished") == "5/5"
    assert text(page, "#k-errors") == "0"
    assert text(page, "#k-identical") == "0.0%"
    assert text(page, "#k-similarity") == similarity(summary["mean_similarity"])
    assert text(page, "#k-original-cost") == fmt.cost(summary["original_cost_usd"])
    assert text(page, "#k-cost") == fmt.cost(summary["cost_usd"])
    assert text(page, "#k-cost-change") == change(summary["cost_change_pct"])
    assert text(page, "#k-cost-change").startswith("\u2212"), "gpt-4o-mini is cheaper than gpt-4o"
    assert text(page, "#k-latency-change") == change(summary["latency_change_pct"])
    assert text(page, "#k-p50") == fmt.ms(summary["latency_p50_ms"])
    assert text(page, "#k-p95") == fmt.ms(summary["latency_p95_ms"])
    assert text(page, "#run-overrides") == "model → gpt-4o-mini"

    items = page.locator("#item-table tbody.replay-item")
    assert items.count() == 5
    first = detail["items"][0]
    question = first["original"]["input_messages"][-1]["content"]
    answer = first["original"]["output_text"]
    assert answer == "answer " + question.split()[-1]
    item = page.locator("#item-table tbody.replay-item[data-position='0']")
    assert item.get_attribute("data-status") == "ok"
    assert text(item, "td.call .prompt") == question
    assert text(item, "td.original .output") == answer
    assert text(item, "td.original .model") == "gpt-4o"
    assert text(item, "td.replay .output") == f"[gpt-4o-mini] {question}"
    assert text(item, "td.replay .model") == "gpt-4o-mini"
    facts = item.locator("td.facts")
    assert facts.nth(0).inner_text().split()[0] == fmt.cost(first["original"]["cost_usd"])
    assert facts.nth(1).inner_text().split()[0] == fmt.cost(first["replay"]["cost_usd"])
    assert text(item, "td.match").startswith("changed")
    diff = item.locator("pre.diff")
    assert text(diff, ".d-del") == f"-{answer}"
    assert text(diff, ".d-add") == f"+[gpt-4o-mini] {question}"
    assert [text(diff, ".d-file >> nth=0"), text(diff, ".d-hunk")] == ["--- original", "@@ -1 +1 @@"]
    colours = {diff.locator(kind).first.evaluate("e => getComputedStyle(e).color") for kind in (".d-add", ".d-del")}
    assert len(colours) == 2, "added and removed lines are coloured apart"
    shot(page, "replay-run")

    # another model, then a run cancelled from its page
    full = start_run(page, model="gpt-4o", provider="openai", temperature="0.5")
    page.wait_for_selector("#run-state[data-state=done]", timeout=WAIT_MS)
    llm.latency = 0.5
    cancelled = start_run(page, concurrency="1")
    page.click("#cancel-run")  # asks first; the watched page accepts
    page.wait_for_selector("#run-state[data-state=cancelled]", timeout=WAIT_MS)
    assert api.get(f"/api/v1/replay/runs/{cancelled}").json()["run"]["state"] == "cancelled"
    assert page.locator("#cancel-run").count() == 0

    page.goto(f"/replay/runs/{mini}")
    options = page.locator("#compare-form select[name=b] option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [str(cancelled), str(full)]
    page.select_option("#compare-form select[name=b]", str(full))
    page.click("#compare")
    page.wait_for_url(f"**/replay/compare?a={mini}&b={full}")
    other = api.get(f"/api/v1/replay/runs/{full}").json()["summary"]
    for metric, key, shown in (
        ("Finished", None, "5/5"),
        ("Identical", None, "0.0%"),
        ("Cost change", "cost_change_pct", None),
        ("Latency change", "latency_change_pct", None),
    ):
        row = page.locator(f"#compare-summary tr[data-metric='{metric}']")
        expected = (shown, shown) if key is None else (change(summary[key]), change(other[key]))
        assert (text(row, "td.a"), text(row, "td.b")) == expected, metric
    assert "model → gpt-4o, provider → openai, temperature → 0.5" in text(page, "#head-b")
    compared = page.locator("#compare-items tbody.replay-item[data-position='0']")
    assert text(compared, "td.original .output") == answer
    assert text(compared, "td.run-a .output") == f"[gpt-4o-mini] {question}"
    assert text(compared, "td.run-b .output") == f"[gpt-4o] {question}"
    assert page.locator("#compare-items tbody.replay-item").count() == 5
    shot(page, "replay-compare")

    page.goto("/replay")
    runs = page.locator("#run-table tr[data-run-id]")
    assert [runs.nth(i).get_attribute("data-run-id") for i in range(3)] == [str(cancelled), str(full), str(mini)]
    done = page.locator(f"#run-table tr[data-run-id='{mini}']")
    assert done.get_attribute("data-state") == "done"
    assert text(done, "td.overrides") == "model → gpt-4o-mini"
    progress = done.locator("progress")
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("5", "5")
    assert text(done, ".progress-text") == "5/5"
    assert page.locator(f"#run-table tr[data-run-id='{cancelled}']").get_attribute("data-state") == "cancelled"
    assert "support · 5 calls" in text(page, "#run-form select[name=set_id]")
    shot(page, "replay")


def test_the_forms_refuse_bad_values_and_runs_of_other_projects_are_not_found(
    page: Any, replaying: Any, api: httpx.Client
) -> None:
    capture(replaying, 2)
    with page.expect_response(lambda r: r.url.endswith("/replay/sets")) as refused:
        new_set(page, "tiny", "0")
    assert refused.value.status == 422
    assert "limit: Input should be greater than or equal to 1" in text(page, "#set-errors")
    assert page.locator("#set-form input[name=name]").input_value() == "tiny", "the form keeps what was typed"

    new_set(page, "tiny", "2")
    page.wait_for_url("**/replay?*done=*")
    page.fill("#run-form input[name=model]", "gpt-4o-mini")
    page.fill("#run-form input[name=temperature]", "5")
    page.fill("#run-form input[name=concurrency]", "many")
    with page.expect_response(lambda r: r.url.endswith("/replay/runs")) as refused:
        page.click("#start-run")
    assert refused.value.status == 422
    errors = text(page, "#run-errors")
    assert "temperature: Input should be less than or equal to 2" in errors
    assert "concurrency: Input should be a valid integer" in errors
    assert page.locator("#run-form input[name=model]").input_value() == "gpt-4o-mini"
    shot(page, "replay-refused")
    assert api.get("/api/v1/replay/runs").json()["data"] == []

    (replay_set,) = api.get("/api/v1/replay/sets").json()["data"]
    run = api.post("/api/v1/replay/runs", json={"set_id": replay_set["id"]}).json()
    for path, status, message in (
        (f"/replay/runs/{run['id']}?project=other", 404, f"no replay run {run['id']} in project other"),
        ("/replay/runs/nope", 404, "no replay run nope"),
        (f"/replay/compare?a={run['id']}&b=999999", 404, "no replay run 999999"),
        ("/replay/compare", 400, "choose two runs"),
    ):
        response = api.get(path)
        assert response.status_code == status, path
        page.goto(path)
        assert message in text(page, "#message"), path

    foreign = api.post("/replay/sets", data={"name": "evil", "limit": "5"}, headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    cancel = api.post(f"/replay/runs/{run['id']}/cancel", headers={"sec-fetch-site": "cross-site"})
    assert cancel.status_code == 403
    assert [s["name"] for s in api.get("/api/v1/replay/sets").json()["data"]] == ["tiny"]

    # a read-only key sees the runs but no forms, and cannot post them
    admin = api.post("/api/v1/keys", json={"name": "admin", "scopes": ["admin"]}).json()["key"]
    made = api.post("/api/v1/keys", json={"name": "viewer", "scopes": ["read"]}, headers={"x-lumina-api-key": admin})
    viewer = {"x-lumina-api-key": made.json()["key"]}
    listing = api.get("/replay", headers=viewer)
    assert listing.status_code == 200 and f'data-run-id="{run["id"]}"' in listing.text
    assert 'id="set-form"' not in listing.text and 'id="run-form"' not in listing.text
    assert api.post("/replay/sets", data={"name": "x"}, headers=viewer).status_code == 403
