"""The NATS queue against a real nats-server: the contract, splitting, a full stream, redelivery, dead
letters (poison, refused, too many deliveries; list, re-drive, discard), an outage, and discovery."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import lumina_queue_nats
import pytest
from lumina_queue_nats import PROJECT, NatsQueue, NatsQueueConfig
from lumina_queue_nats.testing import SHARED_NATS_URL, NatsServer, delete_streams, reachable, unique_names

from lumina_core import BatchRejected, QueueFull, QueueUnavailable, SpanBatch
from lumina_core.config import PluginSettings
from lumina_core.plugins import PluginHost
from lumina_core.testing.contracts import QueueBackendContract, make_span


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's NATS (127.0.0.1:4222) when it runs, else a server of these tests' own."""
    if reachable(SHARED_NATS_URL):
        yield SHARED_NATS_URL
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"NATS is not reachable at {SHARED_NATS_URL} (CI must run the NATS tests)")
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def queue_config(url: str, **overrides: Any) -> NatsQueueConfig:
    return NatsQueueConfig(servers=[url], fetch_timeout_seconds=0.2, **unique_names(), **overrides)


@pytest.fixture
async def make_queue(nats_url: str) -> AsyncIterator[Any]:
    made: list[NatsQueue] = []

    def make(**overrides: Any) -> NatsQueue:
        queue = NatsQueue(queue_config(nats_url, **overrides))
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.stop()
        await delete_streams(nats_url, queue.config.model_dump())


class TestNatsQueueContract(QueueBackendContract):
    type_name = "nats"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_queue_nats

    @pytest.fixture
    def queue(self, make_queue: Any) -> NatsQueue:
        return make_queue()


def batch(n: int, project: str = "default", size: int = 10) -> SpanBatch:
    return SpanBatch(project, [make_span({"i": i, "text": "x" * size}) for i in range(n)])


async def take(queue: NatsQueue, want_spans: int, *, nack: bool = False, timeout: float = 20) -> list[SpanBatch]:
    """Consume until ``want_spans`` spans arrived, acking (or retryably nacking) each delivery."""
    got: list[SpanBatch] = []

    async def run() -> None:
        async for group in queue.consume(10_000):
            for delivery in group:
                got.append(delivery.batch)
                if nack:
                    await delivery.nack(QueueUnavailable("storage down"), retryable=True)
                else:
                    await delivery.ack()
            if sum(len(b.spans) for b in got) >= want_spans:
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_a_batch_larger_than_a_message_is_split_and_every_span_arrives(make_queue: Any) -> None:
    queue = make_queue()
    await queue.start()
    big = batch(800, size=4000)  # about 3.5 MB, over NATS's 1 MB message limit
    await queue.put(big)
    got = await take(queue, 800)
    assert len(got) > 1
    assert sorted(s.attributes["i"] for b in got for s in b.spans) == list(range(800))


async def test_a_full_stream_pushes_back_with_queue_full_and_keeps_what_it_has(make_queue: Any) -> None:
    queue = make_queue(max_bytes=50_000)
    await queue.start()
    await queue.put(batch(10, size=2000))
    with pytest.raises(QueueFull, match="full"):
        for _ in range(10):
            await queue.put(batch(10, size=2000))
    got = await take(queue, 10)
    assert got[0].spans[0].attributes["i"] == 0, "discard=new: the oldest batch is still there"


async def test_retryable_failures_are_redelivered_then_dead_lettered_after_max_deliver(make_queue: Any) -> None:
    queue = make_queue(max_deliver=3, retry_delay_seconds=0.05)
    await queue.start()
    await queue.put(batch(2))
    redelivered = await take(queue, 6, nack=True)  # three deliveries of 2 spans, each failing
    assert len(redelivered) == 3
    letters = await wait_for_letters(queue, 1)
    assert letters[0].deliveries == 3 and letters[0].spans == 2 and letters[0].project_id == "default"
    assert "storage down" in letters[0].reason

    assert await queue.redrive([letters[0].id]) == 1
    assert await queue.dead_letters() == []
    assert [len(b.spans) for b in await take(queue, 2)] == [2]


async def test_a_refused_batch_is_dead_lettered_at_once_and_can_be_discarded(make_queue: Any) -> None:
    queue = make_queue()
    await queue.start()
    await queue.put(batch(1, project="p1"))

    async def refuse() -> None:
        async for group in queue.consume(100):
            await group[0].nack(BatchRejected("not valid UTF-8"), retryable=False)
            return

    await asyncio.wait_for(refuse(), 10)
    [letter] = await wait_for_letters(queue, 1)
    assert letter.project_id == "p1" and letter.reason == "not valid UTF-8" and letter.deliveries == 1
    assert await queue.discard([letter.id, "999999", "not-a-number"]) == 1
    assert await queue.dead_letters() == []


async def test_a_poison_message_goes_to_the_dead_letters_without_blocking_the_stream(make_queue: Any) -> None:
    queue = make_queue()
    await queue.start()
    assert queue._nc is not None
    await queue._nc.jetstream().publish(queue.config.subject, b"\x00 not json", headers={PROJECT: "p9"})
    await queue.put(batch(3))
    got = await take(queue, 3)
    assert [len(b.spans) for b in got] == [3]
    [letter] = await wait_for_letters(queue, 1)
    assert letter.spans is None and "not a span batch" in letter.reason
    assert letter.project_id == "p9", "the project it was published for: only that project's admins see it"


async def test_dead_letters_are_listed_past_the_gaps_discarding_leaves(make_queue: Any) -> None:
    queue = make_queue()
    await queue.start()
    for project in ("p1", "p2", "p3"):
        await queue.put(batch(1, project=project))

    async def refuse_all() -> None:
        refused = 0
        async for group in queue.consume(100):
            for delivery in group:
                await delivery.nack(BatchRejected("refused"), retryable=False)
                refused += 1
            if refused == 3:
                return

    await asyncio.wait_for(refuse_all(), 10)
    first, middle, last = await wait_for_letters(queue, 3)
    assert await queue.discard([middle.id]) == 1
    assert [letter.id for letter in await queue.dead_letters()] == [first.id, last.id]


async def test_a_batch_that_keeps_killing_its_worker_is_dead_lettered(make_queue: Any) -> None:
    """Deliveries that are never settled (the worker died) count too; past max_deliver the batch is set aside."""
    queue = make_queue(max_deliver=2, ack_wait_seconds=0.3)
    await queue.start()
    await queue.put(batch(1))

    async def never_settle() -> None:
        seen = 0
        async for _group in queue.consume(100):
            seen += 1
            if seen == 2:
                return

    await asyncio.wait_for(never_settle(), 10)
    await asyncio.sleep(0.5)  # past ack_wait: the third delivery is due before the next batch
    await queue.put(batch(5))
    assert [len(b.spans) for b in await take(queue, 5)] == [5]
    [letter] = await wait_for_letters(queue, 1)
    assert "delivered 3 times" in letter.reason


async def wait_for_letters(queue: NatsQueue, n: int, timeout: float = 10) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        letters = await queue.dead_letters()
        if len(letters) >= n or asyncio.get_running_loop().time() > deadline:
            return letters
        await asyncio.sleep(0.1)


async def test_without_nats_put_is_unavailable_and_the_queue_recovers_when_nats_comes(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    queue = NatsQueue(queue_config(server.url, connect_timeout_seconds=1))
    await queue.start()  # NATS not there yet: start-up goes on, retrying in the background
    try:
        assert not queue.status().ok
        with pytest.raises(QueueUnavailable):
            await queue.put(batch(1))
        server.start()
        await put_retrying(queue, batch(1))
        assert len(await take(queue, 1)) == 1

        server.stop()  # and down again while connected
        for _ in range(50):
            if not queue.status().ok:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(QueueUnavailable):
            await queue.put(batch(1))
        assert "NATS" in (queue.status().error or "")
        server.start()
        await put_retrying(queue, batch(2))  # as exporters do: JetStream answers a moment after reconnecting
        assert [len(b.spans) for b in await take(queue, 2)] == [2]
    finally:
        await queue.stop()
        server.stop()


async def put_retrying(queue: NatsQueue, spans: SpanBatch, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await queue.put(spans)
        except QueueUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_is_discovered_through_its_entry_point_as_its_own_distribution() -> None:
    host = PluginHost.configured(PluginSettings())
    factory = host.factory("queue_backend", "nats")
    assert factory.config_model is NatsQueueConfig
    [info] = [p for p in host.describe([]) if p.name == "queue_nats"]
    assert info.distribution == "lumina-queue-nats"
