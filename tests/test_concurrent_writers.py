"""Several writers (processes, or reprice beside the server) on one database keep trace rollups right."""

from __future__ import annotations

import asyncio
import os

from lumina_core.components import build_components
from lumina_core.config import load_settings
from lumina_core.extraction import ExtractStage
from lumina_core.intake.decode import spans_from_request
from lumina_core.plugin_api import SpanBatch
from lumina_core.plugins import PluginHost
from lumina_core.storage.database import create_engine, migrate
from lumina_core.storage.writer import SpanWriter
from tests.support.db import fetch_all
from tests.support.otlp import raw_request

WRITERS, SPANS_EACH = 4, 15


def test_concurrent_transactions_on_one_trace_keep_its_rollup_whole(database_url: str) -> None:
    stage = ExtractStage(build_components(load_settings(None, env={}), PluginHost(entry_points=False)).extractors)
    trace_id = os.urandom(16)

    def rows() -> list[dict]:
        request = raw_request([{"trace_id": trace_id, "name": "s"}])
        return stage.rows(SpanBatch("default", spans_from_request(request).spans))

    async def run() -> None:
        engines = [create_engine(database_url) for _ in range(WRITERS)]
        await migrate(engines[0])
        writers = [SpanWriter(engine) for engine in engines]

        async def write_many(writer: SpanWriter) -> None:
            for _ in range(SPANS_EACH):
                await writer.write(writer.prepare(rows()))

        try:
            await asyncio.gather(*(write_many(w) for w in writers))
        finally:
            for engine in engines:
                await engine.dispose()

    asyncio.run(run())
    assert fetch_all(database_url, "SELECT COUNT(*) FROM spans") == [(WRITERS * SPANS_EACH,)]
    assert fetch_all(database_url, "SELECT span_count FROM traces") == [(WRITERS * SPANS_EACH,)]
