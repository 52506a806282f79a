"""Free loopback ports for the servers the tests start."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from contextlib import ExitStack


def free_ports(names: Iterable[str]) -> dict[str, int]:
    """Distinct loopback TCP ports, free right now, one per name.

    Each socket stays bound until all are chosen: asked one at a time, the kernel may hand the same
    ephemeral port out twice, and TorchServe, given one port for two APIs, stops at start-up.
    """
    with ExitStack() as stack:
        socks = {name: stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for name in names}
        for sock in socks.values():
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in socks.items()}


def free_port() -> int:
    """One loopback TCP port that is free right now (e.g. where no server answers)."""
    return free_ports(["port"])["port"]
