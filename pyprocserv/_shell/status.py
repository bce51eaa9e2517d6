"""The status snapshot: what one process server and its child look like at one moment.

Its own module so that the server, the extras' :class:`~pyprocserv._shell.extras.Root` and the
programs can all name it without importing one another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .._core.policy import RestartMode
from .._core.watchdog import WatchState


@dataclass(frozen=True)
class Status:
    """A snapshot of one server and its child, from the one place the console also reads."""

    name: str
    running: bool
    pid: int | None
    restart_mode: RestartMode
    waiting_for_start: bool  # -w, or no start due (auto restart OFF after an exit)
    start_count: int
    child_started_at: float | None  # wall clock (time.time())
    last_exit_code: int | None  # >= 0 exit status, -N killed by signal N
    last_exit_at: float | None
    server_pid: int
    server_started_at: float
    users: int
    loggers: int
    endpoints: tuple[str, ...]
    watchdog: WatchState | None = None  # None without --watch-pv
    watchdog_restarts: int = 0
    extras: tuple[tuple[str, str], ...] = ()  # (extra, "running" or its last failure)

    def as_dict(self) -> dict[str, object]:
        """Plain values (for JSON): the mode and watchdog state as their words, endpoints as a
        list, extras as a map."""
        values = dataclasses.asdict(self)
        values["restart_mode"] = self.restart_mode.value
        values["watchdog"] = self.watchdog.value if self.watchdog is not None else None
        values["endpoints"] = list(self.endpoints)
        values["extras"] = dict(self.extras)
        return values
