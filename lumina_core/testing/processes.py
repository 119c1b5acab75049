"""``lumina serve`` as a subprocess on free loopback ports, for tests and benchmarks of whole deployments:
one process, or many intake / worker / API processes sharing one ``lumina.toml`` (ports by environment)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LuminaProcess:
    """One running ``lumina serve``; ``otlp_http_url`` and ``grpc_target`` are set for intake roles."""

    roles: tuple[str, ...]
    process: subprocess.Popen[bytes]
    http_port: int
    otlp_http_port: int | None
    grpc_port: int | None
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}/v1/traces"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.http_url}/-/ready", timeout=5).status_code == 200:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lumina serve --role {','.join(self.roles)} did not get ready:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """``kill -9``: no shutdown, no acks, as a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_lumina(
    config: Path,
    roles: Sequence[str] = ("all",),
    *,
    workdir: Path | None = None,
    log_level: str = "warning",
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> LuminaProcess:
    """Start ``lumina serve --role …`` with ``config`` on free ports (given by ``LUMINA_SERVER__*``)."""
    intake = "intake" in roles or "all" in roles
    http_port = free_port()
    otlp_http_port, grpc_port = (free_port(), free_port()) if intake else (None, None)
    workdir = workdir or config.parent
    log = workdir / f"lumina-{'-'.join(roles)}-{http_port}.log"
    process_env = {
        **os.environ,
        **(env or {}),
        "LUMINA_CONFIG": str(config),
        "LUMINA_SERVER__PORT": str(http_port),
        "LUMINA_SERVER__OTLP_HTTP_PORT": str(otlp_http_port or 0),
        "LUMINA_SERVER__OTLP_GRPC_PORT": str(grpc_port or 0),
    }
    command = [sys.executable, "-m", "lumina_core.cli", "serve", "--log-level", log_level]
    for role in roles:
        command += ["--role", role]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=process_env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    started = LuminaProcess(tuple(roles), process, http_port, otlp_http_port, grpc_port, log)
    if wait:
        started.wait_ready()
    return started


@contextlib.contextmanager
def lumina_processes(config: Path, *role_sets: Sequence[str], **options: object) -> Iterator[list[LuminaProcess]]:
    """Start one process per role set (all at once, then wait for each); stop them all afterwards."""
    started: list[LuminaProcess] = []
    try:
        for roles in role_sets:
            started.append(start_lumina(config, roles, wait=False, **options))  # type: ignore[arg-type]
        for process in started:
            process.wait_ready()
        yield started
    finally:
        for process in started:
            process.stop()
