"""The built-in archiver: one gzip-compressed JSON Lines file per project and UTC day, in a directory."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from lumina_core import ComponentConfig, ComponentFactory, hookimpl

SUFFIX = ".jsonl.gz"
CHUNK_ROWS = 1000


class JsonlArchiverConfig(ComponentConfig):
    directory: str | None = Field(None, description="where archives go; default: <data_dir>/archive")
    compresslevel: int = Field(6, ge=1, le=9)


class JsonlArchiver:
    """``<directory>/<project>/<YYYY-MM-DD>.jsonl.gz``, one span per line. Each call appends a gzip member
    (a file of several members is one valid gzip stream) and syncs it to disk before returning."""

    def __init__(self, directory: Path, compresslevel: int) -> None:
        self.directory = directory
        self.compresslevel = compresslevel

    async def archive(self, project_id: str, day: date, spans: list[dict[str, Any]]) -> str:
        path = self.directory / project_id / f"{day.isoformat()}{SUFFIX}"
        await asyncio.to_thread(self._append, path, spans)
        return str(path)

    def _append(self, path: Path, spans: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = b"".join(orjson.dumps(span) + b"\n" for span in spans)
        with path.open("ab") as raw:
            raw.write(gzip.compress(lines, self.compresslevel))
            raw.flush()
            os.fsync(raw.fileno())

    def read(self, path: Path) -> Iterator[list[dict[str, Any]]] | None:
        if not path.name.endswith(SUFFIX):
            return None
        return self._rows(path)

    @staticmethod
    def _rows(path: Path) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        with gzip.open(path, "rb") as lines:
            for line in lines:
                chunk.append(orjson.loads(line))
                if len(chunk) >= CHUNK_ROWS:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


@hookimpl
def lumina_register_archivers() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="jsonl",
            create=lambda ctx, config: JsonlArchiver(
                Path(config.directory or Path(ctx.data_dir) / "archive"), config.compresslevel
            ),
            config_model=JsonlArchiverConfig,
            description="Gzip-compressed JSON Lines, one file per project and UTC day (lumina import reads them).",
        )
    ]
