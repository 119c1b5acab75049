"""The one export function behind both OTLP transports, and the error classes they map to status codes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from lumina_core.auth import Authenticator
from lumina_core.intake.decode import DecodedRequest, spans_from_request
from lumina_core.metrics import Metrics
from lumina_core.plugin_api import QueueBackend, SpanBatch
from lumina_core.storage.limits import DailyLimiter

OFF_LOOP_BYTES = 256 * 1024
"""Requests larger than this are converted in a worker thread so the event loop keeps serving."""


@dataclass(frozen=True)
class ExportResult:
    accepted: int
    rejected: int
    message: str

    def response(self) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        if self.rejected:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = self.message
        return response


class Intake:
    """Validates export requests and puts their spans on the queue.

    ``export`` returns once the accepted spans are durable; it raises ``QueueFull`` or
    ``QueueUnavailable`` (retryable) when the queue cannot take them. Spans that fail validation
    are reported back through ``partial_success`` while the valid ones are stored.
    """

    def __init__(self, queue: QueueBackend, metrics: Metrics, auth: Authenticator, limiter: DailyLimiter) -> None:
        self.queue = queue
        self.metrics = metrics
        self.auth = auth
        self.limiter = limiter

    async def project_for(self, key: str | None, project_id: str | None) -> str:
        """The project an export with this API key (and ``x-lumina-project``) files its spans under.

        Raises ``AuthError`` when the key may not ingest, ``InvalidProjectId`` for a malformed project id.
        """
        return (await self.auth.access(key, "ingest", project_id)).project_id

    async def export(
        self, body: bytes, parse: Callable[[bytes], ExportTraceServiceRequest], project_id: str
    ) -> ExportResult:
        """Decode ``body`` with ``parse`` (protobuf or OTLP/JSON), validate, and enqueue the spans.

        Raises ``MalformedRequest`` for a body that cannot be decoded at all.
        """
        decoded: DecodedRequest
        if len(body) > OFF_LOOP_BYTES:
            decoded = await asyncio.to_thread(lambda: spans_from_request(parse(body)))
        else:
            decoded = spans_from_request(parse(body))
        spans, rejected, reasons = decoded.spans, decoded.rejected, list(decoded.reasons)
        if spans:
            per_trace = Counter(span.trace_id for span in spans)
            admission = await self.limiter.admit(project_id, per_trace)
            if len(admission.admitted) < len(per_trace):
                spans = [span for span in spans if span.trace_id in admission.admitted]
                rejected += admission.refused_spans
                reasons.append(
                    f"project {project_id!r} reached its daily limit of {admission.limit} traces (it resets at "
                    f"00:00 UTC): {admission.refused_spans} spans of new traces refused"
                )
        if rejected:
            self.metrics.spans_rejected.inc(rejected)
        if spans:
            await self.queue.put(SpanBatch(project_id, spans))
            self.metrics.spans_accepted.inc(len(spans))
        return ExportResult(len(spans), rejected, "; ".join(reasons))
