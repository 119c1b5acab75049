"""Recompute stored costs after prices change, then refresh the rollups of the traces touched."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.pricing import PriceStage
from lumina_core.storage.database import writing
from lumina_core.storage.models import TOKEN_COLUMNS, spans_table
from lumina_core.storage.writer import SpanWriter

CHUNK = 2000
_PRICED_COLUMNS = ("cost_usd", "cost_source", "pricing_status", "pricing_rule")


@dataclass
class RepriceResult:
    spans: int
    changed: int


def _scope(since_unix_nano: int, model: str | None) -> sa.ColumnElement[bool]:
    s = spans_table.c
    condition = s.is_llm & (s.start_time_unix_nano >= since_unix_nano)
    condition &= sa.or_(s.cost_source.is_(None), s.cost_source != "span")  # a span's own cost stays
    if model:
        condition &= s.model == model
    return condition


async def count_spans_to_reprice(engine: AsyncEngine, since_unix_nano: int, model: str | None) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(spans_table).where(_scope(since_unix_nano, model))
        return int((await conn.execute(query)).scalar_one())


async def reprice(
    engine: AsyncEngine,
    stage: PriceStage,
    writer: SpanWriter,
    since_unix_nano: int,
    model: str | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> RepriceResult:
    """Price every LLM span since ``since_unix_nano`` again, in chunks of one transaction each."""
    s = spans_table.c
    key = (s.project_id, s.trace_id, s.span_id)
    columns = [
        *key,
        s.provider,
        s.model,
        s.request_model,
        s.start_time_unix_nano,
        s.cost_source,
        *(s[name] for name in TOKEN_COLUMNS),
        *(s[name] for name in _PRICED_COLUMNS if name != "cost_source"),
    ]
    update = (
        sa.update(spans_table)
        .where(
            s.project_id == sa.bindparam("k_project"),
            s.trace_id == sa.bindparam("k_trace"),
            s.span_id == sa.bindparam("k_span"),
        )
        .values({name: sa.bindparam(f"v_{name}") for name in _PRICED_COLUMNS})
    )
    total = changed = 0
    after: tuple[str, str, str] | None = None
    while True:
        query = sa.select(*columns).where(_scope(since_unix_nano, model)).order_by(*key).limit(CHUNK)
        if after is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*after))
        async with writing(engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
            if not rows:
                break
            updates: list[dict[str, Any]] = []
            touched: dict[str, set[str]] = {}
            for row in rows:
                priced = stage.price(dict(row))
                if any(priced[name] != row[name] for name in _PRICED_COLUMNS):
                    updates.append(
                        {
                            "k_project": row["project_id"],
                            "k_trace": row["trace_id"],
                            "k_span": row["span_id"],
                            **{f"v_{k}": v for k, v in priced.items()},
                        }
                    )
                    touched.setdefault(row["project_id"], set()).add(row["trace_id"])
            if updates:
                await conn.execute(update, updates)
                for project_id, trace_ids in touched.items():
                    await writer.refresh_rollups(conn, project_id, trace_ids)
        total += len(rows)
        changed += len(updates)
        progress(len(rows))
        last = rows[-1]
        after = (last["project_id"], last["trace_id"], last["span_id"])
    return RepriceResult(spans=total, changed=changed)
