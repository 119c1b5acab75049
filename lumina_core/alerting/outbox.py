"""Delivery of alert notifications from the outbox: each to its sink, with a timeout, retried with
exponential backoff until it succeeds or runs out of attempts; across restarts, since the outbox is a table.

A row is *claimed* (``claimed_until_unix_nano``) before it is sent, so two processes sharing the database
never send it at once; a process that dies mid-send leaves a claim that simply expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.config import AlertDeliverySettings
from lumina_core.plugin_api import Alert, AlertRejected, AlertSink
from lumina_core.storage.database import writing
from lumina_core.storage.models import alert_outbox_table

log = logging.getLogger(__name__)
NS = 1_000_000_000
POLL_SECONDS = 1.0
_o = alert_outbox_table.c


class Outbox:
    """Sends what the alert engine queued. :meth:`run` is its task; ``wake`` makes it look at once."""

    def __init__(self, engine: AsyncEngine, sinks: dict[str, AlertSink], settings: AlertDeliverySettings) -> None:
        self.engine = engine
        self.sinks = sinks
        self.settings = settings
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.deliver_due()
            except Exception:
                log.exception("alert delivery failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)

    async def backlog(self) -> dict[str, int]:
        """How many notifications wait to be sent (``pending``) and how many were given up (``failed``)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(_o.state, sa.func.count()).where(_o.state != "delivered").group_by(_o.state)
            )
            counts: dict[str, int] = {state: count for state, count in rows}
        return {"pending": counts.get("pending", 0), "failed": counts.get("failed", 0)}

    async def deliver_due(self, limit: int = 100) -> int:
        """Send every notification that is due and not claimed by another process; returns how many."""
        now = time.time_ns()
        async with self.engine.connect() as conn:
            due = (
                await conn.execute(
                    sa.select(_o.id)
                    .where(_o.state == "pending", _o.next_attempt_unix_nano <= now, _o.claimed_until_unix_nano < now)
                    .order_by(_o.id)
                    .limit(limit)
                )
            ).scalars()
            ids = list(due)
        claim_until = now + int(self.settings.timeout_seconds * 2 * NS)
        claimed = []
        for row_id in ids:
            async with writing(self.engine) as conn:
                row = (
                    await conn.execute(
                        sa.update(alert_outbox_table)
                        .where(_o.id == row_id, _o.state == "pending", _o.claimed_until_unix_nano < now)
                        .values(claimed_until_unix_nano=claim_until)
                        .returning(_o.id, _o.sink, _o.payload, _o.attempts)
                    )
                ).first()
            if row is not None:
                claimed.append(row)
        await asyncio.gather(*(self._deliver(*row) for row in claimed))
        return len(claimed)

    async def _deliver(self, row_id: int, sink_name: str, payload: dict[str, Any], attempts: int) -> None:
        sink = self.sinks.get(sink_name)
        error: str | None = None
        permanent = False
        try:
            if sink is None:
                raise LookupError(f"alert sink {sink_name!r} is not configured")
            await asyncio.wait_for(sink.send(Alert.from_dict(payload)), self.settings.timeout_seconds)
        except TimeoutError:
            error = f"timed out after {self.settings.timeout_seconds} s"
        except AlertRejected as exc:
            error, permanent = f"rejected: {exc}", True
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        attempts += 1
        now = time.time_ns()
        if error is None:
            values: dict[str, Any] = {"state": "delivered", "delivered_unix_nano": now, "last_error": None}
        else:
            wait = min(self.settings.backoff_seconds * 2 ** (attempts - 1), self.settings.max_backoff_seconds)
            given_up = permanent or attempts >= self.settings.max_attempts
            values = {
                "state": "failed" if given_up else "pending",
                "next_attempt_unix_nano": now + int(wait * NS),
                "last_error": error[:1000],
            }
            log.log(
                logging.ERROR if given_up else logging.WARNING,
                "alert %s to %s failed (attempt %d%s): %s",
                payload.get("event_id"),
                sink_name,
                attempts,
                ", giving up" if given_up else "",
                error,
            )
        async with writing(self.engine) as conn:
            await conn.execute(
                sa.update(alert_outbox_table)
                .where(_o.id == row_id)
                .values(attempts=attempts, claimed_until_unix_nano=0, **values)
            )
