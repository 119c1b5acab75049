"""Lumina as many processes (``serve --role intake|worker|api``) on real NATS JetStream and PostgreSQL, loaded
by the OpenTelemetry SDK's own exporters: every span an exporter saw acknowledged is stored exactly once —
in normal running, and when a worker is killed mid-batch, PostgreSQL restarts, or NATS restarts."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from lumina_core.testing import llm_span, otlp_request
from lumina_core.testing.processes import LuminaProcess, lumina_processes
from tests.conftest import IN_CI
from tests.support.db import fetch_all

lumina_queue_nats = pytest.importorskip("lumina_queue_nats", reason="contrib/lumina-queue-nats is not installed")
from lumina_queue_nats.testing import NatsServer  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SpanKey = tuple[str, str]


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, which it may restart."""
    server = NatsServer(tmp_path / "nats-store")
    server.start()
    yield server
    server.stop()


class Acknowledged(SpanExporter):
    """Wraps a real OTLP exporter and remembers the spans whose export Lumina acknowledged."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.spans: set[SpanKey] = set()
        self.failed_exports = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.spans.update(
                (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in spans if s.context
            )
        else:
            self.failed_exports += 1
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def send(exporter: SpanExporter, service: str, traces: int, spans_per_trace: int = 5) -> None:
    """``traces`` agent traces (a root and LLM calls under it), through a BatchSpanProcessor as an app would."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=traces * spans_per_trace + 1, max_export_batch_size=512, schedule_delay_millis=50
        )
    )
    tracer = provider.get_tracer("scale-out")
    for t in range(traces):
        with tracer.start_as_current_span(f"agent {t % 7}"):
            for c in range(spans_per_trace - 1):
                with tracer.start_as_current_span("chat gpt-4o-mini") as span:
                    span.set_attributes(
                        {
                            "gen_ai.provider.name": "openai",
                            "gen_ai.request.model": "gpt-4o-mini",
                            "gen_ai.usage.input_tokens": 100 + c,
                            "gen_ai.usage.output_tokens": 20 + t % 13,
                        }
                    )
    provider.shutdown()  # flushes what is queued


def load(
    intakes: list[LuminaProcess],
    spans_per_sender: int,
    senders_per_intake: int = 2,
    during: Callable[[], None] | None = None,
) -> tuple[set[SpanKey], int]:
    """Concurrent senders, half over gRPC and half over OTLP/HTTP, spread over the intake processes;
    ``during`` runs meanwhile (a fault). Returns the acknowledged spans and how many exports failed."""
    exporters: list[Acknowledged] = []
    for intake in intakes:
        for i in range(senders_per_intake):
            inner = (
                GrpcExporter(endpoint=intake.grpc_target, insecure=True, timeout=30)
                if i % 2 == 0
                else HttpExporter(endpoint=intake.otlp_http_url, timeout=30)
            )
            exporters.append(Acknowledged(inner))
    threads = [
        threading.Thread(target=send, args=(exporter, f"svc-{n}", spans_per_sender // 5))
        for n, exporter in enumerate(exporters)
    ]
    for thread in threads:
        thread.start()
    if during is not None:
        during()
    for thread in threads:
        thread.join(300)
    acked = set().union(*(e.spans for e in exporters))
    return acked, sum(e.failed_exports for e in exporters)


def wait_stored(database_url: str, expected: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            [(count,)] = fetch_all(database_url, "SELECT count(*) FROM spans")
        except Exception:  # PostgreSQL restarting
            count = -1
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def assert_stored_exactly_once(database_url: str, acked: set[SpanKey]) -> None:
    stored = fetch_all(database_url, "SELECT trace_id, span_id FROM spans")
    assert len(stored) == len(set(stored))
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged spans were not stored, e.g. {sorted(missing)[:3]}"
    # Rollups and analytics count each span once, however often its batch was delivered.
    [(rolled_up, llm_spans)] = fetch_all(database_url, "SELECT sum(span_count), sum(llm_span_count) FROM traces")
    assert rolled_up == len(stored)
    assert llm_spans == len(stored) * 4 // 5


def test_two_intakes_and_three_workers_store_100k_spans_exactly_once(
    write_config: Callable[..., Path], pg_url: str, shared_nats_url: str
) -> None:
    config = write_config(pg_url, shared_nats_url)
    roles = [("intake",), ("intake",), ("worker",), ("worker",), ("worker",), ("api",)]
    with lumina_processes(config, *roles) as processes:
        intakes, workers, api = processes[:2], processes[2:5], processes[5]
        acked, failed = load(intakes, 12_500, senders_per_intake=4)
        assert failed == 0 and len(acked) == 100_000
        assert wait_stored(pg_url, 100_000) == 100_000
        assert_stored_exactly_once(pg_url, acked)
        stored_by = [httpx.get(f"{w.http_url}/-/ready").json()["checks"]["worker"]["spans_stored"] for w in workers]
        assert sum(stored_by) >= 100_000 and all(stored_by), f"every worker takes a share: {stored_by}"
        # The roles serve only their own routes.
        assert httpx.get(f"{api.http_url}/api/v1/traces?limit=1").status_code == 200
        assert httpx.get(f"{intakes[0].http_url}/api/v1/traces").status_code == 404
        assert httpx.post(f"{workers[0].http_url}/v1/traces", content=b"").status_code == 404
        assert httpx.post(f"{api.http_url}/v1/traces", content=b"").status_code == 404


def test_a_worker_killed_mid_batch_loses_nothing(
    write_config: Callable[..., Path], pg_url: str, shared_nats_url: str
) -> None:
    config = write_config(pg_url, shared_nats_url, ack_wait_seconds=3)
    with lumina_processes(config, ("intake",), ("worker",), ("worker",)) as (intake, victim, _survivor):

        def kill_when_busy() -> None:
            wait_stored(pg_url, 2_000, timeout=60)
            victim.kill()

        acked, _ = load([intake], 10_000, senders_per_intake=2, during=kill_when_busy)
        assert victim.process.returncode == -9
        assert wait_stored(pg_url, len(acked)) >= len(acked)
        assert_stored_exactly_once(pg_url, acked)
        assert len(acked) == 20_000


def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True, timeout=60)


@pytest.fixture
def restartable_postgres() -> Callable[[Callable[[], None]], None]:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or not Path("/etc/postgresql").is_dir():
        message = "restarting PostgreSQL needs root and pg_ctlcluster (Debian's postgresql package)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)

    def restart(while_down: Callable[[], None]) -> None:
        pg_ctl("stop")
        try:
            while_down()
            time.sleep(1)
        finally:
            pg_ctl("start")

    return restart


def test_postgresql_restarted_during_ingest_loses_nothing(
    write_config: Callable[..., Path],
    pg_url: str,
    shared_nats_url: str,
    restartable_postgres: Callable[[Callable[[], None]], None],
) -> None:
    config = write_config(pg_url, shared_nats_url, retry_delay_seconds=0.5, retry_delay_max_seconds=2)
    with lumina_processes(config, ("intake",), ("worker",), ("worker",)) as (intake, worker, _):
        ready_while_down: list[int] = []

        def check_readiness() -> None:
            ready_while_down.append(httpx.get(f"{intake.http_url}/-/ready", timeout=10).status_code)
            ready_while_down.append(httpx.get(f"{worker.http_url}/-/ready", timeout=10).status_code)

        def restart_when_busy() -> None:
            wait_stored(pg_url, 2_000, timeout=60)
            restartable_postgres(check_readiness)

        acked, _ = load([intake], 10_000, senders_per_intake=2, during=restart_when_busy)
        assert ready_while_down == [200, 503], "intake stays in the load balancer; the worker is out"
        assert len(acked) == 20_000, "intake kept accepting into NATS while PostgreSQL was down"
        assert wait_stored(pg_url, len(acked)) >= len(acked)
        assert_stored_exactly_once(pg_url, acked)


def test_nats_restarted_during_ingest_loses_nothing(
    write_config: Callable[..., Path], pg_url: str, own_nats: NatsServer
) -> None:
    config = write_config(pg_url, own_nats.url)
    with lumina_processes(config, ("intake",), ("worker",), ("worker",)) as (intake, *_):
        refused: list[int] = []

        def restart_when_busy() -> None:
            wait_stored(pg_url, 2_000, timeout=60)
            own_nats.stop()
            one_span = otlp_request([llm_span()]).SerializeToString()
            protobuf = {"content-type": "application/x-protobuf"}
            refused.append(httpx.post(intake.otlp_http_url, content=one_span, headers=protobuf).status_code)
            ready = httpx.get(f"{intake.http_url}/-/ready")
            refused.append(ready.status_code)
            time.sleep(1)
            own_nats.start()

        acked, _ = load([intake], 10_000, senders_per_intake=2, during=restart_when_busy)
        assert refused == [503, 503]
        assert len(acked) == 20_000, "the exporters' retries landed"
        assert wait_stored(pg_url, len(acked)) >= len(acked)
        assert_stored_exactly_once(pg_url, acked)
