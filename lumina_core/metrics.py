"""Self-observability: Prometheus metrics of one app, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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
        self.queue_depth = Gauge("lumina_queue_depth_spans", "Spans waiting to be stored", registry=self.registry)

    def unpriced(self, provider: str | None, model: str | None) -> None:
        self.unpriced_spans.labels(provider or "", model or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
