"""Free ports for servers under test and benchmark (TCP, optionally UDP as well)."""

from __future__ import annotations

import random
import socket

_ISSUED_PORTS: set[int] = set()


def _ports_outside_ephemeral_range() -> range:
    """Ports below the kernel's ephemeral range (the one bind(0) and connect() draw from).

    A probed port handed to a server is free again until the server binds it; a client
    connecting meanwhile could be given it as its local port. Ports from below the range
    are never handed out that way.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    return range(21000, low) if low - 21000 >= 2000 else range(0)


_TEST_PORTS = _ports_outside_ephemeral_range()
_port_choice = random.Random()  # its own: hypothesis seeds the global one


def _bindable(port: int, kinds: tuple[int, ...]) -> bool:
    try:
        for kind in kinds:
            for host in ("127.0.0.1", "0.0.0.0"):  # log ports and some tests bind the wildcard
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((host, port))
    except OSError:
        return False
    return True


def free_port(*, udp: bool = False) -> int:
    """A TCP port free on 127.0.0.1 and 0.0.0.0 that no earlier call in this process returned.

    ``udp``: free for UDP as well (a Channel Access server's port is both).
    """
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    while True:
        if _TEST_PORTS:
            port = _port_choice.choice(_TEST_PORTS)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        if port not in _ISSUED_PORTS and _bindable(port, kinds):
            _ISSUED_PORTS.add(port)
            return port
