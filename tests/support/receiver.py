"""A real HTTP receiver on loopback for alert sinks: records every request, and can fail the first few."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        """Wait until ``count`` requests were accepted (answered 2xx); returns them."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"{len(self.accepted)} of {count} alerts arrived"
            time.sleep(0.02)
        return self.accepted


@contextmanager
def http_receiver(fail_first: int = 0, port: int = 0) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 that answers 500 to the first ``fail_first`` requests, then 200."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received = Received({k.lower(): v for k, v in self.headers.items()}, body)
            receiver.requests.append(received)
            failing = len(receiver.requests) <= receiver.fail_first
            if not failing:
                receiver.accepted.append(received)
            self.send_response(500 if failing else 200)
            self.end_headers()
            self.wfile.write(b"down" if failing else b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", fail_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
