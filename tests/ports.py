"""A free TCP port on the loopback interface, for the servers the tests start (brokers, gunicorn, feeds)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (the system picks it); a server started on it soon is very likely to
    get it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
