"""An ASGI wrapper that keeps an application's exits inside the web server and can end its sockets.

Rules:
1. ``SystemExit`` raised by the application (``sys.exit()`` in a handler) becomes
   :class:`ApplicationExit`, an ordinary error: the ASGI server answers that one request with an
   error and logs it, as for any other exception, instead of unwinding the whole trio run.
   ``KeyboardInterrupt`` and cancellation pass untouched: they are the operator's and trio's.
2. Every WebSocket the application has accepted is known until it ends, so
   :meth:`Guard.close_websockets` can close them all with one code (1001, going away, when the
   server stops). A close goes through the same lock as the application's own sends, and the
   application's sends after it are dropped: the peer sees one orderly close frame. Two stops
   close WebSockets through it, both with 1001 (going away): the IOC's, whose browser
   consoles end with their sessions (``.console`` rule 3), and the web server's own, for
   whatever is still open (``.serve`` rule 3).
3. The server's lifespan (ASGI's startup and shutdown events) is the guard's: it answers both
   at once and never passes them to the application, which keeps no state across requests.
   So nothing of the application runs at the server's start or stop, an application that does
   not speak lifespan costs no warning at start, and a stop that cuts the server short
   (``.serve`` rule 4) leaves no shutdown half done.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

GOING_AWAY = 1001


class ApplicationExit(Exception):
    """The web application called ``sys.exit()``; only its request ends."""


class _WebSocket:
    """One accepted WebSocket: its sends, serialised, and whether pyprocserv has closed it."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = trio.Lock()
        self.closed = False

    async def send(self, message: Message) -> None:
        async with self._lock:
            if not self.closed:
                await self._send(message)
                if message.get("type") == "websocket.close":
                    self.closed = True

    async def close(self, code: int) -> None:
        await self.send({"type": "websocket.close", "code": code, "reason": ""})


class Guard:
    """``Guard(app)`` is an ASGI application: ``app`` with rules 1 and 2."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._websockets: set[_WebSocket] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "lifespan":
            return await _answer_lifespan(receive, send)
        socket = _WebSocket(send) if scope.get("type") == "websocket" else None
        try:
            await self._app(scope, receive, send if socket is None else self._tracking(socket))
        except SystemExit as exc:
            raise ApplicationExit(f"the web application called sys.exit({exc.code!r})") from exc
        finally:
            if socket is not None:
                self._websockets.discard(socket)

    def _tracking(self, socket: _WebSocket) -> Send:
        """The send of a WebSocket that joins the open ones once the application accepts it."""
        async def send(message: Message) -> None:
            await socket.send(message)
            if message.get("type") == "websocket.accept":
                self._websockets.add(socket)
        return send

    async def close_websockets(self, code: int = GOING_AWAY) -> None:
        """Send every accepted WebSocket a close frame with ``code``, all at once (a slow peer
        delays no other); a broken one is skipped."""
        async def close(socket: _WebSocket) -> None:
            try:
                await socket.close(code)
            except Exception:
                pass  # that peer is gone already: nothing to close

        async with trio.open_nursery() as nursery:
            for socket in list(self._websockets):
                nursery.start_soon(close, socket)


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    """Rule 3: each lifespan event answered as done, until the shutdown's."""
    while True:
        event = (await receive())["type"]
        if event == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
