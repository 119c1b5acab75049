"""Serves a :class:`Lumina` over HTTP (main port and OTLP/HTTP port, one uvicorn server) and gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from lumina_core.app import Lumina


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


GC_GEN0_THRESHOLD = 50_000
GIL_SWITCH_INTERVAL_S = 0.001


def tune_runtime() -> None:
    """Process-wide interpreter settings for serving (not applied when embedded, e.g. in tests).

    - Collect the youngest GC generation less often and never rescan what start-up allocated: intake
      allocates millions of short-lived attribute dicts, and CPython's default threshold (700) cost
      about a tenth of ingest throughput (bench/ingest.py).
    - Hand the GIL over every 1 ms instead of 5 ms: SQLite's driver thread needs the GIL back after
      every statement it runs, and with the default it waited behind extraction for most of its time.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


@dataclass
class Endpoints:
    host: str
    http_port: int
    otlp_http_port: int | None
    otlp_grpc_port: int | None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://{self.host}:{self.otlp_http_port or self.http_port}/v1/traces"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.otlp_grpc_port}"


class LuminaServer:
    """Binds the HTTP sockets up front (port 0 picks a free one) and serves until told to stop."""

    def __init__(self, lumina: Lumina, *, log_level: str = "info") -> None:
        self.lumina = lumina
        server = lumina.settings.server
        self.sockets = [bind_socket(server.host, server.port)]
        otlp_port = None
        if server.otlp_http_port is not None and server.runs("intake"):
            self.sockets.append(bind_socket(server.host, server.otlp_http_port))
            otlp_port = self.sockets[1].getsockname()[1]
        self.endpoints = Endpoints(server.host, self.sockets[0].getsockname()[1], otlp_port, None)
        config = uvicorn.Config(
            lumina.asgi_app(otlp_port),
            lifespan="on",
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        self.uvicorn = uvicorn.Server(config)

    async def serve(self) -> None:
        await self.uvicorn.serve(sockets=self.sockets)

    def run(self) -> None:
        """Serve in this thread, on uvloop when installed, until SIGINT/SIGTERM."""
        tune_runtime()
        self.uvicorn.run(sockets=self.sockets)

    @property
    def started(self) -> bool:
        return self.uvicorn.started

    def stop(self) -> None:
        self.uvicorn.should_exit = True

    @contextlib.contextmanager
    def in_thread(self, timeout: float = 30) -> Iterator[Endpoints]:
        """Run in a background thread with its own event loop (tests, benchmarks); stop on exit."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="lumina-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not (self.started or errors or not thread.is_alive()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if errors or not self.started:
            self.stop()
            thread.join(5)
            raise RuntimeError(f"Lumina did not start: {errors[0] if errors else 'timeout'}")
        self.endpoints.otlp_grpc_port = self.lumina.grpc_port
        try:
            yield self.endpoints
        finally:
            self.stop()
            thread.join(30)
