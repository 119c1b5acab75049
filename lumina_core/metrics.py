"""Self-observability: Prometheus metrics of one app, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

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
        self.queue_depth = Gauge("lumina_queue_depth_spans", "Spans waiting to be stored", registry=self.registry)

    def unpriced(self, provider: str | None, model: str | None) -> None:
        labels = (provider or "", model or "")
        if labels not in self._unpriced_labels:
            if len(self._unpriced_labels) >= MAX_LABEL_SETS:  # model names come from clients
                labels = ("other", "other")
            self._unpriced_labels.add(labels)
        self.unpriced_spans.labels(*labels).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
