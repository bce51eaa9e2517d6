"""systemd: readiness notification and socket activation, in a few lines of our own.

Rules:
1. Everything is a no-op outside systemd (no ``NOTIFY_SOCKET``, no ``LISTEN_FDS``): the same
   binary runs under a unit, in a container or by hand.
2. Notification is best effort: a message that cannot be sent never stops the server.
3. Activated sockets are only taken when ``LISTEN_PID`` is ours, and the variables are removed
   afterwards, so the child never sees them.
The protocols are two environment variables and a datagram (sd_notify(3), sd_listen_fds(3));
the PyPI wrappers are either unmaintained or C extensions, so we write them here.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, MutableMapping

LISTEN_FDS_START = 3


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``READY=1``, ``STATUS=...``, ``STOPPING=1`` or ``WATCHDOG=1`` lines to systemd."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``WatchdogSec=`` (seconds) when systemd watches us, else None."""
    environ = os.environ if environ is None else environ
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[tuple[socket.socket, str]]:
    """The sockets systemd passed us, with their ``FileDescriptorName=`` (default 'unknown')."""
    environ = os.environ if environ is None else environ
    try:
        if int(environ.get("LISTEN_PID", "")) != os.getpid():
            return []
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    sockets = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else "unknown"
        sockets.append((socket.socket(fileno=fd), name))
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    return sockets


def address_of(sock: socket.socket) -> str:
    """How the info file names a listening socket: ``tcp:HOST:PORT``, ``unix:PATH``, ``unix:@NAME``."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        return "unix:@" + name[1:] if name.startswith("\0") else "unix:" + name
    host, port = sock.getsockname()[:2]
    return f"tcp:[{host}]:{port}" if sock.family == socket.AF_INET6 else f"tcp:{host}:{port}"
