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
   sending its first request's head, as slowloris does); else the one whose send has been
   blocked longest, if longer than :data:`BLOCKED` seconds (a client that asked and never reads:
   a console with nothing to send, or whose reader keeps up, is never chosen); else the
   keep-alive connection idle longest, if longer than :data:`IDLE` seconds (no WebSocket, nothing
   being sent, no request being answered, nothing received or sent since: a browser asks again on
   a new connection); else it
   is closed at once. So slow or idle clients beyond the cap cost a newcomer nothing, and none
   waits in a queue of ours. The wrapper times its sends, and anycorn's zero-copy ``os.sendfile``
   of static files, which goes to the raw socket past the wrapper, is timed as well (the module's
   second seam, at import).
4. A connection counts, and holds its descriptor, until its task has ended: ending one (rules 2
   and 3) cuts its socket and cancels its task, whose stream is then closed at once (anycorn
   would keep it until its idle timer). A client that closes its end between requests (nothing
   being sent, no request received since the last answer) on a connection that is not a
   WebSocket ends its task at once too (no CLOSE-WAIT for anycorn's keep-alive timeout); a
   request it sent before its close is answered as before, and a WebSocket's app hears the
   close and ends it in order.
5. Connections still in their TLS handshake are not counted: anyio shakes hands before it calls
   the handler. The handshake's deadline (``serve.HEAD_DEADLINE``) bounds them instead.
6. HTTP/1.1 only. anycorn would switch a plaintext connection to HTTP/2 on a request line
   ``PRI * HTTP/2.0`` (the HTTP/2 preface) or with a ``101`` answering ``Upgrade: h2c``, and its
   HTTP/2 streams wait for a flow-control window the client need never give, holding their memory
   and descriptors. So a connection is cut, and anycorn sees it end, when its received bytes hold
   that request line (wherever it is, split across reads or not, before anycorn has it whole),
   or when anycorn is about to send the ``101`` to h2c, which is not sent. (TLS offers only
   http/1.1 by ALPN, and anyio's TLS is below the wrapper, which sees the plaintext.) Once a
   WebSocket's ``101`` has been sent, the connection carries frames, no request line: its
   received bytes are no longer looked at.
"""

from __future__ import annotations

import logging
import socket
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import anycorn
import anycorn.run
import anycorn.tcp_server
import anyio
import anyio.abc

# Rule 3. Many more than the people who watch one IOC (a hundred spies), far fewer than the 1024
# file descriptors a process gets by default: web clients can never take the descriptors the
# IOC's child, pty, log file and telnet clients need.
MAX_CONNECTIONS = 256
BLOCKED = 1.0  # seconds a send may be blocked before a newcomer at the cap may end its connection
IDLE = 0.1  # seconds idle before a newcomer at the cap may end a keep-alive connection: to keep the
# whole cap, a client would ask on every connection ten times a second, far more than the server answers
H2_REQUEST_LINE = b"PRI * HTTP/2.0"  # rule 6: the start of the HTTP/2 preface
logger = logging.getLogger("pyprocserv.web")


class _Connection:
    """One open connection: whether the server has answered on it yet, whether it is a WebSocket,
    since when its current send is blocked (None: not sending), whether bytes came since its last
    send (a request being answered), when it last received or sent, and whether it has been ended
    (rule 4: its task, once known, is cancelled)."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.answered = False
        self.websocket = False
        self.sending_since: float | None = None
        self.asked = False
        self.active = time.monotonic()
        self.ended = False
        self.scope: anyio.CancelScope | None = None

    def between_requests(self) -> bool:
        return self.answered and not (self.websocket or self.asked or self.sending_since is not None)

    def end(self) -> None:
        self.ended = True
        _cut(self.socket)
        if self.scope is not None:
            self.scope.cancel()


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
        if len(self._open) >= self.limit and not self._end_one():
            yield None
            return
        connection = self._open[sock] = _Connection(sock)
        try:
            if self.cut:
                connection.end()
            yield connection
        finally:
            if self._open.get(sock) is connection:
                del self._open[sock]

    def _end_one(self) -> bool:
        """Rule 3: end the oldest unanswered connection, else the longest blocked, else the
        longest idle; False when none may go."""
        now = time.monotonic()
        living = [c for c in self._open.values() if not c.ended]
        unanswered = [c for c in living if not c.answered]
        blocked = [c for c in living if c.sending_since is not None and now - c.sending_since > BLOCKED]
        idle = [c for c in living if c.between_requests() and now - c.active > IDLE]
        if unanswered:
            unanswered[0].end()
        elif blocked:
            min(blocked, key=lambda c: c.sending_since or now).end()
        elif idle:
            min(idle, key=lambda c: c.active).end()
        else:
            return False
        return True

    def cut_all(self) -> None:
        """Cut every open connection, and any that opens later."""
        self.cut = True
        for connection in list(self._open.values()):
            connection.end()


def _cut(sock: socket.socket) -> None:
    """Rule 2 for one socket; its owner then closes it as any broken connection."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


class _Answering(anyio.abc.ByteStream):
    """A connection's stream that marks the connection answered at its first send, times its
    sends and notes its activity (rule 3), ends its task at the client's close (rule 4), and cuts
    it at HTTP/2 (rule 6)."""

    def __init__(self, stream: anyio.abc.ByteStream, connection: _Connection, sock: socket.socket,
                 scope: anyio.CancelScope) -> None:
        self._stream = stream
        self._connection = connection
        self._socket = sock
        self._scope = scope  # the connection's task, all of it, which a refused or closed one ends
        self._tail = b""  # the last received bytes, in which the HTTP/2 request line may begin
        self._cut = False

    def _refuse_http2(self, why: str) -> None:
        logger.debug("cut a web connection: %s (HTTP/1.1 only)", why)
        self._cut = True
        _cut(self._socket)
        self._scope.cancel()  # anycorn would switch to HTTP/2 all the same, on a dead connection
        raise anyio.BrokenResourceError(f"HTTP/2 is not served ({why})")

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._cut:
            raise anyio.BrokenResourceError("HTTP/2 is not served")
        try:
            data = await self._stream.receive(max_bytes)
        except anyio.EndOfStream:
            if self._connection.between_requests() or not (self._connection.answered or self._connection.asked):
                self._scope.cancel()  # rule 4: anycorn would wait for its idle timer
            raise
        self._connection.asked = True
        self._connection.active = time.monotonic()
        if not self._connection.websocket:
            self._look_for_http2(data)
        return data

    def _look_for_http2(self, data: bytes) -> None:
        """Rule 6, joining only the last bytes received before and the first of ``data``."""
        keep = len(H2_REQUEST_LINE) - 1
        if H2_REQUEST_LINE in self._tail + data[:keep] or H2_REQUEST_LINE in data:
            self._refuse_http2("the HTTP/2 preface")
        self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]

    async def send(self, item: bytes) -> None:
        if self._cut:
            raise anyio.BrokenResourceError("HTTP/2 is not served")
        if item.startswith(b"HTTP/1.1 101 "):
            if b"\r\nupgrade: h2c\r\n" in item.lower():
                self._refuse_http2("an upgrade to h2c")
            self._connection.websocket = True
        self._connection.answered = True
        self._connection.sending_since = time.monotonic()
        try:
            await self._stream.send(item)
        finally:
            self._connection.sending_since = None
            self._connection.asked = False
            self._connection.active = time.monotonic()

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
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        with connections.open(sock) as connection:
            if connection is None:
                logger.debug("refused a web connection: %d open, all answered and none blocked", connections.limit)
                await anyio.aclose_forcefully(stream)
                return
            _sending_files[sock] = connection
            try:
                with anyio.CancelScope() as scope:
                    connection.scope = scope
                    if connection.ended:  # cut_all ran since it opened
                        scope.cancel()
                    await handler(_Answering(stream, connection, sock, scope))
            finally:
                del _sending_files[sock]
            if scope.cancel_called:  # rules 4 and 6: anycorn's own close may not have run
                await anyio.aclose_forcefully(stream)
    return tracked


anycorn.run.tcp_server_handler = _tracking_handler

_anycorn_sendfile = anycorn.tcp_server.sendfile  # rule 3's second seam: the slow readers' test fails without it
_sending_files: dict[socket.socket, _Connection] = {}  # the tracked connections' raw sockets


async def _timed_sendfile(sock: socket.socket, *args: Any) -> int:
    connection = _sending_files.get(sock)
    if connection is None:
        return await _anycorn_sendfile(sock, *args)
    connection.sending_since = time.monotonic()
    try:
        return await _anycorn_sendfile(sock, *args)
    finally:
        connection.sending_since = None
        connection.active = time.monotonic()


anycorn.tcp_server.sendfile = _timed_sendfile
