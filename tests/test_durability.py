"""Accept means durable: clients hear back only after commit, nothing is lost or stored twice."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.exc import DBAPIError

from lumina_core.worker import _retryable
from tests.support.db import fetch_all
from tests.support.otlp import raw_request

EXPORTERS, SPANS_EACH, SPANS_PER_TRACE = 50, 200, 10


def run_exporter(index: int, server) -> set[tuple[str, str]]:
    """One application: 200 spans in traces of 10, exported over gRPC or HTTP; returns the ids it sent."""
    if index % 2:
        exporter = GrpcExporter(endpoint=server.grpc_target, insecure=True)
    else:
        exporter = HttpExporter(endpoint=server.otlp_http_url)
    sent = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"app-{index}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4096, max_export_batch_size=64))
    provider.add_span_processor(SimpleSpanProcessor(sent))
    tracer = provider.get_tracer("load")
    for _ in range(SPANS_EACH // SPANS_PER_TRACE):
        with tracer.start_as_current_span("root"):
            for i in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"step-{i}") as span:
                    span.set_attribute("gen_ai.provider.name", "openai")
                    span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                    span.set_attribute("gen_ai.usage.input_tokens", 10)
    assert provider.force_flush(60_000)
    provider.shutdown()
    return {(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in sent.get_finished_spans()}


def test_fifty_concurrent_exporters_land_every_span_exactly_once(lumina_factory, database_url: str) -> None:
    server = lumina_factory(database_url)
    with ThreadPoolExecutor(EXPORTERS) as pool:
        sent = set().union(*pool.map(run_exporter, range(EXPORTERS), [server] * EXPORTERS))
    assert len(sent) == EXPORTERS * SPANS_EACH
    stored = fetch_all(database_url, "SELECT trace_id, span_id FROM spans")
    assert len(stored) == len(set(stored)) == len(sent)
    assert set(stored) == sent
    (rollup,) = fetch_all(database_url, "SELECT COUNT(*), SUM(span_count), SUM(input_tokens) FROM traces")
    assert rollup == (EXPORTERS * SPANS_EACH // SPANS_PER_TRACE, len(sent), 10 * EXPORTERS * SPANS_EACH * 9 // 10)


def test_redelivered_spans_are_stored_once_and_rollups_stay_right(server, database_url: str) -> None:
    body = raw_request([{"name": "a", "attributes": {"gen_ai.usage.input_tokens": 5, "gen_ai.system": "x"}}])
    for _ in range(3):
        response = httpx.post(
            server.otlp_http_url, content=body.SerializeToString(), headers={"content-type": "application/x-protobuf"}
        )
        assert response.status_code == 200
    assert fetch_all(database_url, "SELECT COUNT(*) FROM spans") == [(1,)]
    assert fetch_all(database_url, "SELECT span_count, input_tokens FROM traces") == [(1, 5)]


@pytest.fixture
def locked_sqlite(lumina_factory, tmp_path: Path):
    """A server on SQLite with room for 10 pending spans, and a way to block its writer."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    server = lumina_factory(url, **{"queue.max_pending_spans": 10})
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None, check_same_thread=False)
    return server, blocker


def test_client_is_answered_only_after_commit_and_a_full_queue_says_retry(locked_sqlite) -> None:
    server, blocker = locked_sqlite
    headers = {"content-type": "application/x-protobuf"}
    first = raw_request([{"name": f"s{i}"} for i in range(8)], service="blocked").SerializeToString()
    blocker.execute("BEGIN EXCLUSIVE")  # the worker's commit now waits for this lock
    results: dict[str, httpx.Response] = {}
    sender = threading.Thread(
        target=lambda: results.update(
            first=httpx.post(server.otlp_http_url, content=first, headers=headers, timeout=60)
        )
    )
    sender.start()
    sender.join(1.5)
    assert sender.is_alive(), "the client was answered before its spans were committed"

    second = raw_request([{"name": f"t{i}"} for i in range(5)], service="blocked").SerializeToString()
    refused = httpx.post(server.otlp_http_url, content=second, headers=headers)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(raw_request([{"name": f"g{i}"} for i in range(5)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    blocker.execute("ROLLBACK")
    sender.join(30)
    assert results["first"].status_code == 200
    traces = httpx.get(f"{server.http_url}/api/v1/traces", params={"service": "blocked"}).json()["data"]
    assert sum(t["span_count"] for t in traces) == 8
    # capacity is back once the batch is committed
    assert httpx.post(server.otlp_http_url, content=second, headers=headers).status_code == 200


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (DBAPIError("INSERT", {}, _DriverError("57P01")), True),  # the server is shutting down (a restart)
        (DBAPIError("INSERT", {}, _DriverError("08003")), True),  # the connection is gone
        (DBAPIError("INSERT", {}, _DriverError("40P01")), True),  # deadlock
        (ConnectionRefusedError(111, "refused"), True),
        (DBAPIError("INSERT", {}, _DriverError("22P02")), False),  # data the database will never take
        (DBAPIError("INSERT", {}, _DriverError(None)), False),
        (ValueError("bad"), False),
    ],
)
def test_storage_failures_are_retried_only_when_a_retry_can_help(error: Exception, retry: bool) -> None:
    assert _retryable(error) is retry
