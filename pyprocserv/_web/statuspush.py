"""``ws/status``: the status of a fleet pushed to one browser, at once and after every change.

Rules:
1. The first snapshot goes at once; then one after each change of the fleet (``Fleet.wait_change``),
   but at most one every ``gap`` seconds however fast the statuses change: the changes of a gap
   make one snapshot. One that reads as the last one sent is not sent.
2. A snapshot is made when it is sent, never queued: a slow browser holds up its own updates
   only, and the server keeps no more than the one it is sending.
   ``snapshot()`` asks who the visitor is at that moment (the users file as it is now), so an IOC
   taken off their access list is left out of the next snapshot, and its changes are never sent.
   A snapshot of None means the visitor is gone (removed, logged out, expired): the socket is
   closed with ``refuse()`` (1008) and the push ends.
3. What the browser sends is read and dropped; once it leaves (or a send fails) the push ends.
4. :class:`Changes` turns ``wait_change`` into a flag no change slips past: set by a watcher
   task, read and cleared by the sender.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Awaitable, Callable, final

import trio

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from .fleet import Fleet


@final
class Changes:
    """Whether the fleet changed since the last :meth:`take` (rule 4); set at first."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._pending = True
        self._wake = trio.Event()

    async def watch(self) -> None:
        """Run until cancelled: mark every change. No checkpoint between one wait and the next,
        so a change can only be merged with others, never missed."""
        while True:
            await self._fleet.wait_change()
            self._pending = True
            self._wake.set()

    async def take(self) -> None:
        """Wait until something changed since the last call, and clear the mark."""
        while not self._pending:
            self._wake = trio.Event()
            await self._wake.wait()
        self._pending = False


async def push_status(websocket: WebSocket, fleet: Fleet, snapshot: Callable[[], Awaitable[object | None]],
                      gap: float, *, refuse: Callable[[], Awaitable[object]]) -> None:
    """Send ``await snapshot()`` as JSON on the accepted ``websocket`` (rules 1-3) until the
    browser leaves, or until a snapshot is None: then ``refuse()`` closes the socket."""
    changes = Changes(fleet)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(changes.watch)
        nursery.start_soon(_until_closed, websocket, nursery.cancel_scope)
        sent = None
        while True:
            await changes.take()
            now = await snapshot()
            if now is None:  # the visitor is gone (rule 2)
                with trio.CancelScope(shield=True):
                    try:
                        await refuse()
                    except Exception:  # the browser left first, or the recheck closed it already
                        pass
                nursery.cancel_scope.cancel()
                return
            text = json.dumps(now)
            if text != sent:
                try:
                    await websocket.send_text(text)
                except trio.Cancelled:
                    raise
                except Exception:  # the browser left mid-send: Starlette's words vary
                    nursery.cancel_scope.cancel()
                    return
                sent = text
            await trio.sleep(gap)  # the changes meanwhile make one snapshot (rule 1)


async def _until_closed(websocket: WebSocket, scope: trio.CancelScope) -> None:
    """Read and drop what the browser sends; cancel ``scope`` once it leaves (rule 3)."""
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    except trio.Cancelled:
        raise
    except Exception:  # the browser went away: Starlette's words vary
        pass
    scope.cancel()
