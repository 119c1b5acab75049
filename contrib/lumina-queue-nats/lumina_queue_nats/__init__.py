"""Lumina's queue on NATS JetStream: intake processes publish span batches to a stream and answer their
clients once JetStream has stored them; worker processes share one durable pull consumer and ack each
message after its spans are committed. What fails for good goes to a dead-letter stream, from which the
API and the dashboard list it, put it back or discard it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError
from pydantic import Field

from lumina_core import (
    BatchRejected,
    ComponentConfig,
    ComponentFactory,
    DeadLetter,
    QueueFull,
    QueueStatus,
    QueueUnavailable,
    SpanBatch,
    hookimpl,
)

log = logging.getLogger(__name__)

REASON = "Lumina-Dead-Reason"
DELIVERIES = "Lumina-Deliveries"
PROJECT = "Lumina-Project"
SPANS = "Lumina-Spans"
PAYLOAD_HEADROOM = 4096
"""Bytes of a message's allowance kept for headers and framing."""


class NatsQueueConfig(ComponentConfig):
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    stream: str = Field("LUMINA_SPANS", description="the JetStream stream of span batches (created if missing)")
    subject: str = "lumina.spans"
    replicas: int = Field(1, ge=1, le=5, description="copies of each message in a NATS cluster")
    max_age_seconds: float = Field(86_400, gt=0, description="a batch no worker took within this is dropped")
    max_bytes: int = Field(
        1024**3, gt=0, description="stream size; when full, intake answers 503 (discard=new), never drops"
    )
    durable: str = Field("lumina-workers", description="the pull consumer every worker process shares")
    ack_wait_seconds: float = Field(60, gt=0, description="an unacked batch is delivered again after this")
    max_deliver: int = Field(
        20, ge=1, description="deliveries before a batch goes to the dead letters (storage outages count)"
    )
    retry_delay_seconds: float = Field(2, gt=0, description="first redelivery delay after a retryable failure")
    retry_delay_max_seconds: float = Field(300, gt=0, description="the retry delay doubles up to this")
    dead_letter_stream: str = "LUMINA_DEAD"
    dead_letter_subject: str = "lumina.dead"
    dead_letter_max_age_seconds: float = Field(14 * 86_400, gt=0)
    dead_letter_max_bytes: int = Field(256 * 1024**2, gt=0)
    fetch_batch: int = Field(64, ge=1, description="messages a worker asks for at a time")
    fetch_timeout_seconds: float = Field(1, gt=0)
    publish_timeout_seconds: float = Field(5, gt=0)
    connect_timeout_seconds: float = Field(2, gt=0)
    retry_after_seconds: float = Field(2, gt=0, description="the Retry-After given to clients when NATS is down")


def encode(batch: SpanBatch) -> bytes:
    return orjson.dumps(batch.to_dict())


def decode(data: bytes) -> SpanBatch:
    return SpanBatch.from_dict(orjson.loads(data))


def chunks(batch: SpanBatch, max_bytes: int) -> list[bytes]:
    """The batch as messages of at most ``max_bytes``: halved until each part fits (a single span that
    does not fit is refused: the broker could never take it)."""
    data = encode(batch)
    if len(data) <= max_bytes:
        return [data]
    if len(batch.spans) == 1:
        raise BatchRejected(f"a span of {len(data)} bytes is larger than NATS allows in a message ({max_bytes})")
    half = len(batch.spans) // 2
    return [
        *chunks(SpanBatch(batch.project_id, batch.spans[:half]), max_bytes),
        *chunks(SpanBatch(batch.project_id, batch.spans[half:]), max_bytes),
    ]


class NatsDelivery:
    """One message's batch: ack once stored, nack to have it delivered again later (or dead-lettered once
    it was delivered ``max_deliver`` times, or at once when the failure is not retryable)."""

    def __init__(self, batch: SpanBatch, msg: Msg, queue: NatsQueue) -> None:
        self.batch = batch
        self._msg = msg
        self._queue = queue

    async def ack(self) -> None:
        await self._msg.ack()

    async def nack(self, error: Exception, *, retryable: bool = True) -> None:
        if retryable and self._msg.metadata.num_delivered < self._queue.config.max_deliver:
            await self._msg.nak(delay=self._queue.retry_delay(self._msg.metadata.num_delivered))
        else:
            await self._queue.dead_letter(self._msg, str(error), self.batch)


class NatsQueue:
    """Span batches on a JetStream work-queue stream (file storage, discard=new), one durable pull consumer."""

    def __init__(self, config: NatsQueueConfig) -> None:
        self.config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._waiting_batches: int | None = None
        self._error: str | None = "not connected yet"
        self._closed = False

    # -- connection -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and make sure the streams exist; when NATS is unreachable, keep trying in the background
        (intake answers 503 meanwhile) instead of failing start-up."""
        self._closed = False
        try:
            await self._connect()
        except Exception as exc:
            log.warning("NATS at %s is not usable (%s); retrying in the background", self.config.servers, exc)
            self._error = f"NATS unusable: {exc}"
            self._connecting = asyncio.create_task(self._keep_connecting(), name="lumina-nats-connect")
        self._watching = asyncio.create_task(self._watch(), name="lumina-nats-watch")

    async def _connect(self) -> None:
        config = self.config
        if self._nc is None or self._nc.is_closed:
            # nats-py retries a first connection forever when reconnecting is allowed: bound it, and let
            # start() go on retrying in the background instead.
            self._nc = await asyncio.wait_for(self._open(), config.connect_timeout_seconds * 2)
        js = self._nc.jetstream(timeout=config.publish_timeout_seconds)
        await self._ensure_streams(js)
        self._js = js  # usable from here on
        self._error = None

    async def _open(self) -> Client:
        config = self.config
        return await nats.connect(
            config.servers,
            user=config.user,
            password=config.password,
            token=config.token,
            name="lumina",
            connect_timeout=max(1, round(config.connect_timeout_seconds)),
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            error_cb=self._on_error,
        )

    async def _keep_connecting(self) -> None:
        while not self._closed:
            await asyncio.sleep(1)
            try:
                await self._connect()
                log.info("connected to NATS at %s", self.config.servers)
                return
            except Exception as exc:
                self._error = f"NATS unusable: {exc}"

    async def _disconnected(self) -> None:
        if self._closed:
            return
        self._error = "disconnected from NATS; reconnecting"
        log.warning(self._error)

    async def _reconnected(self) -> None:
        self._error = None
        log.info("reconnected to NATS")

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    async def _ensure_streams(self, js: JetStreamContext) -> None:
        config = self.config
        await self._add_or_update(
            js,
            StreamConfig(
                name=config.stream,
                subjects=[config.subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=config.replicas,
                max_age=config.max_age_seconds,
                max_bytes=config.max_bytes,
                discard=DiscardPolicy.NEW,
            ),
        )
        await self._add_or_update(
            js,
            StreamConfig(
                name=config.dead_letter_stream,
                subjects=[config.dead_letter_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=config.replicas,
                max_age=config.dead_letter_max_age_seconds,
                max_bytes=config.dead_letter_max_bytes,
                discard=DiscardPolicy.NEW,
            ),
        )

    @staticmethod
    async def _add_or_update(js: JetStreamContext, stream: StreamConfig) -> None:
        try:
            await js.stream_info(stream.name or "")
        except NotFoundError:
            await js.add_stream(stream)
        else:
            await js.update_stream(stream)

    async def stop(self) -> None:
        self._closed = True
        for task in (self._connecting, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # not drain(): unacked deliveries come back after ack_wait
                await self._nc.close()
        self._nc = self._js = self._subscription = None

    def _connected(self) -> JetStreamContext:
        if self._js is None or self._nc is None or not self._nc.is_connected:
            raise QueueUnavailable(self._error or "NATS is not connected", self.config.retry_after_seconds)
        return self._js

    # -- intake -----------------------------------------------------------------------------------

    async def put(self, batch: SpanBatch) -> None:
        """Publish the batch (split to fit NATS's message size) and return when JetStream stored every part."""
        js = self._connected()
        assert self._nc is not None
        parts = chunks(batch, self._nc.max_payload - PAYLOAD_HEADROOM)
        try:
            await asyncio.gather(*(self._publish(js, part, batch.project_id) for part in parts))
        except APIError as exc:
            if "maximum" in (exc.description or ""):  # stream full: discard=new refuses instead of dropping
                raise QueueFull(f"the NATS stream is full: {exc.description}", self.config.retry_after_seconds) from exc
            raise QueueUnavailable(
                f"NATS refused the batch: {exc.description}", self.config.retry_after_seconds
            ) from exc
        except Exception as exc:
            raise QueueUnavailable(f"NATS did not store the batch: {exc.__class__.__name__}") from exc

    async def _publish(self, js: JetStreamContext, data: bytes, project_id: str) -> None:
        await js.publish(self.config.subject, data, headers={PROJECT: project_id}, stream=self.config.stream)

    # -- workers ----------------------------------------------------------------------------------

    async def consume(self, max_spans: int) -> AsyncIterator[list[NatsDelivery]]:
        """Fetch from the shared durable consumer and yield groups of at most ``max_spans`` spans (a message
        larger than that makes a group of its own). Undecodable messages go to the dead letters at once;
        a message delivered more than ``max_deliver`` times (a batch that kills its worker) too."""
        while not self._closed:
            try:
                messages = await self._fetch()
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except QueueUnavailable:
                await asyncio.sleep(0.5)
                continue
            except Exception as exc:
                if self._closed:  # stopping: the connection closed under the fetch
                    return
                log.warning("fetching from NATS failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            group: list[NatsDelivery] = []
            spans = 0
            for msg in messages:
                delivery = await self._delivery(msg)
                if delivery is None:
                    continue
                if group and spans + len(delivery.batch.spans) > max_spans:
                    yield group
                    group, spans = [], 0
                group.append(delivery)
                spans += len(delivery.batch.spans)
            if group:
                yield group

    async def _fetch(self) -> list[Msg]:
        js = self._connected()
        if self._subscription is None:
            config = self.config
            self._subscription = await js.pull_subscribe(
                config.subject,
                durable=config.durable,
                stream=config.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=config.ack_wait_seconds,
                    max_deliver=-1,  # Lumina counts deliveries itself, to dead-letter instead of forgetting
                    max_ack_pending=-1,
                ),
            )
        return await self._subscription.fetch(self.config.fetch_batch, timeout=self.config.fetch_timeout_seconds)

    async def _delivery(self, msg: Msg) -> NatsDelivery | None:
        deliveries = msg.metadata.num_delivered
        try:
            batch = decode(msg.data)
        except Exception as exc:
            await self.dead_letter(msg, f"not a span batch: {exc}", None)
            return None
        if deliveries > self.config.max_deliver:
            await self.dead_letter(msg, f"delivered {deliveries} times without being stored", batch)
            return None
        return NatsDelivery(batch, msg, self)

    def retry_delay(self, deliveries: int) -> float:
        config = self.config
        return min(config.retry_delay_seconds * 2 ** max(deliveries - 1, 0), config.retry_delay_max_seconds)

    async def dead_letter(self, msg: Msg, reason: str, batch: SpanBatch | None) -> None:
        """Move the message to the dead-letter stream, then ack it; if that stream cannot take it, the
        message stays where it is and comes back later."""
        log.error("dead-lettering a message of %d bytes: %s", len(msg.data), reason)
        headers = {REASON: reason[:1000], DELIVERIES: str(msg.metadata.num_delivered)}
        if batch is not None:
            headers |= {PROJECT: batch.project_id, SPANS: str(len(batch.spans))}
        elif msg.headers and PROJECT in msg.headers:  # undecodable: the project it was published for
            headers[PROJECT] = msg.headers[PROJECT]
        try:
            await self._connected().publish(
                self.config.dead_letter_subject, msg.data, headers=headers, stream=self.config.dead_letter_stream
            )
        except Exception as exc:
            log.error("the dead-letter stream did not take the message (%s); it stays queued", exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.config.retry_delay_max_seconds)
            return
        await msg.ack()

    # -- status -----------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Keep ``status`` current: the consumer's backlog, every two seconds."""
        while not self._closed:
            with contextlib.suppress(Exception):
                info = await self._connected().consumer_info(self.config.stream, self.config.durable)
                self._waiting_batches = info.num_pending + info.num_ack_pending
            await asyncio.sleep(2)

    def status(self) -> QueueStatus:
        connected = self._nc is not None and self._nc.is_connected and self._js is not None
        error = None if connected else (self._error or "NATS is not connected")
        return QueueStatus(ok=connected, waiting_batches=self._waiting_batches, error=error)

    # -- dead letters -----------------------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters first, up to ``limit``."""
        js = self._connected()
        info = await js.stream_info(self.config.dead_letter_stream)
        letters: list[DeadLetter] = []
        seq = info.state.first_seq
        while seq and seq <= info.state.last_seq and len(letters) < limit:
            try:
                raw = await js.get_msg(  # the first at or after seq: discarded letters leave gaps
                    self.config.dead_letter_stream, seq=seq, subject=self.config.dead_letter_subject, next=True
                )
            except NotFoundError:
                break
            letters.append(_dead_letter(raw))
            seq = (raw.seq or seq) + 1
        return letters

    async def redrive(self, ids: Sequence[str]) -> int:
        js = self._connected()
        moved = 0
        for letter_id in ids:
            try:
                raw = await js.get_msg(self.config.dead_letter_stream, seq=int(letter_id))
            except (APIError, ValueError):  # gone already (servers answer 404 or "stream store EOF")
                continue
            project = (raw.headers or {}).get(PROJECT, "")
            await self._publish(js, raw.data or b"", project)
            await js.delete_msg(self.config.dead_letter_stream, int(letter_id))
            moved += 1
        return moved

    async def discard(self, ids: Sequence[str]) -> int:
        js = self._connected()
        dropped = 0
        for letter_id in ids:
            with contextlib.suppress(APIError, ValueError):
                if await js.delete_msg(self.config.dead_letter_stream, int(letter_id)):
                    dropped += 1
        return dropped


def _dead_letter(raw: Any) -> DeadLetter:
    headers = raw.headers or {}
    spans = headers.get(SPANS)
    return DeadLetter(
        id=str(raw.seq),
        reason=headers.get(REASON, ""),
        failed_at=raw.time or datetime.now(UTC),
        deliveries=int(headers.get(DELIVERIES, "0")),
        size_bytes=len(raw.data or b""),
        project_id=headers.get(PROJECT),
        spans=int(spans) if spans else None,
    )


@hookimpl
def lumina_register_queue_backends() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="nats",
            create=lambda ctx, config: NatsQueue(config),
            config_model=NatsQueueConfig,
            description="NATS JetStream: many intake and worker processes; clients are answered once NATS stored "
            "the batch, workers ack after commit, failures go to a dead-letter stream.",
            stability="beta",
        )
    ]
