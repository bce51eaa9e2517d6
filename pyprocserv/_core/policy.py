"""The restart policy: when the child is (re)started, and when the server exits with it.

Rules:
1. Everything that decides *when* a child starts lives here; the supervisor only asks
   :meth:`RestartPolicy.due_at` and reports what happened. No I/O, no clock: callers pass
   ``now`` (trio's clock), so holdoff, wait and oneshot are tested without waiting.
2. The semantics are procServ 2.7.0's (behaviour §4.3, §4.4):
   * the holdoff is measured from the previous child *start*, not from its exit;
   * the first start is due at once, even with auto restart OFF (``--noautorestart`` starts once);
   * ``-w`` holds every start until a restart request (^R, or ^X while shut down);
   * a restart request starts the child at once, bypassing the holdoff and OFF mode once.
3. A start that fails before there is a child (no pty, no fork) is no start and no exit: the
   next try waits at least 1 s, doubling up to 60 s, and never less than the holdoff, whatever
   ``--holdoff`` says, so a broken spawn never runs in a hot loop. A restart request still tries
   at once; a child that starts resets the back-off.
4. Deliberate differences: a start happens exactly when it is due (procServ needs 0.5 s of
   quiet on every fd first), and ONESHOT ends the server as soon as the child has exited
   (procServ also waits out the holdoff).
5. The ^T cycle is a parameter (:func:`toggle_cycle`): procServ 2.7.0 toggles ON <-> OFF, and
   ONESHOT joins only when the server was started in it, so ^T twice still means OFF then ON,
   as procServControl's STOP/RESTART expect; procServ 2.8.0 always cycles ON -> OFF -> ONESHOT.
6. ONESHOT means "no second child" (upstream 2.8.0): once a child has run, ONESHOT with no
   child running ends the server, also when ^T reaches ONESHOT while the child is shut down.
7. The exit code (:func:`exit_code_after`): 2.7.0 exits 0; in oneshot the child's status
   (128+N for signal N: upstream gives 0, #58); procServ 2.8.0 also returns the last normal exit
   status of any child when something else ends it (^Q, SIGTERM).
"""

from __future__ import annotations

import enum
import math
import signal
from typing import Sequence, final

from .backoff import Backoff

SPAWN_FIRST_RETRY = 1.0
SPAWN_LAST_RETRY = 60.0
# The procServ versions whose console pyprocserv reproduces (``--procserv-version``).
PROCSERV_VERSIONS = ("2.7", "2.8")
DEFAULT_PROCSERV_VERSION = "2.7"


class RestartMode(enum.Enum):
    """What happens when the child exits. The values are the words the console shows."""

    ON = "ON"
    OFF = "OFF"
    ONESHOT = "ONESHOT"


@final
class RestartPolicy:
    def __init__(
        self,
        mode: RestartMode = RestartMode.ON,
        holdoff: float = 15.0,
        *,
        wait: bool = False,
        cycle: Sequence[RestartMode] | None = None,
    ) -> None:
        self.mode = mode
        self.holdoff = max(0.0, holdoff)
        self.waiting_for_manual_start = wait
        self.running = False
        self.starts = 0
        self._last_start: float | None = None
        self._start_requested = False
        self._spawn_backoff = Backoff(SPAWN_FIRST_RETRY, SPAWN_LAST_RETRY, healthy_after=math.inf)
        self._retry_at: float | None = None  # after a failed spawn
        self._cycle = tuple(cycle) if cycle else toggle_cycle(DEFAULT_PROCSERV_VERSION, mode)

    def due_at(self) -> float | None:
        """The time the next start is due (``-inf``: now), or None while none is due."""
        if self.running or self.waiting_for_manual_start or self.server_done():
            return None
        if self._start_requested:
            return -math.inf
        if self._retry_at is not None:
            return None if self.mode is RestartMode.OFF else self._retry_at
        if self._last_start is None:
            return -math.inf
        if self.mode is RestartMode.OFF:
            return None
        return self._last_start + self.holdoff

    def server_done(self) -> bool:
        """ONESHOT after a child has run and none runs now: the server should exit (rule 6)."""
        return self.mode is RestartMode.ONESHOT and self.starts > 0 and not self.running

    def child_started(self, now: float) -> None:
        self.running = True
        self.starts += 1
        self._last_start = now
        self._start_requested = False
        self._retry_at = None
        self._spawn_backoff.succeeded()

    def spawn_failed(self, now: float) -> float | None:
        """A start failed before a child existed: seconds until the next try (None: none is due)."""
        self._start_requested = False
        delay = max(self.holdoff, self._spawn_backoff.failed(now))
        self._retry_at = now + delay
        return None if self.mode is RestartMode.OFF else delay

    def child_exited(self) -> bool:
        """Record the exit; True when the server should now exit (ONESHOT)."""
        self.running = False
        return self.mode is RestartMode.ONESHOT

    def request_start(self) -> None:
        """^R (or ^X) while no child runs: start now, whatever the holdoff, mode or ``-w``."""
        if not self.running:
            self._start_requested = True
            self.waiting_for_manual_start = False

    def request_start_after_exit(self) -> None:
        """Start again as soon as the running child has exited (a restart that the mode may not do)."""
        self._start_requested = True
        self.waiting_for_manual_start = False

    def toggle(self) -> RestartMode:
        """^T: the next mode in the cycle."""
        try:
            index = self._cycle.index(self.mode)
        except ValueError:
            index = -1
        self.mode = self._cycle[(index + 1) % len(self._cycle)]
        return self.mode


def toggle_cycle(procserv_version: str, start_mode: RestartMode) -> tuple[RestartMode, ...]:
    """The modes ^T steps through, in order, for the procServ version spoken (rule 5)."""
    if procserv_version != "2.7" or start_mode is RestartMode.ONESHOT:
        return (RestartMode.ON, RestartMode.OFF, RestartMode.ONESHOT)
    return (RestartMode.ON, RestartMode.OFF)


def exit_code_after(
    previous: int, returncode: int, *, ends_server: bool, procserv_version: str
) -> int:
    """The server's exit code once a child exited on its own (returncode as subprocess gives it)."""
    if ends_server:
        return returncode if returncode >= 0 else 128 - returncode
    if procserv_version != "2.7" and returncode >= 0:
        return returncode  # 2.8.0 keeps the last normal exit status; a signal leaves it as it was
    return previous


def kill_sequence(kill_signal: int, grace_period: float) -> list[tuple[float, int]]:
    """The signals an orderly shutdown sends the child's process group, with their delays.

    procServ 2.7.0 sends ``--killsig`` and then, at once, SIGKILL. Upstream's
    ``--grace-period N`` waits up to N seconds for the child to leave on ``--killsig`` first.
    """
    if kill_signal == signal.SIGKILL:
        return [(0.0, signal.SIGKILL)]
    steps: list[tuple[float, int]] = []
    if kill_signal:
        steps.append((0.0, kill_signal))
    steps.append((max(0.0, grace_period) if kill_signal else 0.0, signal.SIGKILL))
    return steps
