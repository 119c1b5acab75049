"""Shared fixtures: databases (SQLite and PostgreSQL), and a real Lumina server on ephemeral ports."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from lumina_core.app import Lumina
from lumina_core.config import Settings, load_settings
from lumina_core.server import Endpoints, LuminaServer

PG_HOST, PG_PORT = "127.0.0.1", 5432
IN_CI = os.environ.get("CI") == "true"


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def _run_admin_sql(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; skips (fails in CI) when PostgreSQL is down."""
    if not _postgres_reachable():
        message = f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}"
        if IN_CI:
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message)
    name = f"lumina_test_{uuid.uuid4().hex[:12]}"
    _run_admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _run_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'lumina.db'}"
    else:
        with postgres_database() as url:
            yield url


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: object) -> Settings:
    """Settings for a test server: ephemeral ports on loopback, data under ``tmp_path``."""
    base: dict[str, object] = {
        "data_dir": str(tmp_path / "data"),
        "server.port": 0,
        "server.otlp_http_port": 0,
        "server.otlp_grpc_port": 0,
        "plugins.entry_points": False,
    }
    if database_url:
        base["storage.url"] = database_url
    base.update(overrides)
    return load_settings(None, env={}, overrides=base)


@contextmanager
def running_lumina(settings: Settings) -> Iterator[tuple[Lumina, Endpoints]]:
    lumina = Lumina(settings)
    server = LuminaServer(lumina, log_level="warning")
    with server.in_thread() as endpoints:
        yield lumina, endpoints


@pytest.fixture
def lumina_factory(tmp_path: Path) -> Iterator[Callable[..., Endpoints]]:
    """Start servers with chosen settings; all are stopped when the test ends."""
    stack: list = []

    def start(database_url: str | None = None, **overrides: object) -> Endpoints:
        cm = running_lumina(make_settings(tmp_path, database_url, **overrides))
        _, endpoints = cm.__enter__()
        stack.append(cm)
        return endpoints

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def server(lumina_factory: Callable[..., Endpoints], database_url: str) -> Endpoints:
    """A running Lumina on the parametrised database."""
    return lumina_factory(database_url)


@pytest.fixture
def sqlite_server(lumina_factory: Callable[..., Endpoints]) -> Endpoints:
    """A running Lumina on SQLite only, for tests about transport rather than storage."""
    return lumina_factory()


@pytest.fixture
def api(server: Endpoints) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lumina's wheel, built once per test session."""
    from tests.support.venv import build_wheel

    return build_wheel(tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for tests that run on PostgreSQL only."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def shared_nats_url() -> str:
    """The machine's NATS (skips, or fails in CI, when it is down)."""
    testing = pytest.importorskip("lumina_queue_nats.testing", reason="contrib/lumina-queue-nats is not installed")
    return str(testing.shared_nats())


@pytest.fixture
def write_config(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Writes the ``lumina.toml`` every process of a multi-process test shares (PostgreSQL, NATS with streams
    of the test's own, ``extra`` TOML after it); deletes those streams afterwards."""
    testing = pytest.importorskip("lumina_queue_nats.testing", reason="contrib/lumina-queue-nats is not installed")
    made: list[tuple[str, dict[str, str]]] = []

    def write(database_url: str, nats_url: str, extra: str = "", **queue: object) -> Path:
        names = testing.unique_names()
        made.append((nats_url, names))
        settings = {**names, "max_bytes": 256 * 1024**2, "dead_letter_max_bytes": 16 * 1024**2, **queue}
        queue_lines = "\n".join(f"{key} = {value!r}" for key, value in settings.items()).replace("'", '"')
        config = tmp_path / "lumina.toml"
        config.write_text(
            f'data_dir = "{tmp_path}"\n'
            f'[storage]\nurl = "{database_url}"\n'
            f'[queue]\ntype = "nats"\nservers = ["{nats_url}"]\nfetch_timeout_seconds = 0.5\n{queue_lines}\n{extra}'
        )
        return config

    yield write
    for nats_url, names in made:
        if testing.reachable(nats_url):
            asyncio.run(testing.delete_streams(nats_url, names))
