"""Back-off for something that keeps failing: the extras' restarts and the child's spawn.

Rules:
1. The first retry waits ``first`` seconds, each failure after it twice as long, up to ``cap``.
2. Something that ran for ``healthy_after`` seconds before it failed starts over at ``first``:
   one failure a day is not a loop.
3. No I/O, no clock: callers pass ``now`` (trio's clock), so a back-off is tested without waiting.
"""

from __future__ import annotations

from typing import final


@final
class Backoff:
    def __init__(self, first: float = 1.0, cap: float = 60.0, *, healthy_after: float | None = None) -> None:
        self.first = first
        self.cap = max(first, cap)
        self.healthy_after = self.cap if healthy_after is None else healthy_after
        self.failures = 0  # in a row, since the last healthy run
        self.delay = 0.0  # the wait after the last failure
        self._started_at: float | None = None

    def started(self, now: float) -> None:
        """The thing (re)started now; a failure after ``healthy_after`` starts the back-off over."""
        self._started_at = now

    def succeeded(self) -> None:
        """It works (a spawn that gave a child): the next failure waits ``first`` again."""
        self.failures = 0
        self.delay = 0.0

    def failed(self, now: float) -> float:
        """It failed now: how long to wait before the next try."""
        if self._started_at is not None and now - self._started_at >= self.healthy_after:
            self.succeeded()
        self.failures += 1
        self.delay = self.first if self.failures == 1 else min(self.cap, self.delay * 2)
        self._started_at = None
        return self.delay
