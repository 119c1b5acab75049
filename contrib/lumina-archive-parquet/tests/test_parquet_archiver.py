"""The Parquet archiver: the archiver contract, exact round trips of every span column, the files as other tools
read them, reading back through Lumina's import path, discovery as its own distribution, and a real sweep and
``lumina import`` on SQLite."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import lumina_archive_parquet
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from lumina_archive_parquet import SPAN_COLUMNS, ParquetArchiver, ParquetArchiverConfig
from pydantic import ValidationError

from lumina_core import Archiver, ComponentContext
from lumina_core.cli import main as cli
from lumina_core.config import PluginSettings
from lumina_core.plugins import PluginHost, builtin_plugins
from lumina_core.retention import read_archive
from lumina_core.storage.models import Span
from lumina_core.testing import export, llm_span, otlp_request
from lumina_core.testing.contracts import ArchiverContract, archived_span

DAY = date(2026, 1, 1)


def build(config: dict[str, Any] | None = None, data_dir: str = "/nonexistent") -> Any:
    factory = PluginHost([lumina_archive_parquet], entry_points=False).factory("archiver", "parquet")
    return factory.create(ComponentContext("default", data_dir), factory.config_model.model_validate(config or {}))


class TestParquetArchiver(ArchiverContract):
    type_name = "parquet"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_archive_parquet

    @pytest.fixture
    def archiver(self, tmp_path: Path) -> Any:
        return build({"directory": str(tmp_path / "archive")})


def full_span(i: int, **changes: Any) -> dict[str, Any]:
    """A row with every column of the ``spans`` table, with awkward values."""
    start = 1_767_225_600_000_000_000 + i * 1_000_000_000
    row: dict[str, Any] = {
        "project_id": "default",
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "parent_span_id": None if i % 2 else f"{i + 1:016x}",
        "name": "chat gpt-4o ✨ 日本語 \U0001f600",
        "kind": "client",
        "service_name": "svc",
        "scope_name": "",
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 2**40,
        "latency_ms": 0.1 + i,
        "status_code": "error",
        "status_message": 'quote " backslash \\ tab \t newline \n',
        "status": "error",
        "error_type": "RateLimitError",
        "user_id": "ünï",
        "session_id": None,
        "is_llm": bool(i % 2),
        "operation": "chat",
        "provider": "openai",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "model": "gpt-4o",
        "input_tokens": 2**62,
        "cache_read_tokens": 0,
        "cache_write_tokens": -1,
        "output_tokens": None,
        "reasoning_tokens": 2**62 - i,
        "cost_usd": 1e-12,
        "cost_source": "genai-prices",
        "pricing_status": "priced",
        "pricing_rule": "openai/gpt-4o",
        "response_id": f"resp-{i}",
        "counted": not i % 2,
        "finish_reasons": ["stop", "length"],
        "input_messages": [{"role": "user", "content": [{"type": "text", "text": "héllo \u2603"}], "n": 2**62}],
        "output_messages": None,
        "system_prompt": "x" * 10_000,
        "invocation_parameters": {"temperature": 0.0, "max_tokens": 2**31, "stop": [], "seed": None, "x": {}},
        "attributes": {
            "k": "v",
            "n": i,
            "big": -(2**62),
            "f": 1.5e300,
            "b": False,
            "none": None,
            "nested": {"list": [1, 2.5, None, True, "s", [], {}], "deeper": {"a": [{"b": [[]]}]}},
            "mixed": [1, "1", 1.0, [1], {"1": 1}],
        },
        "resource_attributes": {},
        "events": [],
        "links": [{"trace_id": "ab" * 16, "span_id": "cd" * 8, "attributes": {"k": [True, False]}}],
    }
    return row | changes


def read_all(archiver: ParquetArchiver, path: str | Path) -> list[dict[str, Any]]:
    chunks = archiver.read(Path(path))
    assert chunks is not None
    return [row for chunk in chunks for row in chunk]


def test_the_rows_cover_every_span_column() -> None:
    assert list(SPAN_COLUMNS) == list(Span.model_fields), "SPAN_COLUMNS follows the spans table"
    assert set(full_span(0)) == set(Span.model_fields)


async def test_every_column_round_trips_exactly_over_several_calls(tmp_path: Path) -> None:
    archiver = build({"directory": str(tmp_path)})
    batches = [[full_span(i) for i in range(n, n + size)] for n, size in ((0, 3), (3, 1), (4, 2500), (2504, 2))]
    places = {await archiver.archive("default", DAY, batch) for batch in batches}
    assert places == {str(tmp_path / "default" / "2026-01-01")}
    rows = read_all(archiver, places.pop())
    expected = [row for batch in batches for row in batch]
    assert rows == expected
    for got, want in zip(rows, expected, strict=True):  # == says 1 == 1.0 == True: the types must match too
        assert list(got) == list(want)
        for key, value in want.items():
            assert type(got[key]) is type(value), key
    assert type(rows[0]["attributes"]["mixed"][2]) is float and type(rows[0]["attributes"]["b"]) is bool


async def test_chunks_are_bounded_and_single_parts_read_alone(tmp_path: Path) -> None:
    archiver = build({"directory": str(tmp_path)})
    first = [full_span(i) for i in range(2500)]
    later = [full_span(i) for i in range(2500, 2510)]
    where = Path(await archiver.archive("default", DAY, first))
    await archiver.archive("default", DAY, later)
    chunks = archiver.read(where)
    assert chunks is not None
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 500, 10]
    parts = sorted(where.glob("part-*.parquet"))
    assert [p.name[:10] for p in parts] == ["part-00001", "part-00002"]
    assert read_all(archiver, parts[1]) == later
    assert not [p for p in where.iterdir() if p.name.startswith(".")], "no temporary file is left"


async def test_rows_keep_their_own_keys_and_odd_values_their_types(tmp_path: Path) -> None:
    archiver = build({"directory": str(tmp_path)})
    rows = [
        {"project_id": "default", "trace_id": "t1", "span_id": "s1"},
        archived_span(2),
        archived_span(3, latency_ms=250, input_tokens=True, cost_usd=None, counted=None, extra={"a": [1]}),
        {"trace_id": "t4", "start_time_unix_nano": 2**63 - 1, "attributes": None, "events": [None]},
        {},
    ]
    where = await archiver.archive("default", DAY, rows)
    got = read_all(archiver, where)
    assert got == rows
    assert type(got[2]["latency_ms"]) is int and got[2]["input_tokens"] is True
    assert "extra" not in got[1] and got[2]["extra"] == {"a": [1]}


async def test_every_part_has_the_same_schema_and_other_tools_read_it(tmp_path: Path) -> None:
    archiver = build({"directory": str(tmp_path), "compression": "snappy"})
    where = Path(await archiver.archive("default", DAY, [full_span(1)]))
    await archiver.archive("default", DAY, [archived_span(2), archived_span(3)])
    await archiver.archive("default", DAY, [{"trace_id": "only"}])
    schemas = [pq.read_schema(p).remove_metadata() for p in sorted(where.glob("part-*.parquet"))]
    assert all(schema == schemas[0] for schema in schemas)
    assert schemas[0].field("start_time_unix_nano").type == pa.int64()
    assert schemas[0].field("is_llm").type == pa.bool_()
    assert schemas[0].field("attributes").type == pa.string()
    assert pq.ParquetFile(next(where.glob("part-*.parquet"))).metadata.row_group(0).column(0).compression == "SNAPPY"
    table = pq.read_table(where)  # the day's directory as one dataset
    assert table.num_rows == 4
    assert table.column("span_id").to_pylist()[:3] == [f"{1:016x}", f"{2:016x}", f"{3:016x}"]


@pytest.mark.parametrize("compression", ["zstd", "snappy", "gzip", "none"])
async def test_every_compression_round_trips(tmp_path: Path, compression: str) -> None:
    archiver = build({"directory": str(tmp_path), "compression": compression})
    rows = [full_span(i) for i in range(5)]
    assert read_all(archiver, await archiver.archive("p", DAY, rows)) == rows


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    archiver = build(data_dir=str(tmp_path))
    assert isinstance(archiver, Archiver)
    assert archiver.directory == tmp_path / "archive-parquet" and archiver.compression == "zstd"
    assert not (tmp_path / "archive-parquet").exists(), "nothing is created until something is archived"
    assert build({"compression": "none"}).compression is None
    with pytest.raises(ValidationError):
        ParquetArchiverConfig.model_validate({"compression": "lz4"})
    with pytest.raises(ValidationError):
        ParquetArchiverConfig.model_validate({"directory": "/x", "typo": 1})


async def test_it_claims_only_its_own_files(tmp_path: Path) -> None:
    archiver = build({"directory": str(tmp_path / "archive")})
    where = Path(await archiver.archive("default", DAY, [archived_span(1)]))
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    (tmp_path / "fake.parquet").write_text("not parquet")
    (tmp_path / "empty").mkdir()
    for path in (foreign, tmp_path / "fake.parquet", tmp_path / "empty", where.parent, tmp_path / "missing"):
        assert archiver.read(path) is None, path
    (where / "part-00009-abc.parquet").write_text("damaged")
    with pytest.raises(ValueError, match=r"part-00009-abc\.parquet"):
        archiver.read(where)


async def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    archiver = build({"directory": str(tmp_path)})
    where = Path(await archiver.archive("default", DAY, [archived_span(1)]))
    with pytest.raises(TypeError):
        await archiver.archive("default", DAY, [archived_span(2, attributes={"t": object()})])
    with pytest.raises(ValueError):
        await archiver.archive("../escape", DAY, [archived_span(3)])
    assert [p.name[:10] for p in where.iterdir()] == ["part-00001"]
    assert read_all(archiver, where) == [archived_span(1)]


async def test_lumina_reads_it_back_through_its_import_path(tmp_path: Path) -> None:
    """What ``lumina import`` does: the first archiver that knows the path reads it; the JSON Lines one
    (which sorts first) leaves Parquet archives alone."""
    host = PluginHost([*builtin_plugins(), lumina_archive_parquet], entry_points=False)
    readers = [
        factory.create(ComponentContext("default", str(tmp_path)), factory.config_model.model_validate({}))
        for _, factory in sorted(host.factories["archiver"].items())
    ]
    assert [type(r).__name__ for r in readers] == ["JsonlArchiver", "ParquetArchiver"]
    parquet = readers[1]
    rows = [full_span(i) for i in range(1200)]
    where = await parquet.archive("default", DAY, rows[:700])
    await parquet.archive("default", DAY, rows[700:])
    assert [row for chunk in read_archive(readers, Path(where)) for row in chunk] == rows
    part = sorted(Path(where).glob("part-*.parquet"))[1]
    assert [row for chunk in read_archive(readers, part) for row in chunk] == rows[700:]
    with pytest.raises(ValueError, match="no archiver reads"):
        read_archive(readers, tmp_path)


def test_is_discovered_through_its_entry_point_as_its_own_distribution() -> None:
    host = PluginHost.configured(PluginSettings())
    factory = host.factory("archiver", "parquet")
    assert factory.config_model is ParquetArchiverConfig
    assert factory.stability == "beta"
    [info] = [p for p in host.describe([]) if p.name == "archive_parquet"]
    assert info.distribution == "lumina-archive-parquet"
    assert info.types == {"archiver": ["parquet"]}


# ---- a real sweep and `lumina import`, on SQLite ----

DAY_NS = 86_400 * 10**9


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"LUMINA_CONFIG": None, "LUMINA_DATABASE_URL": None})
    assert result.exit_code == 0, result.output
    return result.output


def config(path: Path, data_dir: Path, archive: Path) -> Path:
    path.write_text(
        f'data_dir = "{data_dir}"\n[plugins]\nallow = ["archive_parquet"]\n'
        f'[retention]\narchiver = "parquet"\nbatch_spans = 4\n[archivers.parquet]\ndirectory = "{archive}"\n'
    )
    return path


def spans_of(database: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT * FROM spans ORDER BY trace_id, span_id").fetchall()


def test_a_sweep_archives_to_parquet_and_lumina_import_loads_it_back(
    lumina_server: Callable[..., Any], tmp_path: Path
) -> None:
    server = lumina_server()
    now = time.time_ns()
    old = [now - 10 * DAY_NS, now - 9 * DAY_NS]
    spans = []
    for start in old:
        trace_id = os.urandom(16)
        for i in range(5):
            call = llm_span(start_ns=start + i * 10**8, input_tokens=100 + i, **{"app.note": "ünï ✨", "app.n": i})
            spans.append({**call, "trace_id": trace_id, "status_code": 2 if i == 4 else 0})
    export(server, otlp_request(spans, service="chat"))
    database = tmp_path / "lumina-0" / "lumina.db"
    expired = spans_of(database)
    assert len(expired) == 10

    archive = tmp_path / "archive"
    swept = run_cli(
        "retention", "run", "--config", str(config(tmp_path / "lumina.toml", tmp_path / "lumina-0", archive))
    )
    assert swept.startswith("default: deleted 10 spans (2 traces), archived to ")
    assert spans_of(database) == []
    days = sorted((archive / "default").iterdir())
    assert [d.name for d in days] == [datetime.fromtimestamp(t / 1e9, UTC).date().isoformat() for t in old]
    assert all(len(list(d.glob("part-*.parquet"))) >= 2 for d in days), "batches of 4: several parts a day"

    target = config(tmp_path / "target.toml", tmp_path / "target", archive)
    parts = [str(p) for d in days for p in sorted(d.glob("part-*.parquet"))]
    output = run_cli("import", "--config", str(target), *parts)
    assert sum(int(line.split(": ")[1].split()[0]) for line in output.splitlines()) == 10
    assert spans_of(tmp_path / "target" / "lumina.db") == expired, "every column as it was"
