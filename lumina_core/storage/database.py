"""Opens the database (SQLite or PostgreSQL) and brings its schema up to date with Alembic."""

from __future__ import annotations

import asyncio
import contextlib
import reprlib
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def json_dumps(value: Any) -> str:
    """JSON text for a JSON column. PostgreSQL's JSONB refuses ``\\u0000`` in strings, so NUL characters
    become U+FFFD; a value orjson cannot encode (nested too deep) is kept as its truncated text."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        text = orjson.dumps({"unencodable": reprlib.repr(value)}).decode()
    return text.replace("\\u0000", "\\ufffd")


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` (PostgreSQL's or SQLite's)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def create_engine(url: str, *, sqlite_synchronous: str = "full") -> AsyncEngine:
    """An async engine with JSON handled by orjson; SQLite in WAL mode with a busy timeout."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": orjson.loads}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


_WRITE_LOCKS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine, *, wait_seconds: float | None = None) -> AsyncIterator[AsyncConnection]:
    """A write transaction. On SQLite, one at a time per process: SQLite has a single writer, and a
    transaction that finds the lock taken polls for it with sleeps (its busy handler), which halved ingest
    when quality checks wrote beside the worker. Waiting on an asyncio lock instead costs nothing.
    ``wait_seconds`` bounds that wait (``TimeoutError`` after it), for callers that must answer soon."""
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    lock = _WRITE_LOCKS.setdefault(engine, asyncio.Lock())
    await asyncio.wait_for(lock.acquire(), wait_seconds)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        lock.release()


async def take_write_lock(conn: AsyncConnection) -> None:
    """On SQLite, take the database's write lock now (a write that changes nothing), waiting for other
    processes' writers, so that what follows in the transaction runs without waiting."""
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("DELETE FROM stale_hours WHERE 0")


class JobLock:
    """Makes one process, of all those sharing a PostgreSQL database, the one that runs a background job
    (alert evaluation, …): a session advisory lock held on a connection of its own, so it is released
    when the process or its connection dies and another process takes over at its next try.

    On SQLite (one process per database file) the job always runs.
    """

    def __init__(self, engine: AsyncEngine, job: str) -> None:
        self.engine = engine
        self.job = job
        self._conn: AsyncConnection | None = None

    async def held(self) -> bool:
        """Whether this process runs the job now: it holds the lock, or has just taken it (again, after
        its lock connection was lost)."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._conn is not None:
            try:  # still connected, so still holding it
                await self._conn.execute(sa.text("SELECT 1"))
                await self._conn.commit()
                return True
            except Exception:
                await self.release()  # the session and its lock are gone: try to take it anew
        conn: AsyncConnection | None = None
        try:
            conn = await self.engine.connect()
            query = sa.text("SELECT pg_try_advisory_lock(hashtextextended(:job, 0))")
            if not (await conn.execute(query, {"job": f"lumina/{self.job}"})).scalar_one():
                await conn.close()
                return False
            await conn.commit()
            self._conn = conn
            return True
        except Exception:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                    await conn.close()
            return False

    async def release(self) -> None:
        """Give the job up: the connection is discarded, not pooled, which ends its session and lock."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()


def _alembic_config(connection: sa.Connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


STATISTICS_TABLES = ("spans", "traces", "span_hours")


async def refresh_statistics(engine: AsyncEngine, analyzed: dict[str, int]) -> list[str]:
    """``ANALYZE`` the tables that changed by a tenth (plus a few rows) since their statistics were taken;
    returns their names. ``analyzed`` remembers SQLite's table sizes at the last run, between calls.

    The query planners need them: on a fresh SQLite file, or a PostgreSQL without autovacuum, a trace
    filter was seen to scan an index per trace (50 s instead of 8 ms). With autovacuum on, PostgreSQL's
    counters are already reset and nothing runs; SQLite samples (``analysis_limit``), in milliseconds.
    """
    done = []
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            for table in STATISTICS_TABLES:
                size = (await conn.exec_driver_sql(f"SELECT coalesce(max(rowid), 0) FROM {table}")).scalar_one()
                if table not in analyzed or abs(size - analyzed[table]) > analyzed[table] // 10 + 100:
                    await conn.exec_driver_sql(f"ANALYZE {table}")
                    analyzed[table] = size
                    done.append(table)
        else:
            changed = await conn.execute(
                sa.text(
                    "SELECT relname FROM pg_stat_user_tables WHERE relname IN :tables "
                    "AND n_mod_since_analyze > n_live_tup / 10 + 1000"
                ).bindparams(sa.bindparam("tables", STATISTICS_TABLES, expanding=True))
            )
            for table in changed.scalars():
                await conn.exec_driver_sql(f"ANALYZE {table}")
                done.append(table)
    return done


async def migrate(engine: AsyncEngine) -> None:
    """Run every pending Alembic migration; called at start-up by every process. On PostgreSQL the
    processes starting together take turns (a transaction-scoped advisory lock), so one migrates and the
    others then find the schema current."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended('lumina/migrate', 0))"))
        await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), "head"))
