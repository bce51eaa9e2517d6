"""Free TCP ports for the bench scripts' servers and CA servers."""

from __future__ import annotations

import socket

_issued: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 that this process has not handed out before.

    A closed probe socket's port can come straight back from the kernel, so
    two calls in a row (CA server and repeater ports) could otherwise collide.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _issued:
            _issued.add(port)
            return port
