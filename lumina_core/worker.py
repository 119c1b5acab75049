"""The worker: consume span batches, extract, price, store, then ack — one transaction per group of batches."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import DBAPIError, OperationalError

from lumina_core.extraction import ExtractStage
from lumina_core.plugin_api import Delivery, QueueBackend, QueueUnavailable
from lumina_core.pricing import PriceStage
from lumina_core.storage.writer import PreparedRows, SpanWriter

log = logging.getLogger(__name__)


class Worker:
    """Runs the pipeline stages over everything the queue delivers until it is stopped.

    Concurrent export requests share one transaction (group commit). When that transaction fails,
    each request's batch is retried on its own, so one bad batch cannot fail its neighbours.
    Extraction of the next group overlaps the commit of the previous one; commits stay in order.
    """

    def __init__(
        self, queue: QueueBackend, extract: ExtractStage, price: PriceStage, writer: SpanWriter, batch_max_spans: int
    ):
        self.queue = queue
        self.extract = extract
        self.price = price
        self.writer = writer
        self.batch_max_spans = batch_max_spans
        self.spans_stored = 0

    async def run(self) -> None:
        storing: asyncio.Task[None] | None = None
        try:
            async for group in self.queue.consume(self.batch_max_spans):
                rows = await self._extract(group)
                if storing is not None:
                    await storing
                    storing = None
                if rows is not None:
                    storing = asyncio.create_task(self._store(group, rows))
        finally:
            if storing is not None:
                await storing

    async def process(self, group: list[Delivery]) -> None:
        """Extract and store one group of deliveries, acking or nacking each."""
        rows = await self._extract(group)
        if rows is not None:
            await self._store(group, rows)

    def _rows(self, group: list[Delivery]) -> list[PreparedRows]:
        """The extract and price stages, and the rows' driver parameters: all CPU, run off the event loop."""
        prepared = []
        for delivery in group:
            rows = self.extract.rows(delivery.batch)
            self.price.apply(rows)
            prepared.append(self.writer.prepare(rows))
        return prepared

    async def _extract(self, group: list[Delivery]) -> list[PreparedRows] | None:
        try:
            return await asyncio.to_thread(self._rows, group)
        except Exception as exc:  # an extractor bug must not stall the queue
            log.exception("extraction failed")
            for delivery in group:
                await delivery.nack(exc, retryable=False)
            return None

    async def _store(self, group: list[Delivery], rows: list[PreparedRows]) -> None:
        try:
            await self.writer.write(*rows)
        except Exception as exc:
            if len(group) == 1:
                await self._fail(group[0], exc)
                return
            log.warning("group commit of %d batches failed (%s); retrying one by one", len(group), exc)
            for delivery, batch_rows in zip(group, rows, strict=True):
                try:
                    await self.writer.write(batch_rows)
                except Exception as single_exc:
                    await self._fail(delivery, single_exc)
                else:
                    await self._done(delivery, batch_rows.count)
            return
        for delivery, batch_rows in zip(group, rows, strict=True):
            await self._done(delivery, batch_rows.count)

    async def _done(self, delivery: Delivery, count: int) -> None:
        self.spans_stored += count
        await delivery.ack()

    async def _fail(self, delivery: Delivery, exc: Exception) -> None:
        retryable = isinstance(exc, OperationalError | OSError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        log.error("storing a batch of %d spans failed: %s", len(delivery.batch.spans), exc)
        error = QueueUnavailable(f"storage failed: {exc.__class__.__name__}") if retryable else exc
        await delivery.nack(error, retryable=retryable)
