"""The in-process queue backend: ``put`` resolves once a worker in this process has committed the batch."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from pydantic import Field

from lumina_core import (
    ComponentConfig,
    ComponentFactory,
    Delivery,
    QueueFull,
    QueueStatus,
    QueueUnavailable,
    SpanBatch,
    hookimpl,
)


class MemoryQueueConfig(ComponentConfig):
    max_pending_spans: int = Field(100_000, gt=0, description="spans waiting or being stored before 503")
    retry_after_seconds: float = Field(1.0, gt=0, description="the Retry-After given to clients when full")


class MemoryDelivery:
    def __init__(self, batch: SpanBatch, future: asyncio.Future[None], queue: MemoryQueue):
        self.batch = batch
        self._future = future
        self._queue = queue

    async def ack(self) -> None:
        self._settle(None)

    async def nack(self, error: Exception, *, retryable: bool = True) -> None:
        self._settle(error)

    def _settle(self, error: Exception | None) -> None:
        self._queue._release(len(self.batch.spans))
        if self._future.done():  # the client went away; its spans are stored all the same
            return
        if error is None:
            self._future.set_result(None)
        else:
            self._future.set_exception(error)


class MemoryQueue:
    """A bounded FIFO of batches; capacity counts spans waiting *and* being stored, so memory is bounded."""

    def __init__(self, config: MemoryQueueConfig) -> None:
        self.config = config
        self._waiting: deque[MemoryDelivery] = deque()
        self._pending_spans = 0
        self._wakeup = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def stop(self) -> None:
        self._closed = True
        self._wakeup.set()
        while self._waiting:
            await self._waiting.popleft().nack(QueueUnavailable("shutting down"))

    def status(self) -> QueueStatus:
        return QueueStatus(ok=not self._closed, waiting_spans=self._pending_spans)

    async def put(self, batch: SpanBatch) -> None:
        if self._closed:
            raise QueueUnavailable("shutting down", self.config.retry_after_seconds)
        size = len(batch.spans)
        # A single batch larger than the whole capacity is still taken when nothing else waits.
        if self._pending_spans and self._pending_spans + size > self.config.max_pending_spans:
            raise QueueFull(
                f"ingest queue is full ({self._pending_spans} spans pending)", self.config.retry_after_seconds
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(MemoryDelivery(batch, future, self))
        self._pending_spans += size
        self._wakeup.set()
        await future

    async def consume(self, max_spans: int) -> AsyncIterator[list[Delivery]]:
        while not self._closed:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group: list[Delivery] = [self._waiting.popleft()]
            taken = len(group[0].batch.spans)
            while self._waiting and taken + len(self._waiting[0].batch.spans) <= max_spans:
                delivery = self._waiting.popleft()
                taken += len(delivery.batch.spans)
                group.append(delivery)
            yield group

    def _release(self, spans: int) -> None:
        self._pending_spans -= spans


@hookimpl
def lumina_register_queue_backends() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="memory",
            create=lambda ctx, config: MemoryQueue(config),
            config_model=MemoryQueueConfig,
            description="In-process queue: zero setup, one process; clients are answered after commit.",
        )
    ]
