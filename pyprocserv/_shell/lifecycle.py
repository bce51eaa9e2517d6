"""The phases of one server run, in the order they come.

Rules:
1. A run goes STARTING -> SERVING -> STOPPING -> DONE and never back; a phase may be skipped
   (a SIGTERM before the first start goes straight to STOPPING).
2. Waiting for a phase returns once it or a later one is reached, so nobody waits for a phase
   that was skipped.
3. The phase replaces loose flags: what the run does next is read from it, never from a
   combination of booleans.
"""

from __future__ import annotations

import enum
from typing import final

import trio


class Phase(enum.IntEnum):
    STARTING = 1  # the first start of the child is due or under way
    SERVING = 2  # the first start happened, or none is due (-w): the info file says "ready"
    STOPPING = 3  # ^Q, shutdown() or oneshot's end: stop the child, close the sessions
    DONE = 4  # run() has cleaned up


@final
class Lifecycle:
    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self._reached = {phase: trio.Event() for phase in Phase}
        self._reached[Phase.STARTING].set()

    def advance(self, phase: Phase) -> bool:
        """Move on to ``phase`` (rule 1); True when this was a move, False when already there or past."""
        if phase <= self.phase:
            return False
        self.phase = phase
        for earlier in Phase:
            if earlier <= phase:
                self._reached[earlier].set()
        return True

    @property
    def stopping(self) -> bool:
        return self.phase >= Phase.STOPPING

    async def reached(self, phase: Phase) -> None:
        await self._reached[phase].wait()
