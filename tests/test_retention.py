"""Retention on SQLite and PostgreSQL: a sweep archives, then deletes, exactly the spans older than their
retention (per service and project overrides), trace rollups follow, a dry run changes nothing, an archiver
that fails leaves the data in place, and importing the archive into an empty database gives back the same
spans, every column."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from lumina_core import ComponentConfig, ComponentFactory, hookimpl
from lumina_core.cli import main as cli
from lumina_core.config import RetentionSettings
from lumina_core.server import Endpoints
from lumina_core.testing import export, llm_span, otlp_request
from tests.conftest import postgres_database
from tests.support.db import fetch_all

DAY_NS = 86_400 * 10**9
NOW_NS = time.time_ns()
AGES_DAYS = (10, 8, 6.5, 1)  # with 7 days kept: the first two go


def send_traces(server: Endpoints, service: str, age_days: float, traces: int = 2) -> None:
    """Agent traces started ``age_days`` ago: a root and two LLM calls under it."""
    start = NOW_NS - int(age_days * DAY_NS)
    spans = []
    for _ in range(traces):
        trace_id, root_id = os.urandom(16), os.urandom(8)
        spans.append({"trace_id": trace_id, "span_id": root_id, "name": "agent", "start": start, "end": start + 10**9})
        for i in range(2):
            call = llm_span(start_ns=start + i * 10**8, input_tokens=100 + i)
            spans.append({**call, "trace_id": trace_id, "span_id": os.urandom(8), "parent_span_id": root_id})
    export(server, otlp_request(spans, service=service))


def write_config(path: Path, database_url: str, data_dir: Path, retention: str = "") -> Path:
    path.write_text(
        f'data_dir = "{data_dir}"\n[storage]\nurl = "{database_url}"\n[plugins]\nentry_points = false\n'
        f"[retention]\n{retention}\n"
    )
    return path


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"LUMINA_CONFIG": None, "LUMINA_DATABASE_URL": None})
    assert result.exit_code == 0, result.output
    return result.output


ALL_COLUMNS = "SELECT * FROM spans ORDER BY trace_id, span_id"


@pytest.fixture
def loaded(lumina_factory: Callable[..., Endpoints], database_url: str) -> Endpoints:
    server = lumina_factory(database_url)
    for age in AGES_DAYS:
        send_traces(server, "chat", age)
        send_traces(server, "audit", age)  # kept 30 days (below)
    return server


RETENTION = 'archiver = "jsonl"\nbatch_spans = 5\nservices = { audit = 30 }\n'


def expired_rows(database_url: str) -> list[tuple]:
    cutoff = NOW_NS - 7 * DAY_NS
    where = f"service_name = 'chat' AND start_time_unix_nano < {cutoff}"
    return fetch_all(database_url, f"SELECT * FROM spans WHERE {where} ORDER BY trace_id, span_id")


def test_the_sweep_archives_then_deletes_exactly_what_is_older_than_its_retention(
    loaded: Endpoints, database_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "lumina.toml", database_url, tmp_path / "data", RETENTION)
    before = fetch_all(database_url, ALL_COLUMNS)
    expired = expired_rows(database_url)
    assert len(before) == 2 * len(AGES_DAYS) * 2 * 3 and len(expired) == 2 * 2 * 3

    dry = run_cli("retention", "run", "--dry-run", "--config", str(config))
    assert dry.strip() == "default: would delete 12 spans (4 traces)"
    assert fetch_all(database_url, ALL_COLUMNS) == before

    swept = run_cli("retention", "run", "--config", str(config))
    assert swept.startswith("default: deleted 12 spans (4 traces), archived to ")
    after = fetch_all(database_url, ALL_COLUMNS)
    assert after == [row for row in before if row not in expired]
    # Rollups follow: no trace row is left without spans, and the API lists what remains.
    [(orphans,)] = fetch_all(
        database_url,
        "SELECT count(*) FROM traces t WHERE NOT EXISTS "
        "(SELECT 1 FROM spans s WHERE s.project_id = t.project_id AND s.trace_id = t.trace_id)",
    )
    assert orphans == 0
    listed = httpx.get(f"{loaded.http_url}/api/v1/traces", params={"limit": 100, "start": "1970-01-01T00:00:00Z"})
    assert len(listed.json()["data"]) == len(AGES_DAYS) * 2 * 2 - 4

    archives = sorted((tmp_path / "data" / "archive" / "default").iterdir())
    assert [a.name for a in archives] == sorted(
        {time.strftime("%Y-%m-%d.jsonl.gz", time.gmtime((NOW_NS - int(d * DAY_NS)) / 1e9)) for d in (10, 8)}
    )
    archived = [orjson.loads(line) for a in archives for line in gzip.decompress(a.read_bytes()).splitlines()]
    assert len(archived) == len(expired)

    assert "nothing is older" in run_cli("retention", "run", "--config", str(config))


@pytest.fixture
def empty_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'imported.db'}"
    else:
        with postgres_database() as url:
            yield url


def test_importing_the_archive_into_an_empty_database_gives_back_the_same_spans(
    loaded: Endpoints, database_url: str, empty_database: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "lumina.toml", database_url, tmp_path / "data", RETENTION)
    expired = expired_rows(database_url)
    run_cli("retention", "run", "--config", str(config))
    archives = sorted(str(p) for p in (tmp_path / "data" / "archive" / "default").iterdir())

    target = write_config(tmp_path / "target.toml", empty_database, tmp_path / "target")
    output = run_cli("import", "--config", str(target), *archives)
    assert sum(int(line.split(": ")[1].split()[0]) for line in output.splitlines()) == len(expired)
    assert fetch_all(empty_database, ALL_COLUMNS) == expired, "every column as it was"
    run_cli("import", "--config", str(target), *archives)  # again: nothing changes
    assert fetch_all(empty_database, ALL_COLUMNS) == expired
    [(traces, spans)] = fetch_all(empty_database, "SELECT count(*), sum(span_count) FROM traces")
    assert (traces, spans) == (4, 12)


def test_an_archiver_that_fails_leaves_the_data_in_place(loaded: Endpoints, database_url: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the archive directory should be")
    retention = RETENTION + f'[archivers.jsonl]\ndirectory = "{blocker}"\n'
    config = write_config(tmp_path / "lumina.toml", database_url, tmp_path / "data", retention)
    before = fetch_all(database_url, ALL_COLUMNS)
    result = CliRunner().invoke(cli, ["retention", "run", "--config", str(config)], env={"LUMINA_CONFIG": None})
    assert result.exit_code == 1
    assert "what was not archived is kept" in result.output
    assert fetch_all(database_url, ALL_COLUMNS) == before


def test_an_unknown_archive_is_refused_clearly(tmp_path: Path) -> None:
    config = write_config(tmp_path / "lumina.toml", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path)
    stray = tmp_path / "spans.csv"
    stray.write_text("a,b\n")
    result = CliRunner().invoke(cli, ["import", "--config", str(config), str(stray)], env={"LUMINA_CONFIG": None})
    assert result.exit_code == 1 and "no archiver reads spans.csv" in result.output


def test_the_most_specific_retention_wins() -> None:
    settings = RetentionSettings.model_validate(
        {"days": 7, "services": {"audit": 30}, "projects": {"eu": {"days": 3, "services": {"audit": 90}}}}
    )
    assert settings.days_for("default", "chat") == 7
    assert settings.days_for("default", "audit") == 30
    assert settings.days_for("eu", "chat") == 3
    assert settings.days_for("eu", "audit") == 90
    assert settings.days_for("eu") == 3


class KeepInMemory:
    """A third-party archiver: keeps what it is given in memory; ``fail`` makes it refuse."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, date], list[dict[str, Any]]] = {}
        self.fail = False

    async def archive(self, project_id: str, day: date, spans: list[dict[str, Any]]) -> str:
        if self.fail:
            raise OSError("the archive volume is full")
        self.kept.setdefault((project_id, day), []).extend(spans)
        return f"memory://{project_id}/{day}"

    def read(self, path: Path) -> Iterator[list[dict[str, Any]]] | None:
        return None


class MemoryArchiverPlugin:
    def __init__(self) -> None:
        self.archiver = KeepInMemory()

    @hookimpl
    def lumina_register_archivers(self) -> list[ComponentFactory]:
        return [ComponentFactory("memory", lambda ctx, config: self.archiver, ComponentConfig, "In memory.")]


def test_an_archiver_plugin_gets_the_spans_first_and_a_refusal_keeps_them(lumina_server: Callable[..., Any]) -> None:
    plugin = MemoryArchiverPlugin()
    server = lumina_server(plugins=[plugin], settings={"retention.archiver": "memory", "retention.enabled": False})
    for age in AGES_DAYS:
        send_traces(server, "chat", age)
    with httpx.Client(base_url=server.http_url) as api:
        plugin.archiver.fail = True
        refused = api.post("/api/v1/retention/run").json()
        assert refused["spans"] == 0 and "archive volume is full" in refused["error"]
        assert api.post("/api/v1/retention/run", params={"dry_run": "true"}).json()["spans"] == 12
        plugin.archiver.fail = False
        done = api.post("/api/v1/retention/run").json()
        assert done == {"spans": 12, "traces": 4, "archives": sorted(done["archives"]), "error": None}
        assert sum(len(rows) for rows in plugin.archiver.kept.values()) == 12
        assert api.post("/api/v1/retention/run", params={"dry_run": "true"}).json()["spans"] == 0
        retention = api.get("/api/v1/data").json()["retention"]
        assert retention["days"] == 7 and retention["archiver"] == "memory" and retention["next_sweep"] is None


def test_ingest_goes_on_while_the_sweep_deletes(
    lumina_factory: Callable[..., Endpoints], database_url: str, tmp_path: Path
) -> None:
    server = lumina_factory(database_url)
    for _ in range(10):
        send_traces(server, "chat", 9, traces=50)  # 1,500 expired spans
    config = write_config(tmp_path / "lumina.toml", database_url, tmp_path / "data", "batch_spans = 100\n")
    sent: list[int] = []
    sweeping = threading.Event()

    def ingest() -> None:
        while not sweeping.is_set() or len(sent) < 5:
            send_traces(server, "chat", 0, traces=5)
            sent.append(15)

    sender = threading.Thread(target=ingest)
    sender.start()
    try:
        swept = run_cli("retention", "run", "--config", str(config))
    finally:
        sweeping.set()
        sender.join(60)
    assert swept.startswith("default: deleted 1500 spans (500 traces)")
    [(fresh,)] = fetch_all(database_url, f"SELECT count(*) FROM spans WHERE start_time_unix_nano > {NOW_NS - DAY_NS}")
    assert fresh == sum(sent) > 0, "every export during the sweep was answered and stored"


@pytest.mark.postgres
def test_one_sweep_at_a_time_across_processes(tmp_path: Path) -> None:
    """While one process sweeps a PostgreSQL database (it holds the sweep's advisory lock), a manual
    sweep elsewhere is refused clearly instead of racing it; once the lock is free it runs."""
    import asyncio

    from lumina_core.storage.database import JobLock, create_engine, migrate

    with postgres_database() as url:
        config = write_config(tmp_path / "lumina.toml", url, tmp_path / "data")

        async def hold_lock_and_sweep() -> tuple[Any, Any]:
            engine = create_engine(url)
            await migrate(engine)
            lock = JobLock(engine, "retention-sweep")
            try:
                assert await lock.held()
                args = ["retention", "run", "--config", str(config)]
                env = {"LUMINA_CONFIG": None, "LUMINA_DATABASE_URL": None}
                refused = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
                dry = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--dry-run"], env=env)
            finally:
                await lock.release()
                await engine.dispose()
            return refused, dry

        refused, dry = asyncio.run(hold_lock_and_sweep())
        assert refused.exit_code == 1 and "already running" in refused.output
        assert dry.exit_code == 0, dry.output  # counting needs no lock
        assert "nothing is older" in run_cli("retention", "run", "--config", str(config))
