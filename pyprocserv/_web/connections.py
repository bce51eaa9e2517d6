"""The open connections of one web server: known, so that its stop can cut them, and counted, so
that slow clients cannot take them all.

Rules:
1. anycorn hands every accepted stream to the handler its ``tcp_server_handler`` makes; this
   module wraps that factory (at import), so that under an anycorn config given a
   :class:`Connections` (:func:`track`) each connection is one of its open ones until it ends.
   Other configs are served as anycorn serves them.
2. :meth:`Connections.cut_all` ends every open connection both ways (``shutdown(SHUT_RDWR)``,
   which wakes a send blocked on it, shielded or not, with an error), and any that opens later.
3. At most :data:`MAX_CONNECTIONS` are open at once. One that comes when all are taken ends the
   oldest that has not been answered yet (the server has sent nothing on it: a client still
   sending its first request's head, as slowloris does), or, when every one has been answered
   (consoles, downloads), is closed at once. So slow clients beyond the cap cost a newcomer
   nothing, and none waits in a queue of ours.
4. Connections still in their TLS handshake are not counted: anyio shakes hands before it calls
   the handler. The handshake's deadline (``serve.HEAD_DEADLINE``) bounds them instead.
"""

from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import anycorn
import anycorn.run
import anyio
import anyio.abc

# Rule 3. Many more than the people who watch one IOC (a hundred spies), far fewer than the 1024
# file descriptors a process gets by default: web clients can never take the descriptors the
# IOC's child, pty, log file and telnet clients need.
MAX_CONNECTIONS = 256
logger = logging.getLogger("pyprocserv.web")


class _Connection:
    """One open connection, and whether the server has answered on it yet."""

    def __init__(self) -> None:
        self.answered = False


class Connections:
    """One server's open connections, oldest first (rules 2 and 3)."""

    def __init__(self, limit: int | None = None) -> None:
        self._open: dict[socket.socket, _Connection] = {}
        self.limit = MAX_CONNECTIONS if limit is None else limit
        self.cut = False

    @contextmanager
    def open(self, sock: socket.socket) -> Iterator[_Connection | None]:
        """``sock``'s connection, one of the open ones while the block runs; None when every
        one is taken and answered. One opened after :meth:`cut_all` is cut."""
        if len(self._open) >= self.limit and not self._end_oldest_unanswered():
            yield None
            return
        connection = self._open[sock] = _Connection()
        try:
            if self.cut:
                _cut(sock)
            yield connection
        finally:
            if self._open.get(sock) is connection:
                del self._open[sock]

    def _end_oldest_unanswered(self) -> bool:
        for sock, connection in self._open.items():
            if not connection.answered:
                del self._open[sock]
                _cut(sock)
                return True
        return False

    def cut_all(self) -> None:
        """Cut every open connection, and any that opens later."""
        self.cut = True
        for sock in list(self._open):
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    """Rule 2 for one socket; its owner then closes it as any broken connection."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


class _Answering(anyio.abc.ByteStream):
    """A connection's stream that marks the connection answered at its first send (rule 3)."""

    def __init__(self, stream: anyio.abc.ByteStream, connection: _Connection) -> None:
        self._stream = stream
        self._connection = connection

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        self._connection.answered = True
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def track(config: anycorn.Config, connections: Connections) -> None:
    """Serve ``config``'s connections under ``connections`` (rule 1)."""
    config.pyprocserv_connections = connections  # type: ignore[attr-defined]


_anycorn_handler = anycorn.run.tcp_server_handler  # rule 1's seam: the stop's and the cap's tests fail without it


def _tracking_handler(app: Any, config: anycorn.Config, *args: Any) -> Callable[..., Any]:
    handler = _anycorn_handler(app, config, *args)
    connections: Connections | None = getattr(config, "pyprocserv_connections", None)
    if connections is None:
        return handler

    async def tracked(stream: anyio.abc.ByteStream) -> None:
        with connections.open(stream.extra(anyio.abc.SocketAttribute.raw_socket)) as connection:
            if connection is None:
                logger.debug("refused a web connection: %d open, all answered", connections.limit)
                await anyio.aclose_forcefully(stream)
                return
            await handler(_Answering(stream, connection))
    return tracked


anycorn.run.tcp_server_handler = _tracking_handler
