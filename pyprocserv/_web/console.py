"""A Starlette WebSocket as the shell's ``MessageTransport``: one browser console.

Rules:
1. Binary frames carry the console's bytes and the keys typed; text frames the small JSON
   messages of ``_core.webterm``. What the codec makes of them is the session's business.
2. Once the browser has gone (a disconnect, a send that fails) or the transport is closed,
   both calls raise ``trio.BrokenResourceError``, the end of a session, never anything the
   shell would take for a bug of its own.
3. :meth:`WebSocketTransport.aclose` may be called more than once and never raises. It sends
   the one close frame of a session that ends on our side: 1001 (going away) when the server
   stops (``going_away``), 1000 otherwise (a logout, a message that broke the protocol). A
   browser that left first gets none. Every close frame goes through the web server's guard,
   which sends one a WebSocket at most (``.guard`` rule 2).
"""

from __future__ import annotations

from typing import final

import trio
from starlette.websockets import WebSocket, WebSocketState

from .guard import GOING_AWAY

NORMAL_CLOSURE = 1000


@final
class WebSocketTransport:
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._gone = False

    async def send_message(self, message: bytes | str) -> None:
        if self._gone:
            raise trio.BrokenResourceError("the browser console is closed")
        try:
            if isinstance(message, str):
                await self._websocket.send_text(message)
            else:
                await self._websocket.send_bytes(bytes(message))
        except trio.Cancelled:
            raise
        except Exception as exc:  # the peer went away mid-send: Starlette's words vary
            self._gone = True
            raise trio.BrokenResourceError("the browser went away") from exc

    async def receive_message(self) -> bytes | str:
        if self._gone:
            raise trio.BrokenResourceError("the browser console is closed")
        try:
            message = await self._websocket.receive()
        except trio.Cancelled:
            raise
        except Exception as exc:
            self._gone = True
            raise trio.BrokenResourceError("the browser went away") from exc
        if message["type"] == "websocket.disconnect":
            self._gone = True
            raise trio.BrokenResourceError("the browser closed the console")
        if message.get("bytes") is not None:
            return message["bytes"]
        return message.get("text") or ""

    async def aclose(self, *, going_away: bool = False) -> None:
        gone, self._gone = self._gone, True
        if gone or self._websocket.application_state != WebSocketState.CONNECTED:
            return
        try:
            await self._websocket.close(GOING_AWAY if going_away else NORMAL_CLOSURE)
        except Exception:
            pass  # the browser left first: nothing to close
