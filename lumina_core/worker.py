"""The worker: consume span batches, extract, price, store, then ack — one transaction per group of batches."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lumina_core.alerting.engine import AlertEngine
from lumina_core.extraction import ExtractStage
from lumina_core.plugin_api import BatchRejected, Delivery, QueueBackend, QueueUnavailable
from lumina_core.pricing import PriceStage
from lumina_core.quality import Call, QualityMonitor, call_of
from lumina_core.sampling import HeadSampling
from lumina_core.storage.writer import PreparedRows, SpanWriter

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One batch ready to store, with what is handed on once it is stored."""

    project_id: str
    rows: PreparedRows
    quality_calls: list[Call]
    llm_calls: list[dict[str, Any]]
    """LLM spans for the alert rules checked per call (empty when there are none)."""


class Worker:
    """Runs the pipeline stages over everything the queue delivers until it is stopped.

    Concurrent export requests share one transaction (group commit). When that transaction fails,
    each request's batch is retried on its own, so one bad batch cannot fail its neighbours.
    Extraction of the next group overlaps the commit of the previous one; commits stay in order.
    """

    def __init__(
        self,
        queue: QueueBackend,
        extract: ExtractStage,
        price: PriceStage,
        writer: SpanWriter,
        batch_max_spans: int,
        quality: QualityMonitor | None = None,
        alerts: AlertEngine | None = None,
        sampling: HeadSampling | None = None,
    ):
        self.queue = queue
        self.extract = extract
        self.price = price
        self.sampling = sampling or HeadSampling([])
        self.writer = writer
        self.batch_max_spans = batch_max_spans
        self.quality = quality
        self.alerts = alerts
        self.spans_stored = 0
        self.backoff_seconds = 0.0
        """While storage is unavailable, how long to wait before taking more batches (doubling to
        ``MAX_BACKOFF_SECONDS``, 0 once a batch is stored again): no churning through the queue meanwhile."""

    async def run(self) -> None:
        storing: asyncio.Task[None] | None = None
        try:
            async for group in self.queue.consume(self.batch_max_spans):
                prepared = await asyncio.to_thread(self._prepare, group)
                ready = []
                for delivery, rows in zip(group, prepared, strict=True):
                    if isinstance(rows, Exception):
                        await delivery.nack(BatchRejected(f"spans could not be processed: {rows}"), retryable=False)
                    else:
                        ready.append((delivery, rows))
                if storing is not None:
                    await storing
                    storing = None
                if self.backoff_seconds:
                    await asyncio.sleep(self.backoff_seconds)
                if ready:
                    storing = asyncio.create_task(self._store(ready))
        finally:
            if storing is not None:
                await storing

    def _prepare(self, group: list[Delivery]) -> list[Prepared | Exception]:
        """Extract, price, sample, pick the calls to check for quality and alerts, and make driver parameters (all
        CPU, run off the event loop), batch by batch, so that a batch that cannot be processed fails alone."""
        prepared: list[Prepared | Exception] = []
        watch_calls = self.alerts is not None and bool(self.alerts.immediate)
        for delivery in group:
            try:
                rows = self.extract.rows(delivery.batch)
                self.price.apply(rows)
                project_id = delivery.batch.project_id
                rows, dropped = self.sampling.apply(project_id, rows)
                quality = self.quality
                calls = [
                    c
                    for row in rows
                    if quality and quality.checks(row["service_name"]) and (c := call_of(project_id, row))
                ]
                llm_calls = [row for row in rows if row["is_llm"]] if watch_calls else []
                prepared.append(Prepared(project_id, self.writer.prepare(rows, dropped), calls, llm_calls))
            except Exception as exc:
                log.exception("a batch of %d spans could not be processed", len(delivery.batch.spans))
                prepared.append(exc)
        return prepared

    async def _store(self, items: list[tuple[Delivery, Prepared]]) -> None:
        stored = await self._write([(delivery, prepared.rows) for delivery, prepared in items])
        done = [prepared for (_, prepared), ok in zip(items, stored, strict=True) if ok]
        if self.quality is not None:  # checked in the monitor's own task: neither exporters nor the worker wait
            self.quality.submit([call for prepared in done for call in prepared.quality_calls])
        if self.alerts is not None:
            for prepared in done:
                if prepared.llm_calls:
                    self.alerts.observe(prepared.project_id, prepared.llm_calls)

    async def _write(self, items: list[tuple[Delivery, PreparedRows]]) -> list[bool]:
        """Store the batches in one transaction (one by one if that fails); ack or nack each. Returns
        which were stored."""
        try:
            await self.writer.write(*(rows for _, rows in items))
        except Exception as exc:
            if _retryable(exc) or len(items) == 1:
                for delivery, _ in items:
                    await self._fail(delivery, exc)
                return [False] * len(items)
            log.warning("group commit of %d batches failed (%s); retrying one by one", len(items), exc)
            stored = []
            for delivery, rows in items:
                try:
                    await self.writer.write(rows)
                except Exception as single_exc:
                    await self._fail(delivery, single_exc)
                    stored.append(False)
                else:
                    await self._done(delivery, rows.count)
                    stored.append(True)
            return stored
        for delivery, rows in items:
            await self._done(delivery, rows.count)
        return [True] * len(items)

    async def _done(self, delivery: Delivery, count: int) -> None:
        self.spans_stored += count
        self.backoff_seconds = 0.0
        await delivery.ack()

    async def _fail(self, delivery: Delivery, exc: Exception) -> None:
        log.error("storing a batch of %d spans failed: %s", len(delivery.batch.spans), exc)
        if _retryable(exc):
            self.backoff_seconds = min(max(self.backoff_seconds * 2, 0.5), MAX_BACKOFF_SECONDS)
            await delivery.nack(QueueUnavailable(f"storage unavailable: {exc.__class__.__name__}"), retryable=True)
        else:
            await delivery.nack(BatchRejected(f"spans could not be stored: {exc.__class__.__name__}"), retryable=False)


MAX_BACKOFF_SECONDS = 20.0

RETRYABLE_SQLSTATES = ("08", "53", "57P0", "40001", "40P01")
"""Connection failures, out of resources, the server shutting down or starting up, serialization
failures and deadlocks: PostgreSQL states after which the same batch may well be stored."""


def _retryable(exc: Exception) -> bool:
    """Storage being down, restarting or busy (worth a retry), as opposed to data it will never accept.
    A PostgreSQL restart surfaces as a bare ``DBAPIError`` carrying SQLSTATE 57P01 or 08003."""
    if isinstance(exc, OperationalError | InterfaceError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or ""
        return exc.connection_invalidated or state.startswith(RETRYABLE_SQLSTATES)
    return False
