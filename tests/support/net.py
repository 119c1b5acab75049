"""Loopback ports for tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A free ephemeral port on loopback, for a server the caller starts right after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
