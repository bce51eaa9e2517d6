"""Reports of a repeated event, at most one per peer per period, with a count (pure: time passed in).

A host without write rights that puts in a loop would otherwise put a line on every console and
in the log per put (531 KiB/s from one host), and a peer that sends garbage would fill stderr.

Rules:
1. A peer's first event is reported at once (count 1).
2. After that, at most one report per peer per ``period``: the next event a period or more
   after the last report is reported with the count of events since that report.
3. Events left unreported when a flood stops come out of :meth:`ReportLimiter.due` once their
   period has passed, so no count is lost; a peer quiet for a whole period is forgotten, so a
   flood of addresses leaves nothing behind.
"""

from __future__ import annotations

from typing import final


@final
class ReportLimiter:
    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._peers: dict[str, tuple[float, int]] = {}  # peer -> (time of last report, events since)

    def note(self, peer: str, now: float) -> int | None:
        """One event from ``peer``: the count to report now (this event included), or None."""
        last, unreported = self._peers.get(peer, (None, 0))
        if last is None or now - last >= self.period:
            self._peers[peer] = (now, 0)
            return unreported + 1
        self._peers[peer] = (last, unreported + 1)
        return None

    def due(self, now: float) -> list[tuple[str, int]]:
        """(peer, count) of events a period old and not yet reported; call it now and then."""
        reports = []
        for peer, (last, unreported) in list(self._peers.items()):
            if now - last < self.period:
                continue
            if unreported:
                reports.append((peer, unreported))
                self._peers[peer] = (now, 0)
            else:
                del self._peers[peer]
        return reports

    def peers(self) -> set[str]:
        return set(self._peers)
