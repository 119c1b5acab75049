"""Migrations carry stored data forward: columns added later are filled from what was already stored."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command

from lumina_core.storage.database import _alembic_config, create_engine
from lumina_core.storage.filters import SpanFilter
from lumina_core.storage.queries import list_traces


def test_user_and_session_ids_are_filled_from_spans_stored_before(database_url: str) -> None:
    async def run() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0005"))
                values = {
                    "project_id": "default",
                    "trace_id": "a" * 32,
                    "name": "chat",
                    "kind": "client",
                    "service_name": "bot",
                    "start_time_unix_nano": 10**18,
                    "end_time_unix_nano": 10**18 + 1,
                    "latency_ms": 0.0,
                    "status_code": "unset",
                    "status": "ok",
                    "is_llm": False,
                    "counted": True,
                    "events": "[]",
                    "links": "[]",
                }
                rows = [
                    {
                        **values,
                        "span_id": "1" * 16,
                        "attributes": '{"enduser.id": 7}',
                        "resource": '{"session.id": "s-1"}',
                    },
                    {**values, "span_id": "2" * 16, "attributes": '{"user.id": ""}', "resource": "{}"},
                ]
                for row in rows:
                    row["resource_attributes"] = row.pop("resource")
                    columns = ", ".join(row)
                    await conn.execute(sa.text(f"INSERT INTO spans ({columns}) VALUES (:{', :'.join(row)})"), row)
                await conn.execute(
                    sa.text(
                        "INSERT INTO traces (project_id, trace_id, name, service_name, start_time_unix_nano, "
                        "end_time_unix_nano, duration_ms, span_count, llm_span_count, error_count, status) "
                        "VALUES ('default', :t, 'chat', 'bot', :start, :end, 0, 2, 0, 0, 'ok')"
                    ),
                    {"t": "a" * 32, "start": 10**18, "end": 10**18 + 1},
                )
                await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "head"))
                ids = (
                    await conn.execute(sa.text("SELECT span_id, user_id, session_id FROM spans ORDER BY span_id"))
                ).all()
            assert [tuple(r) for r in ids] == [("1" * 16, "7", "s-1"), ("2" * 16, None, None)]
            page, _ = await list_traces(engine, "default", SpanFilter(user_id="7"))
            assert [t["trace_id"] for t in page] == ["a" * 32]
        finally:
            await engine.dispose()

    asyncio.run(run())
