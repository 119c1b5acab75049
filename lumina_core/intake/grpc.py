"""OTLP/gRPC: the ``TraceService/Export`` method on a ``grpc.aio`` server sharing the app's event loop."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from lumina_core.intake.export import Intake
from lumina_core.intake.http import DEFAULT_PROJECT
from lumina_core.plugin_api import QueueFull, QueueUnavailable


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        try:
            result = await self.intake.export(request, DEFAULT_PROJECT, request.ByteSize())
        except (QueueFull, QueueUnavailable) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return result.response()


def create_grpc_server(intake: Intake, host: str, port: int, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """A started-later ``grpc.aio`` server bound to ``host:port``; returns it with the bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(intake), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind OTLP/gRPC to {host}:{port}")
    return server, bound
