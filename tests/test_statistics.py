"""The planner's statistics are refreshed by Lumina itself once a table has changed enough (SQLite keeps
none of its own, and PostgreSQL may run without autovacuum, as it does on these machines)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from lumina_core.storage.database import create_engine, migrate, refresh_statistics


def span_rows(start: int, n: int) -> list[dict]:
    return [
        {
            "project_id": "default",
            "trace_id": f"{i:032x}",
            "span_id": f"{i:016x}",
            "name": "chat",
            "kind": "client",
            "service_name": "bot",
            "start_time_unix_nano": 10**18 + i,
            "end_time_unix_nano": 10**18 + i + 1,
            "latency_ms": 0.0,
            "status_code": "unset",
            "status": "ok",
            "is_llm": False,
            "counted": True,
            "attributes": "{}",
            "resource_attributes": "{}",
            "events": "[]",
            "links": "[]",
        }
        for i in range(start, start + n)
    ]


def test_tables_are_analyzed_when_they_have_changed_by_a_tenth(database_url: str) -> None:
    async def run() -> None:
        engine = create_engine(database_url)
        analyzed: dict[str, int] = {}

        async def insert(rows: list[dict]) -> None:
            columns = ", ".join(rows[0])
            values = ", ".join(f":{c}" for c in rows[0])
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"INSERT INTO spans ({columns}) VALUES ({values})"), rows)

        async def analyzes_spans() -> bool:
            # PostgreSQL's activity counters reach other sessions within about a second
            for _ in range(50):
                if "spans" in await refresh_statistics(engine, analyzed):
                    return True
                await asyncio.sleep(0.1)
            return False

        try:
            await migrate(engine)
            await insert(span_rows(0, 3000))
            assert await analyzes_spans()
            assert await refresh_statistics(engine, analyzed) == []  # nothing changed since
            await insert(span_rows(3000, 50))
            assert "spans" not in await refresh_statistics(engine, analyzed)  # a few rows are not worth it
            await insert(span_rows(3050, 2000))
            assert await analyzes_spans()
            async with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    stats = await conn.scalar(sa.text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'spans'"))
                else:
                    analyzed_at = "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'spans'"
                    stats = await conn.scalar(sa.text(analyzed_at))
                assert stats
        finally:
            await engine.dispose()

    asyncio.run(run())
