"""Self-observability: Prometheus metrics of one app, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from lumina_core.plugin_api import QueueStatus

MAX_LABEL_SETS = 1_000


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.spans_accepted = Counter(
            "lumina_spans_accepted", "Spans accepted by intake and committed", registry=self.registry
        )
        self.spans_rejected = Counter(
            "lumina_spans_rejected", "Spans refused through OTLP partial success", registry=self.registry
        )
        self.unpriced_spans = Counter(
            "lumina_unpriced_spans",
            "LLM spans whose model no pricing rule knows (add a custom price)",
            ["provider", "model"],
            registry=self.registry,
        )
        self._unpriced_labels: set[tuple[str, str]] = set()
        self.queue_spans = Gauge("lumina_queue_depth_spans", "Spans waiting to be stored", registry=self.registry)
        self.queue_batches = Gauge(
            "lumina_queue_depth_batches", "Batches (messages) waiting to be stored", registry=self.registry
        )
        self.queue_up = Gauge(
            "lumina_queue_up", "1 when the queue can take and deliver batches", registry=self.registry
        )

    def show_queue(self, status: QueueStatus) -> None:
        self.queue_up.set(status.ok)
        if status.waiting_spans is not None:
            self.queue_spans.set(status.waiting_spans)
        if status.waiting_batches is not None:
            self.queue_batches.set(status.waiting_batches)

    def unpriced(self, provider: str | None, model: str | None) -> None:
        labels = (provider or "", model or "")
        if labels not in self._unpriced_labels:
            if len(self._unpriced_labels) >= MAX_LABEL_SETS:  # model names come from clients
                labels = ("other", "other")
            self._unpriced_labels.add(labels)
        self.unpriced_spans.labels(*labels).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
