"""OTLP/gRPC: ``TraceService/Export`` on a ``grpc.aio`` server that shares the app's event loop.

The method takes the raw request bytes and decodes them itself, like the HTTP adapter, so that a
malformed message is answered ``INVALID_ARGUMENT`` with a reason instead of gRPC's generic error.
"""

from __future__ import annotations

import grpc

from lumina_core.auth import PROJECT_HEADER, AuthError, InvalidProjectId, key_from_headers
from lumina_core.intake.decode import MalformedRequest, parse_protobuf
from lumina_core.intake.export import Intake
from lumina_core.plugin_api import BatchRejected, QueueFull, QueueUnavailable

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
AUTH_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _export_handler(intake: Intake):
    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = {k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        try:
            project_id = await intake.project_for(key_from_headers(metadata.get), metadata.get(PROJECT_HEADER))
            result = await intake.export(body, parse_protobuf, project_id)
        except AuthError as exc:
            await context.abort(AUTH_CODES[exc.status], str(exc))
        except (MalformedRequest, BatchRejected, InvalidProjectId) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (QueueFull, QueueUnavailable) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return result.response().SerializeToString()

    return export


def create_grpc_server(intake: Intake, host: str, port: int, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """A ``grpc.aio`` server (not yet started) bound to ``host:port``; returns it with the bound port."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes)])
    handler = grpc.unary_unary_rpc_method_handler(
        _export_handler(intake), request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind OTLP/gRPC to {host}:{port}")
    return server, bound
