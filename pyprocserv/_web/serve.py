"""Serve an ASGI application in the current trio run, so that no client can end the process.

Rules:
1. The server is anycorn (hypercorn's anyio port; bench/web_server_choice.py: hypercorn 0.18's
   trio worker lets the whole run end on one malformed WebSocket upgrade, its issue #225). It
   binds the one address it is given (loopback unless the caller says otherwise) and logs to
   the ``pyprocserv.web`` logger, never to standard error.
2. The application runs behind :class:`.guard.Guard`: its exceptions, ``sys.exit()`` included,
   end one request. Anything that still escapes the server (a bug in it) ends
   :func:`serve_asgi` with :class:`WebServerError`, which the extras' ``Supervisor`` reports and
   restarts; it never reaches the rest of the trio run as anything else. ``KeyboardInterrupt``
   passes as it is.
3. Cancelling :func:`serve_asgi` stops the server in order: every open WebSocket gets a close
   frame with code 1001 (going away), for at most :data:`GRACE` seconds; then the server stops
   accepting and finishes, for at most another :data:`GRACE`; then whatever is left is cut
   (rule 4). The caller's cancellation reaches the server only through that path.
4. No client holds up a stop, nor a connection forever: anycorn sends every response inside a
   shielded cancel scope, so a peer that stops reading would block that send, and with it the
   server's end, until the peer goes. So each server knows its open connections
   (:mod:`.connections`), and when the grace is over it *cuts* the ones left, which wakes a
   blocked send with an error, before it cancels the rest. While it runs, the kernel ends a
   connection whose sent data makes no progress (zero window, or unacknowledged) for
   :data:`STALL` seconds (``TCP_USER_TIMEOUT``, which the accepted sockets inherit). Errors
   anycorn raises while it unwinds after the cut are the stop's, logged and not reported as a
   failure.
5. No number of slow clients (slowloris) takes the console from others, nor the file
   descriptors the IOC needs: the open connections are capped, slow ones first to go
   (:mod:`.connections` rule 3); nothing waits beyond the listen backlog (anycorn's, 100); a
   request's head must be complete within :data:`HEAD_DEADLINE` seconds of the connection's
   start or of its previous response, else anycorn's idle timer (``keep_alive_timeout``) ends
   the connection; a TLS handshake has as long.
"""

from __future__ import annotations

import logging
import socket
import ssl

import anycorn
import trio
from anycorn.config import Sockets

from .._core.errors import PyprocservError
from .._shell.listeners import BindError
from .connections import Connections, track
from .guard import GOING_AWAY, App, Guard

LOOPBACK = "127.0.0.1"
GRACE = 2.0  # seconds a stopping server has for its close frames and last responses
STALL = 10.0  # seconds a connection's sent data may make no progress before the kernel ends it
MAX_WEBSOCKET_MESSAGE = 1 << 16  # keys and window sizes; the page sends a paste in 16 KiB pieces
HEAD_DEADLINE = 10.0  # seconds a connection has for a request's head (or a TLS handshake)
logger = logging.getLogger("pyprocserv.web")


class WebServerError(PyprocservError, RuntimeError):
    """The web server stopped on an error of its own; the supervisor restarts it."""


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), which no child process inherits."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; the accepted sockets inherit it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(STALL * 1000))
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on {host}:{port} for the web console: "
                                   f"{exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def _config(host: str, port: int, ssl_context: ssl.SSLContext | None, connections: Connections) -> anycorn.Config:
    """anycorn's configuration: one bind, our logger, no access log, the given TLS context, its
    connections under ``connections``.

    Its sockets are made here, once, so that a bind error is the caller's (before anything
    starts) and the IOC's child never inherits them.
    """
    class Config(anycorn.Config):
        def create_ssl_context(self) -> ssl.SSLContext | None:
            return ssl_context

        def create_sockets(self) -> Sockets:
            return sockets

    config = Config()
    track(config, connections)
    config.accesslog = None
    config.errorlog = logger
    config.graceful_timeout = GRACE
    config.keep_alive_timeout = HEAD_DEADLINE  # also the time a new connection has for its head
    config.ssl_handshake_timeout = HEAD_DEADLINE
    config.websocket_max_message_size = MAX_WEBSOCKET_MESSAGE
    config.websocket_permessage_deflate = False  # no compression made for each browser (architecture §3)
    config.include_server_header = False
    sock = _listening_socket(host, port)
    sockets = Sockets([sock] if ssl_context else [], [] if ssl_context else [sock], [])
    return config


def _leaf(exc: BaseException) -> BaseException:
    """``exc`` without the groups of one that nurseries wrap around it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or a group of it holds, the operator's ^C."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(KeyboardInterrupt)[0] is not None
    return isinstance(exc, KeyboardInterrupt)


async def serve_asgi(app: App, host: str = LOOPBACK, port: int = 0, *,
                     ssl_context: ssl.SSLContext | None = None,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(the port bound)``.

    Raises ``BindError`` (an ``OSError``) when the address cannot be bound, and
    :class:`WebServerError` when the server fails later.
    """
    guard = Guard(app)
    connections = Connections()
    config = _config(host, port, ssl_context, connections)
    listening = config.create_sockets()
    stop = trio.Event()
    finished = trio.Event()
    server_scope = trio.CancelScope(shield=True)  # the caller's cancellation goes through rule 3

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            with server_scope:
                try:
                    await anycorn.serve(guard, config, shutdown_trigger=stop.wait,
                                        task_status=task_status)
                except BaseException as exc:
                    if not connections.cut or _only_cancelled(exc) or _interrupted(exc):
                        raise
                    logger.debug("the web server, cut at its stop, ended with %r", exc)
            if not stop.is_set() and not server_scope.cancelled_caught:
                raise WebServerError("the web server stopped by itself")
        finally:
            finished.set()

    async def stop_server() -> None:
        """Rules 3 and 4: close frames, the server's own stop, then the cut, each in a grace."""
        async with trio.open_nursery() as stopping:
            closed = trio.Event()

            async def close_websockets() -> None:
                await guard.close_websockets(GOING_AWAY)
                closed.set()
            stopping.start_soon(close_websockets)
            with trio.move_on_after(GRACE):
                await closed.wait()
            stop.set()
            with trio.move_on_after(GRACE):
                await finished.wait()
            connections.cut_all()
            server_scope.cancel()
            await finished.wait()
            stopping.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            bound, = listening.secure_sockets or listening.insecure_sockets
            task_status.started(bound.getsockname()[1])
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await stop_server()
    except BaseException as exc:
        leaf = _leaf(exc)
        if _only_cancelled(exc) or _interrupted(exc):
            raise
        if isinstance(leaf, WebServerError):
            raise leaf
        raise WebServerError(f"the web server failed: {leaf!r}") from exc
    finally:
        for sock in (*listening.secure_sockets, *listening.insecure_sockets):
            sock.close()
