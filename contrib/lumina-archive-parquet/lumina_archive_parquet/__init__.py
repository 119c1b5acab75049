"""A Lumina archiver that writes the spans the retention sweep deletes as Parquet files.

Layout: ``<directory>/<project>/<YYYY-MM-DD>/part-<n>-<random>.parquet``. Parquet files cannot be appended to,
so every ``archive`` call (the sweep works in batches) adds one part to the day's directory; the directory is
what ``archive`` returns and what ``read`` (and ``lumina import``) takes, as does any single part.

Every part has the same explicit schema: all the columns of Lumina's ``spans`` table, typed (string, int64,
float64, bool), with the JSON columns (attributes, events, messages …) as JSON text. So that rows read back
exactly as they were given, each part's footer records which keys the rows had; a key the rows did not have is
written as nulls and left out on read, a value that does not fit its column's type (say, an int in a float
column) makes that column JSON text in that part, and columns Lumina does not know are kept as JSON text too.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from lumina_core import ComponentConfig, ComponentFactory, hookimpl

__all__ = ["SPAN_COLUMNS", "ParquetArchiver", "ParquetArchiverConfig", "lumina_register_archivers"]

CHUNK_ROWS = 1000
METADATA_KEY = b"lumina.archive"
MISSING_COLUMN = "_lumina_missing"
"""Written only when some rows of a part lack keys other rows have: per row, the keys it lacks."""
PART = re.compile(r"part-(\d+)-[0-9a-f]+\.parquet")

_JSON = "json"
_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    _JSON: pa.string(),
}

SPAN_COLUMNS: dict[str, str] = {
    "project_id": "string",
    "trace_id": "string",
    "span_id": "string",
    "parent_span_id": "string",
    "name": "string",
    "kind": "string",
    "service_name": "string",
    "scope_name": "string",
    "start_time_unix_nano": "int64",
    "end_time_unix_nano": "int64",
    "latency_ms": "float64",
    "status_code": "string",
    "status_message": "string",
    "status": "string",
    "error_type": "string",
    "user_id": "string",
    "session_id": "string",
    "is_llm": "bool",
    "operation": "string",
    "provider": "string",
    "request_model": "string",
    "response_model": "string",
    "model": "string",
    "input_tokens": "int64",
    "cache_read_tokens": "int64",
    "cache_write_tokens": "int64",
    "output_tokens": "int64",
    "reasoning_tokens": "int64",
    "cost_usd": "float64",
    "cost_source": "string",
    "pricing_status": "string",
    "pricing_rule": "string",
    "response_id": "string",
    "counted": "bool",
    "finish_reasons": _JSON,
    "input_messages": _JSON,
    "output_messages": _JSON,
    "system_prompt": "string",
    "invocation_parameters": _JSON,
    "attributes": _JSON,
    "resource_attributes": _JSON,
    "events": _JSON,
    "links": _JSON,
}
"""The columns of Lumina's ``spans`` table and how each is stored."""


class ParquetArchiverConfig(ComponentConfig):
    directory: str | None = Field(None, description="where archives go; default: <data_dir>/archive-parquet")
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field("zstd", description="Parquet compression codec")


def _fits(kind: str, value: Any) -> bool:
    """Whether a non-null ``value`` is stored as itself in a column of ``kind`` (and so reads back the same)."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "int64":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if kind == "float64":
        return isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    return True


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _table(spans: list[dict[str, Any]]) -> pa.Table:
    """The rows as a table of every span column (and any others the rows have), with the footer that lets
    ``_read_part`` give them back as they were."""
    keys: dict[str, None] = {}  # every key of any row, in first-seen order
    for span in spans:
        keys.update(dict.fromkeys(span))
    if MISSING_COLUMN in keys:
        raise ValueError(f"a span has a column named {MISSING_COLUMN!r}, which this archiver uses itself")
    columns = [*SPAN_COLUMNS, *(k for k in keys if k not in SPAN_COLUMNS)]
    fields, arrays, as_json = [], [], []
    for column in columns:
        values = [span.get(column) for span in spans]
        kind = SPAN_COLUMNS.get(column, _JSON)
        if kind != _JSON and not all(v is None or _fits(kind, v) for v in values):
            kind = _JSON  # this part only: the values read back as they were
        if kind == _JSON:
            as_json.append(column)
            values = [_dumps(v) for v in values]
        fields.append(pa.field(column, _TYPES[kind]))
        arrays.append(pa.array(values, type=_TYPES[kind]))
    missing = [[k for k in keys if k not in span] or None for span in spans]
    if any(missing):
        fields.append(pa.field(MISSING_COLUMN, pa.list_(pa.string())))
        arrays.append(pa.array(missing, type=pa.list_(pa.string())))
    footer = {"version": 1, "keys": list(keys), "json": as_json, "missing": any(missing)}
    schema = pa.schema(fields, metadata={METADATA_KEY: orjson.dumps(footer)})
    return pa.Table.from_arrays(arrays, schema=schema)


def _footer(path: Path) -> dict[str, Any] | None:
    """The footer ``_table`` wrote to ``path``; ``None`` if ``path`` is not Parquet, or Parquet someone else wrote."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except pa.ArrowInvalid:  # not Parquet (or cut short)
        return None
    return orjson.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None


def _read_part(path: Path, footer: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    keys: list[str] = footer["keys"]
    as_json = set(footer["json"])
    wanted = [*keys, MISSING_COLUMN] if footer["missing"] else keys
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=wanted):
        values: dict[str, list[Any]] = {}
        for key in keys:
            column = batch.column(key).to_pylist()
            values[key] = [None if v is None else orjson.loads(v) for v in column] if key in as_json else column
        if not footer["missing"]:
            yield [{key: values[key][i] for key in keys} for i in range(batch.num_rows)]
            continue
        lacking = batch.column(MISSING_COLUMN).to_pylist()
        yield [
            {key: values[key][i] for key in keys if not lacking[i] or key not in lacking[i]}
            for i in range(batch.num_rows)
        ]


def _parts(directory: Path) -> list[tuple[int, Path]]:
    """The parts in a day's directory with their numbers, in the order they were written."""
    found = [(int(m.group(1)), p.name, p) for p in directory.iterdir() if (m := PART.fullmatch(p.name))]
    return [(number, path) for number, _, path in sorted(found)]


def _fsync_directory(path: Path) -> None:
    if os.name != "posix":  # directories cannot be opened (nor synced) elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directories(path: Path) -> None:
    """``mkdir -p``, with every new directory's entry synced to disk."""
    new = []
    while not path.is_dir():
        new.append(path)
        path = path.parent
    for directory in reversed(new):
        directory.mkdir(exist_ok=True)
        _fsync_directory(directory.parent)


class ParquetArchiver:
    """``<directory>/<project>/<YYYY-MM-DD>/part-<n>-<random>.parquet``: each call writes one more part (to a
    hidden temporary name, synced, then renamed) and returns the day's directory."""

    def __init__(self, directory: Path, compression: str = "zstd") -> None:
        self.directory = directory
        self.compression = None if compression == "none" else compression

    def day_directory(self, project_id: str, day: date) -> Path:
        if not project_id or project_id.startswith(".") or "/" in project_id or os.sep in project_id:
            raise ValueError(f"project id {project_id!r} cannot name a directory")
        return self.directory / project_id / day.isoformat()

    async def archive(self, project_id: str, day: date, spans: list[dict[str, Any]]) -> str:
        where = self.day_directory(project_id, day)
        await asyncio.to_thread(self._write, where, spans)
        return str(where)

    def _write(self, where: Path, spans: list[dict[str, Any]]) -> None:
        table = _table(spans)
        _make_directories(where)
        parts = _parts(where)
        number = parts[-1][0] + 1 if parts else 1
        name = f"part-{number:05d}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = where / f".{name}.tmp"
        try:
            with temporary.open("wb") as out:
                pq.write_table(table, out, compression=self.compression)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, where / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(where)

    def read(self, path: Path) -> Iterator[list[dict[str, Any]]] | None:
        """The rows of a day's directory (every part, in order) or of one part; ``None`` for anything else."""
        if path.is_file() and path.suffix == ".parquet":
            footer = _footer(path)
            return None if footer is None else _read_part(path, footer)
        if not path.is_dir():
            return None
        parts = [part for _, part in _parts(path)]
        if not parts:
            return None
        footers = {part: _footer(part) for part in parts}
        readable = [(part, footer) for part, footer in footers.items() if footer is not None]
        if len(readable) < len(parts):
            broken = ", ".join(part.name for part, footer in footers.items() if footer is None)
            raise ValueError(f"{path}: not parts of a Lumina Parquet archive (or damaged): {broken}")
        return (chunk for part, footer in readable for chunk in _read_part(part, footer))


@hookimpl
def lumina_register_archivers() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="parquet",
            create=lambda ctx, config: ParquetArchiver(
                Path(config.directory or Path(ctx.data_dir) / "archive-parquet"), config.compression
            ),
            config_model=ParquetArchiverConfig,
            description="Parquet files, a directory per project and UTC day (query them with DuckDB, pandas …).",
            stability="beta",
        )
    ]
