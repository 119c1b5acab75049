"""Custom prices kept in the database (added at run time through the API)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage.models import custom_prices_table

PRICE_FIELDS = ("model", "match", "provider", "input", "output", "cache_read", "cache_write", "reasoning")


async def list_custom_prices(engine: AsyncEngine) -> list[dict[str, Any]]:
    c = custom_prices_table.c
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(custom_prices_table).order_by(c.id))).mappings().all()
    return [dict(row) for row in rows]


async def add_custom_price(engine: AsyncEngine, values: dict[str, Any]) -> dict[str, Any]:
    row = {**{k: values.get(k) for k in PRICE_FIELDS}, "created_unix_nano": time.time_ns()}
    row["effective_from_unix_nano"] = values.get("effective_from_unix_nano")
    async with engine.begin() as conn:
        result = await conn.execute(sa.insert(custom_prices_table).values(**row))
        (new_id,) = result.inserted_primary_key or (None,)
    return {"id": new_id, **row}


async def update_custom_price(engine: AsyncEngine, price_id: int, values: dict[str, Any]) -> dict[str, Any] | None:
    """Replace a stored price's fields; ``None`` if there is no such price."""
    row = {k: values.get(k) for k in (*PRICE_FIELDS, "effective_from_unix_nano")}
    table = custom_prices_table
    async with engine.begin() as conn:
        result = await conn.execute(sa.update(table).where(table.c.id == price_id).values(**row))
        if not result.rowcount:
            return None
        updated = (await conn.execute(sa.select(table).where(table.c.id == price_id))).mappings().one()
    return dict(updated)


async def delete_custom_price(engine: AsyncEngine, price_id: int) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(sa.delete(custom_prices_table).where(custom_prices_table.c.id == price_id))
    return bool(result.rowcount)
