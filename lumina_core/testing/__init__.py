"""Testing tools for plugin authors: a pytest plugin (registered under ``pytest11``, so installing Lumina is
enough) with fixtures to run a real Lumina with your plugins, build OTLP requests, record alerts and fake a
queue; and, in :mod:`lumina_core.testing.contracts`, a contract suite per component kind.

    def test_my_sink_gets_alerts(lumina_server, recording_sink):
        server = lumina_server(plugins=[my_plugin, recording_sink], settings={"alerts.sinks": ["recording"]})
        export(server, otlp_request([llm_span(input_tokens=10_000)], service="shop"))
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from lumina_core.plugin_api import Alert, ComponentConfig, ComponentFactory, Delivery, QueueStatus, SpanBatch, hookimpl

pytest.register_assert_rewrite("lumina_core.testing.contracts")

__all__ = [
    "FakeQueue",
    "Received",
    "Receiver",
    "RecordingSink",
    "export",
    "http_receiver",
    "kv",
    "llm_span",
    "otlp_request",
]


def kv(key: str, value: Any) -> KeyValue:
    """An OTLP attribute."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def otlp_request(
    spans: list[dict[str, Any]], service: str = "raw", resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    """A protobuf export request from plain dicts: ``trace_id``/``span_id`` bytes, ``name``, ``start``/``end``
    (Unix nanoseconds), ``attributes`` (a dict), ``status_code``; anything left out gets a sensible value."""
    pb_spans = []
    for s in spans:
        span = Span(
            trace_id=s.get("trace_id", os.urandom(16)),
            span_id=s.get("span_id", os.urandom(8)),
            parent_span_id=s.get("parent_span_id", b""),
            name=s.get("name", "op"),
            kind=s.get("kind", Span.SPAN_KIND_CLIENT),
            start_time_unix_nano=s.get("start", 1_700_000_000_000_000_000),
            end_time_unix_nano=s.get("end", 1_700_000_000_250_000_000),
            attributes=[kv(k, v) for k, v in s.get("attributes", {}).items()],
        )
        if "status_code" in s:
            span.status.code = s["status_code"]
        pb_spans.append(span)
    resource_attrs = {"service.name": service, **(resource or {})}
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv(k, v) for k, v in resource_attrs.items()]),
                scope_spans=[ScopeSpans(spans=pb_spans)],
            )
        ]
    )


def llm_span(
    model: str = "gpt-4o",
    provider: str = "openai",
    input_tokens: int = 1000,
    output_tokens: int = 100,
    start_ns: int | None = None,
    latency_ms: float = 250,
    **attributes: Any,
) -> dict[str, Any]:
    """An LLM call in the OpenTelemetry GenAI convention, for :func:`otlp_request` (default: now)."""
    start = start_ns if start_ns is not None else time.time_ns()
    return {
        "name": f"chat {model}",
        "start": start,
        "end": start + int(latency_ms * 1e6),
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            **attributes,
        },
    }


def export(server: Any, request: ExportTraceServiceRequest) -> None:
    """Send a request to a running Lumina's OTLP/HTTP endpoint; it returns once the spans are stored."""
    response = httpx.post(
        server.otlp_http_url,
        content=request.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


class RecordingSink:
    """An alert sink of type ``recording`` that keeps every alert it is sent, in :attr:`alerts`.

    Register the instance itself as a plugin (``lumina_server(plugins=[recording_sink])``) and name
    ``recording`` in ``alerts.sinks``.
    """

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    @hookimpl
    def lumina_register_alert_sinks(self) -> list[ComponentFactory]:
        return [ComponentFactory("recording", lambda ctx, config: self, ComponentConfig, "Keeps alerts (tests).")]

    def wait_for(self, count: int, timeout: float = 10) -> list[Alert]:
        """The alerts once at least ``count`` arrived (they are delivered by a background task)."""
        deadline = time.monotonic() + timeout
        while len(self.alerts) < count:
            assert time.monotonic() < deadline, f"{len(self.alerts)} of {count} alerts arrived"
            time.sleep(0.02)
        return self.alerts


@dataclass
class Received:
    """One request a :class:`Receiver` got."""

    headers: dict[str, str]
    """Header names in lowercase."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on loopback for sinks to send to. It answers ``status`` (default 200), except
    500 to the first ``fail_first`` requests; ``requests`` holds all it got, ``accepted`` those it answered
    with a 2xx."""

    url: str
    fail_first: int = 0
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        """The accepted requests, once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"{len(self.accepted)} of {count} requests arrived"
            time.sleep(0.02)
        return self.accepted


@contextmanager
def http_receiver(fail_first: int = 0, port: int = 0) -> Iterator[Receiver]:
    """A :class:`Receiver` on 127.0.0.1 (an ephemeral port unless ``port``), stopped on exit."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received = Received({k.lower(): v for k, v in self.headers.items()}, body)
            receiver.requests.append(received)
            status = 500 if len(receiver.requests) <= receiver.fail_first else receiver.status
            if status < 300:
                receiver.accepted.append(received)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else b"refused")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", fail_first)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class _FakeDelivery:
    def __init__(self, queue: FakeQueue, batch: SpanBatch) -> None:
        self.queue, self.batch = queue, batch

    async def ack(self) -> None:
        self.queue.acked.append(self.batch)

    async def nack(self, error: Exception, *, retryable: bool = True) -> None:
        self.queue.nacked.append((self.batch, error, retryable))


class FakeQueue:
    """A queue backend in memory that hands out what was put, and records acks and nacks: for testing a
    component that consumes batches without running Lumina."""

    def __init__(self) -> None:
        self.waiting: asyncio.Queue[SpanBatch] = asyncio.Queue()
        self.acked: list[SpanBatch] = []
        self.nacked: list[tuple[SpanBatch, Exception, bool]] = []
        self._depth = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def put(self, batch: SpanBatch) -> None:
        self.waiting.put_nowait(batch)
        self._depth += len(batch.spans)

    async def consume(self, max_spans: int) -> AsyncIterator[list[Delivery]]:
        while True:
            batch = await self.waiting.get()
            self._depth -= len(batch.spans)
            yield [_FakeDelivery(self, batch)]

    def status(self) -> QueueStatus:
        return QueueStatus(ok=True, waiting_spans=self._depth)


@pytest.fixture
def lumina_server(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a real Lumina: ``lumina_server(plugins=[...], settings={"dotted.key": value})`` returns its
    endpoints (``http_url``, ``otlp_http_url``, ``grpc_target``) on ephemeral loopback ports. It runs the
    built-in plugins plus ``plugins`` (entry points off unless ``entry_points=True``), on SQLite under the
    test's ``tmp_path``; every server started is stopped when the test ends."""
    from lumina_core.app import Lumina
    from lumina_core.config import load_settings
    from lumina_core.plugins import PluginHost, builtin_plugins
    from lumina_core.server import LuminaServer

    running: list[Any] = []

    def start(
        plugins: Sequence[object] = (), settings: dict[str, Any] | None = None, entry_points: bool = False
    ) -> Any:
        overrides = {
            "data_dir": str(tmp_path / f"lumina-{len(running)}"),
            "server.port": 0,
            "server.otlp_http_port": 0,
            "server.otlp_grpc_port": 0,
            "plugins.entry_points": entry_points,
            **(settings or {}),
        }
        host = PluginHost([*builtin_plugins(), *plugins], entry_points=entry_points)
        lumina = Lumina(load_settings(None, env={}, overrides=overrides), host)
        context = LuminaServer(lumina, log_level="warning").in_thread()
        endpoints = context.__enter__()
        running.append(context)
        return endpoints

    yield start
    for context in reversed(running):
        context.__exit__(None, None, None)


@pytest.fixture
def recording_sink() -> RecordingSink:
    """A :class:`RecordingSink`: register it as a plugin and name ``recording`` in ``alerts.sinks``."""
    return RecordingSink()


@pytest.fixture
def fake_queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback HTTP :class:`Receiver` for an alert sink to send to (set ``status`` to make it refuse)."""
    with http_receiver() as running:
        yield running
