"""``/api/v1/queue`` and the dashboard's Queue page: status, and the NATS queue's dead letters listed,
re-driven and discarded, through the API and by clicking in Chromium."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import nats
import pytest

from lumina_core.api.queue import visible
from lumina_core.auth import Access
from lumina_core.plugin_api import DeadLetter
from lumina_core.server import Endpoints
from tests.support.browser import chromium, shot, watched_page

lumina_queue_nats = pytest.importorskip("lumina_queue_nats", reason="contrib/lumina-queue-nats is not installed")
from lumina_queue_nats.testing import SHARED_NATS_URL, delete_streams, shared_nats, unique_names  # noqa: E402


@pytest.fixture
def nats_names() -> Iterator[dict[str, str]]:
    url = shared_nats()
    names = unique_names()
    yield names
    asyncio.run(delete_streams(url, names))


@pytest.fixture
def nats_server(lumina_factory: Callable[..., Endpoints], nats_names: dict[str, str]) -> Endpoints:
    queue = {"queue.type": "nats", "queue.servers": [SHARED_NATS_URL], "queue.fetch_timeout_seconds": 0.2}
    queue |= {f"queue.{key}": value for key, value in nats_names.items()}
    return lumina_factory(**queue, **{"plugins.entry_points": True})


def publish_poison(names: dict[str, str], *payloads: bytes) -> None:
    async def run() -> None:
        nc = await nats.connect(SHARED_NATS_URL)
        for payload in payloads:
            await nc.jetstream().publish(names["subject"], payload)
        await nc.close()

    asyncio.run(run())


def wait_for_letters(api: httpx.Client, n: int) -> list[dict]:
    deadline = time.monotonic() + 15
    while True:
        letters = api.get("/api/v1/queue/dead-letters").json()["data"]
        if len(letters) >= n or time.monotonic() > deadline:
            return letters
        time.sleep(0.1)


def test_the_memory_queue_reports_its_backlog_and_keeps_no_dead_letters(sqlite_server: Endpoints) -> None:
    with httpx.Client(base_url=sqlite_server.http_url) as api:
        status = api.get("/api/v1/queue").json()
        assert status == {
            "type": "memory",
            "ok": True,
            "waiting_spans": 0,
            "waiting_batches": None,
            "error": None,
            "keeps_dead_letters": False,
        }
        refused = api.get("/api/v1/queue/dead-letters")
        assert refused.status_code == 404 and "keeps no dead letters" in refused.json()["error"]["message"]
        metrics = api.get("/metrics").text
        assert "lumina_queue_up 1.0" in metrics and "lumina_queue_depth_spans 0.0" in metrics


def test_dead_letters_are_listed_redriven_and_discarded(nats_server: Endpoints, nats_names: dict) -> None:
    publish_poison(nats_names, b"not a batch", b'{"project_id": "default"}')
    with httpx.Client(base_url=nats_server.http_url) as api:
        letters = wait_for_letters(api, 2)
        assert [letter["reason"].startswith("not a span batch") for letter in letters] == [True, True]
        assert letters[0]["size_bytes"] == len(b"not a batch") and letters[0]["project_id"] is None
        assert api.get("/api/v1/queue").json()["keeps_dead_letters"] is True
        ready = api.get("/-/ready").json()["checks"]["queue"]
        assert ready["ok"] is True

        # Re-driven, an undecodable message fails again and comes back as a new dead letter.
        moved = api.post("/api/v1/queue/dead-letters/redrive", json={"ids": [letters[0]["id"], "424242"]})
        assert moved.json() == {"redriven": 1}
        again = wait_for_letters(api, 2)
        assert letters[0]["id"] not in {letter["id"] for letter in again}
        assert len(again) == 2

        gone = api.post("/api/v1/queue/dead-letters/discard", json={"ids": [x["id"] for x in again]})
        assert gone.json() == {"discarded": 2}
        assert api.get("/api/v1/queue/dead-letters").json()["data"] == []
        bad = api.post("/api/v1/queue/dead-letters/discard", json={"ids": []})
        assert bad.status_code == 422


def test_a_key_sees_its_own_projects_dead_letters_and_the_operator_those_of_no_project() -> None:
    def letter(project: str | None) -> DeadLetter:
        return DeadLetter("1", "refused", datetime.now(UTC), 1, 10, project, 1)

    key_of_a = Access("a", frozenset({"admin"}), key_id=7)
    assert visible(letter("a"), key_of_a)
    assert not visible(letter("b"), key_of_a) and not visible(letter(None), key_of_a)
    assert visible(letter(None), Access("default", frozenset({"admin"}), key_id=8))
    assert visible(letter("b"), Access("default", frozenset({"admin"})))  # open mode


def test_the_queue_page_shows_dead_letters_and_discards_them(nats_server: Endpoints, nats_names: dict) -> None:
    publish_poison(nats_names, b"\x00garbage one", b"\x00garbage two")
    with httpx.Client(base_url=nats_server.http_url) as api:
        wait_for_letters(api, 2)
    with chromium() as browser, watched_page(browser, nats_server.http_url) as page:
        page.goto("/queue")
        assert page.locator("nav a[aria-current=page]").inner_text() == "Queue"
        rows = page.locator("#dead-letters tr[data-dead-letter]")
        assert rows.count() == 2
        assert "not a span batch" in rows.first.inner_text()
        shot(page, "queue")
        rows.first.locator("input[type=checkbox]").check()
        page.click("#discard")  # asks first; the watched page accepts
        page.wait_for_url("**/queue?*done=*")
        assert page.locator("#queue-done").inner_text() == "1 discarded"
        assert page.locator("#dead-letters tr[data-dead-letter]").count() == 1
        page.locator("#dead-letters input[type=checkbox]").check()
        page.click("#redrive")
        page.wait_for_url("**/queue?*done=1+put*")
        assert "1 put back on the queue" in page.locator("#queue-done").inner_text()
