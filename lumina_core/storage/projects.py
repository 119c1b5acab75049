"""Projects and their API keys: the tenancy tables, and each project's data version."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumina_core.storage.database import dialect_insert
from lumina_core.storage.models import api_keys_table, projects_table


async def ensure_project(conn: AsyncConnection, project_id: str) -> None:
    stmt = dialect_insert(conn.dialect.name, projects_table).values(
        id=project_id, created_unix_nano=time.time_ns(), data_version=0
    )
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


async def bump_data_version(conn: AsyncConnection, project_id: str) -> None:
    """Mark the project's data as changed, inside the transaction that changes it (creating the project
    when it is seen for the first time)."""
    stmt = dialect_insert(conn.dialect.name, projects_table).values(
        id=project_id, created_unix_nano=time.time_ns(), data_version=1
    )
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={"data_version": projects_table.c.data_version + 1})
    )


async def data_version(engine: AsyncEngine, project_id: str) -> int:
    async with engine.connect() as conn:
        version = await conn.scalar(sa.select(projects_table.c.data_version).where(projects_table.c.id == project_id))
    return int(version or 0)


async def list_projects(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(projects_table.c.id, projects_table.c.created_unix_nano).order_by("id"))
        return [dict(row) for row in rows.mappings()]


KEY_COLUMNS = ("id", "project_id", "name", "prefix", "scopes", "created_unix_nano", "revoked_unix_nano")


def _key_out(row: sa.RowMapping) -> dict[str, Any]:
    out = {name: row[name] for name in KEY_COLUMNS}
    out["scopes"] = row["scopes"].split(",")
    return out


async def create_key(
    engine: AsyncEngine, project_id: str, name: str, scopes: Iterable[str], key_hash: str, prefix: str
) -> dict[str, Any]:
    values = {
        "project_id": project_id,
        "name": name,
        "prefix": prefix,
        "key_hash": key_hash,
        "scopes": ",".join(scopes),
        "created_unix_nano": time.time_ns(),
        "revoked_unix_nano": None,
    }
    async with engine.begin() as conn:
        await ensure_project(conn, project_id)
        result = await conn.execute(sa.insert(api_keys_table).values(**values))
        (key_id,) = result.inserted_primary_key or (None,)
    return _key_out({**values, "id": key_id})  # type: ignore[arg-type]


async def list_keys(engine: AsyncEngine, project_id: str | None = None) -> list[dict[str, Any]]:
    k = api_keys_table.c
    query = sa.select(api_keys_table).order_by(k.id)
    if project_id is not None:
        query = query.where(k.project_id == project_id)
    async with engine.connect() as conn:
        return [_key_out(row) for row in (await conn.execute(query)).mappings()]


async def revoke_key(engine: AsyncEngine, key_id: int, project_id: str | None = None) -> bool:
    """Revoke a key (of ``project_id`` only, when given); False if there is no such live key."""
    k = api_keys_table.c
    stmt = sa.update(api_keys_table).where(k.id == key_id, k.revoked_unix_nano.is_(None))
    if project_id is not None:
        stmt = stmt.where(k.project_id == project_id)
    async with engine.begin() as conn:
        result = await conn.execute(stmt.values(revoked_unix_nano=time.time_ns()))
    return bool(result.rowcount)


async def find_live_key(engine: AsyncEngine, key_hash: str) -> dict[str, Any] | None:
    k = api_keys_table.c
    async with engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(api_keys_table).where(k.key_hash == key_hash, k.revoked_unix_nano.is_(None))))
            .mappings()
            .first()
        )
    return _key_out(row) if row else None


async def any_keys(engine: AsyncEngine) -> bool:
    """Whether any key was ever created (a revoked one too: revoking the last key must not open the doors)."""
    async with engine.connect() as conn:
        return await conn.scalar(sa.select(sa.literal(1)).select_from(api_keys_table).limit(1)) is not None
