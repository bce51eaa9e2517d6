"""The PV watchdog's decisions: when a child whose health PV has gone bad is restarted.

Rules:
1. A PV is *bad* while it is disconnected, its severity is INVALID, or its value (as a
   string) is one of the configured bad values. Only a running child is judged: a child that
   is shut down (STOP, auto restart OFF) is never started by the watchdog.
2. The child is restarted when its PV has stayed bad for ``hold`` seconds (ISIS's script
   restarts on one bad reading; one glitch should not cost an IOC).
3. Consecutive watchdog restarts back off exponentially: the (k+1)th waits ``hold * 2**k``
   seconds after the kth (at most an hour). The streak ends once the PV has been good for as
   long as the current backoff.
4. A budget: at most ``max_per_hour`` restarts in any 3600 s. When it is spent the watchdog
   says so once and waits for the window to move on.
5. Every decision is one line for the console (``@@@ Watchdog: ...``) and a :class:`WatchState`.
No I/O and no clock: callers feed observations with trio's time and ask for the next deadline.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import final

from . import messages

WINDOW = 3600.0
MAX_BACKOFF = 3600.0


class WatchState(enum.StrEnum):
    """What ``WD_STATE`` shows. The values are the PV's enum strings (< 26 characters), and
    what the status snapshot and the status file say."""

    WAITING = "Waiting"  # no child running, or the PV not seen since the start
    OK = "OK"
    BAD = "Bad"  # bad, counting down the hold time
    RESTARTING = "Restarting"  # restarted; waiting for the child and the PV to come back
    BACKOFF = "Backoff"  # bad long enough, but the backoff has not passed
    BUDGET_SPENT = "Budget spent"


@dataclass(frozen=True)
class WatchConfig:
    """``--watch-pv NAME --watch-values 'A|B' --watch-for SECONDS --watch-max N``."""

    pv: str
    bad_values: tuple[str, ...] = ()
    hold: float = 30.0
    max_per_hour: int = 3


@dataclass(frozen=True)
class Decision:
    """What the watchdog decided: a console line, and whether to restart the child now."""

    message: str
    restart: bool = False


@final
class WatchdogPolicy:
    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.state = WatchState.WAITING
        self.restarts = 0
        self._child_running = False
        self._bad_since: float | None = None
        self._good_since: float | None = None
        self._reason = "disconnected"
        self._recent: deque[float] = deque()  # restart times within the window
        self._streak = 0
        self._last_restart: float | None = None
        self._told_budget = False
        self._told_backoff = False

    # -- observations ----------------------------------------------------------------------

    def child(self, running: bool, now: float) -> None:
        """The child started or stopped (a stopped child is never judged)."""
        if running == self._child_running:
            return
        self._child_running = running
        self._bad_since = None
        self._good_since = None
        if not running and self.state is not WatchState.RESTARTING:
            self.state = WatchState.WAITING

    def pv(self, bad_reason: str | None, now: float) -> Decision | None:
        """A new reading of the PV: ``bad_reason`` None when it is good."""
        if bad_reason is None:
            self._bad_since = None
            if self._good_since is None:
                self._good_since = now
            if self._child_running and self.state is not WatchState.OK:
                recovered = self.state is not WatchState.WAITING
                self.state = WatchState.OK
                self._told_backoff = False
                if recovered:
                    return Decision(messages.watch_good_again(self.config.pv))
            return None
        self._good_since = None
        self._reason = bad_reason
        if not self._child_running:
            return None
        if self._bad_since is None:
            self._bad_since = now
            if self.state is not WatchState.RESTARTING:
                self.state = WatchState.BAD
                return Decision(messages.watch_bad(self.config.pv, bad_reason, self.config.hold))
        return None

    # -- time --------------------------------------------------------------------------------

    def backoff(self) -> float:
        """The wait after the last restart before another one (grows with the streak)."""
        if self._streak == 0:
            return 0.0
        return min(self.config.hold * 2 ** (self._streak - 1), MAX_BACKOFF)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to decide, if nothing else happens first."""
        deadlines = []
        if self._child_running and self._bad_since is not None:
            due = self._bad_since + self.config.hold
            budget_spent = len(self._recent) >= self.config.max_per_hour
            backoff_due = self._last_restart + self.backoff() if self._last_restart is not None else due
            if budget_spent and not self._told_budget:
                deadlines.append(due)  # to say so
            elif not budget_spent and backoff_due > due and not self._told_backoff:
                deadlines.append(due)  # to say so
            else:
                later = max(due, backoff_due)
                if budget_spent:
                    later = max(later, self._recent[0] + WINDOW)
                deadlines.append(later)
        if self._streak and self._good_since is not None:
            deadlines.append(self._good_since + self.backoff())
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> Decision | None:
        """Decide what the passing of time means."""
        while self._recent and self._recent[0] <= now - WINDOW:
            self._recent.popleft()
            self._told_budget = False
        if self._streak and self._good_since is not None and now - self._good_since >= self.backoff():
            self._streak = 0  # healthy for as long as the backoff: a new streak starts at hold
        if not self._child_running or self._bad_since is None:
            return None
        if now - self._bad_since < self.config.hold:
            return None
        if len(self._recent) >= self.config.max_per_hour:
            self.state = WatchState.BUDGET_SPENT
            if not self._told_budget:
                self._told_budget = True
                return Decision(messages.watch_budget_spent(self.config.max_per_hour, self.config.pv, self._reason))
            return None
        if self._last_restart is not None and now - self._last_restart < self.backoff():
            self.state = WatchState.BACKOFF
            if not self._told_backoff:
                self._told_backoff = True
                return Decision(messages.watch_backoff(self.config.pv, self._reason, self.backoff()))
            return None
        self._recent.append(now)
        self._last_restart = now
        self._streak += 1
        self.restarts += 1
        self._bad_since = None
        self._told_backoff = False
        self.state = WatchState.RESTARTING
        return Decision(
            messages.watch_restarting(self.config.pv, self._reason, self.config.hold, len(self._recent),
                                      self.config.max_per_hour),
            restart=True,
        )


def bad_reason(connected: bool, severity: int, value: str, bad_values: tuple[str, ...]) -> str | None:
    """Why a reading is bad, in words for the console; None when it is good."""
    if not connected:
        return "disconnected"
    if severity >= 3:
        return "INVALID"
    if value in bad_values:
        return f"'{value}'"
    return None
