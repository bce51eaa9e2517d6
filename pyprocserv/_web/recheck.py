"""A long-lived WebSocket that keeps its rights only while its visitor does.

A WebSocket is authorised once, at its handshake, and may then stay open for a shift. The
visitor may meanwhile be removed from the users file, demoted, logged out, or see the session
expire: the socket must not outlive the right it was opened with.

Rules:
1. :func:`serve_while_allowed` runs ``serve(transport)`` with the transport wrapped in a
   :class:`RecheckedTransport`, and asks ``still_allowed()`` again every ``every`` seconds
   (:data:`RECHECK_EVERY`) and for every message received from the browser, before that
   message is handed on.
2. When the answer is no, the socket is closed with ``refuse()`` (a WebSocket: 1008, policy
   violation), the message that was being received is dropped, and ``serve`` ends: its receive
   and send calls raise ``trio.BrokenResourceError`` from then on, and the periodic check
   cancels it.
3. ``still_allowed`` is asked one call at a time; an exception it raises is a no (a check that
   cannot say yes does not keep a socket open), logged.
4. Anything that holds a ``MessageTransport`` can be wrapped: the console now, a pushed status
   socket later; the wrapper knows neither.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, final

import trio

from .._shell.session import MessageTransport

RECHECK_EVERY = 30.0  # seconds between checks of an idle socket's right
logger = logging.getLogger("pyprocserv.web")

StillAllowed = Callable[[], Awaitable[bool]]


@final
class RecheckedTransport:
    """A ``MessageTransport`` whose messages pass only while ``still_allowed()`` says yes (rules 1-2)."""

    def __init__(self, inner: MessageTransport, still_allowed: StillAllowed,
                 refuse: Callable[[], Awaitable[object]]) -> None:
        self._inner = inner
        self._still_allowed = still_allowed
        self._refuse = refuse
        self._lock = trio.Lock()
        self.revoked = False

    async def check(self) -> bool:
        """Ask again; on a no, refuse the socket once (rule 2). True while it is allowed."""
        async with self._lock:
            if self.revoked:
                return False
            try:
                allowed = await self._still_allowed()
            except Exception:
                logger.exception("web console: checking a socket's right failed; closing it")
                allowed = False
            if not allowed:
                self.revoked = True
                with trio.CancelScope(shield=True):
                    try:
                        await self._refuse()
                    except Exception:
                        pass  # the browser left first: nothing to close
            return allowed

    async def send_message(self, message: bytes | str) -> None:
        if self.revoked:
            raise trio.BrokenResourceError("the visitor's right to this socket is gone")
        await self._inner.send_message(message)

    async def receive_message(self) -> bytes | str:
        if self.revoked:
            raise trio.BrokenResourceError("the visitor's right to this socket is gone")
        message = await self._inner.receive_message()
        if not await self.check():
            raise trio.BrokenResourceError("the visitor's right to this socket is gone")
        return message

    async def aclose(self, *, going_away: bool = False) -> None:
        await self._inner.aclose(going_away=going_away)


async def serve_while_allowed(transport: MessageTransport, still_allowed: StillAllowed,
                              serve: Callable[[MessageTransport], Awaitable[object]], *,
                              refuse: Callable[[], Awaitable[object]], every: float = RECHECK_EVERY) -> None:
    """Run ``serve`` on ``transport`` until it ends or the right is gone (rules 1-2)."""
    rechecked = RecheckedTransport(transport, still_allowed, refuse)

    async def watch(done: trio.CancelScope) -> None:
        while True:
            await trio.sleep(every)
            if not await rechecked.check():
                done.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        await serve(rechecked)
        nursery.cancel_scope.cancel()
