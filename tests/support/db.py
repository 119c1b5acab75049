"""Direct reads of a test database, to check what was stored without going through the API."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from lumina_core.storage.database import create_engine


def fetch_all(database_url: str, sql: str) -> list[tuple]:
    async def run() -> list[tuple]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return [tuple(row) for row in (await conn.execute(sa.text(sql))).all()]
        finally:
            await engine.dispose()

    return asyncio.run(run())
