"""Child supervision: starts the child when the restart policy says, carries its bytes, books its exit.

Rules:
1. :class:`ChildSupervisor` owns the restart policy and the child; nothing else changes either.
   Whether a child runs has one answer, :attr:`ChildSupervisor.running` (the policy's, which
   is told at the moment the child handle is taken and let go of).
2. What one child goes through is a :class:`ChildState`: IDLE -> SPAWNING -> RUNNING ->
   ENDING -> IDLE (a failed spawn goes back to IDLE at once). An orderly stop waits on the
   state, never on loose events.
3. Starts happen exactly when :meth:`RestartPolicy.due_at` says; the loop sleeps until then or
   until :meth:`wake` (a key, an API call, a status change).
4. The child's output is read until the pty reports its end, so everything the child wrote is
   on the console before its exit messages; only a process outside the child's group can keep
   the pty open, and then we stop after ``DRAIN_QUIET`` of quiet (``DRAIN_MAX`` at the latest).
5. A spawn that fails before there is a child (no pty, no fork) is said where procServ says it
   (the log: ``Fork failed``) and on the console, and booked with the policy as a failed spawn:
   no start and no exit.
6. A child is never left behind: cancelled while it runs, it is killed and reaped (shielded).
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import subprocess
import time
from typing import Awaitable, Callable, final

import trio

from .._core import messages
from .._core.config import Config
from .._core.keys import KeyMap
from .._core.policy import RestartMode, RestartPolicy, exit_code_after, kill_sequence, toggle_cycle
from .child import Child
from .console import Console, InputQueue
from .lifecycle import Lifecycle, Phase

logger = logging.getLogger(__name__)

READ_SIZE = 1 << 16
# After the child exits, its output is read until the pty reports its end (EIO). Only a
# process outside the child's group can keep the pty open longer; we stop waiting when it has
# been quiet this long, or at the latest after DRAIN_MAX.
DRAIN_QUIET = 0.2
DRAIN_MAX = 2.0
# How long a stop waits for a child to die after SIGKILL.
REAP_MAX = 5.0

SpawnFn = Callable[..., Awaitable[Child]]


class ChildState(enum.Enum):
    IDLE = "idle"  # no child, none being started
    SPAWNING = "spawning"  # a start is under way
    RUNNING = "running"  # the child runs; its handle is held
    ENDING = "ending"  # the child has exited; its exit is being booked and announced


def commands_line(keys: KeyMap) -> bytes:
    """The ``@@@ Use ^R ...`` line shown whenever no child runs."""
    return messages.commands(keys.restart, keys.kill, keys.quit, keys.logout)


@final
class ChildSupervisor:
    """One child at a time under the restart policy; see the module's rules."""

    def __init__(
        self,
        config: Config,
        console: Console,
        lifecycle: Lifecycle,
        *,
        spawn: SpawnFn,
        child_dir: str,
        procserv_info: Callable[[], str],
        changed: Callable[[], None],
        end_server: Callable[[], None],
    ) -> None:
        self.config = config
        self.console = console
        self.child_dir = child_dir
        self.policy = RestartPolicy(
            config.restart_mode, config.holdoff, wait=config.wait,
            cycle=toggle_cycle(config.procserv_version, config.restart_mode),
        )
        self.exit_code = 0  # what run() returns (rule 7 of the policy)
        self.last_exit: tuple[int, float] | None = None  # (returncode, wall clock)
        self._lifecycle = lifecycle
        self._spawn = spawn
        self._procserv_info = procserv_info
        self._changed = changed
        self._end_server = end_server
        self._input = InputQueue(config.input_queue_limit)
        self._child: Child | None = None
        self._started_at: float | None = None  # wall clock
        self._window_size: tuple[int, int] | None = None
        self._state = ChildState.IDLE
        self._moved = trio.lowlevel.ParkingLot()  # unparked on every change of _state
        self._wake = trio.Event()
        self._say_exit_when_stopped = False  # a graceful stop shows the child's exit message

    # -- what the server asks ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.policy.running

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def started_at(self) -> float | None:
        """When the running child started (wall clock); None while none runs."""
        return self._started_at if self._child is not None else None

    def wake(self) -> None:
        """Something the start schedule depends on changed: look at the policy again."""
        self._wake.set()

    def request_start(self) -> bool:
        """Start a child now if none runs (^R); True when one was requested."""
        if self.running:
            return False
        self.policy.request_start()
        return True

    def toggle(self) -> RestartMode:
        """^T: the policy's next mode."""
        return self.policy.toggle()

    def set_mode(self, mode: RestartMode) -> bool:
        """True when the mode changed."""
        return self.policy.set_mode(mode)

    def restart_after_exit(self) -> None:
        """Start again as soon as the running child has exited, whatever the mode and holdoff."""
        self.policy.request_start_after_exit()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the running child's process group; False when none runs."""
        if self._child is None:
            return False
        self._child.signal_group(sig)
        return True

    def offer_input(self, data: bytes) -> int:
        """Input for the running child; returns how many bytes the full queue dropped."""
        return self._input.offer(data)

    def resize(self, size: tuple[int, int] | None) -> None:
        """Size the pty (and every later one); an ioctl only on a change."""
        if size is not None and size != self._window_size:
            self._window_size = size
            if self._child is not None:
                self._child.set_window_size(*size)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Start children as the policy says until the server stops (rule 3)."""
        while not self._lifecycle.stopping:
            self._wake = trio.Event()
            if self.policy.server_done():  # ^T reached ONESHOT while no child runs
                self._end_server()
                return
            due = self.policy.due_at()
            if due is None:
                self._lifecycle.advance(Phase.SERVING)
                await self._wake.wait()
            elif due > trio.current_time():
                with trio.move_on_at(due):
                    await self._wake.wait()
            else:
                await self._run_child()

    def _move(self, state: ChildState) -> None:
        self._state = state
        self._moved.unpark_all()

    async def _until(self, *states: ChildState) -> None:
        while self._state not in states:
            await self._moved.park()

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.environment or {})
        env["PROCSERV_INFO"] = self._procserv_info()
        return env

    async def _run_child(self) -> None:
        config = self.config
        name = config.child_name
        self.console.broadcast(messages.restarting(name, config.command[0]))
        self._move(ChildState.SPAWNING)
        try:
            # Shielded: a child spawned while we are being cancelled must still be watched and reaped.
            with trio.CancelScope(shield=True):
                child = await self._spawn(
                    config.command,
                    executable=config.executable,
                    cwd=self.child_dir,
                    env=self._child_env(),
                    coresize=config.coresize,
                    window_size=self._window_size,
                    program_name=config.program_name,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            self._spawn_failed(exc)
            return
        self._child = child
        self._started_at = time.time()
        self.policy.child_started(trio.current_time())
        self._move(ChildState.RUNNING)
        self.console.broadcast(messages.new_child(name, child.pid))
        self._lifecycle.advance(Phase.SERVING)
        self._changed()
        try:
            returncode = await self._watch(child)
        finally:
            self._child = None
            ends_server = self.policy.child_exited()
            self._move(ChildState.ENDING)
            self._input.clear()
            with trio.CancelScope(shield=True):
                await child.aclose()
        self._exited(child, returncode, ends_server and not self._lifecycle.stopping)

    def _spawn_failed(self, exc: OSError | subprocess.SubprocessError) -> None:
        # No pty, no fork, a failed setup in the child: say so where procServ does (its
        # stderr) and on the console, and try again after a back-off (never in a hot loop).
        reason = getattr(exc, "strerror", None) or str(exc)
        delay = self.policy.spawn_failed(trio.current_time())
        logger.error(f"Fork failed: {reason}")
        self.console.broadcast(messages.spawn_retry(reason, delay) if delay is not None
                               else messages.spawn_failed(reason))
        self._move(ChildState.IDLE)
        self._lifecycle.advance(Phase.SERVING)
        self._changed()

    def _exited(self, child: Child, returncode: int, oneshot: bool) -> None:
        """Book and announce an exit as procServ does; ends the server in oneshot mode."""
        config = self.config
        stopping = self._lifecycle.stopping
        self.last_exit = (returncode, time.time())
        if not stopping:  # a child we stop ourselves leaves the exit code as it was
            self.exit_code = exit_code_after(
                self.exit_code, returncode, ends_server=oneshot, procserv_version=config.procserv_version
            )
        if not stopping or self._say_exit_when_stopped:
            self.console.broadcast(messages.child_exited(child.pid, returncode))
        self.console.broadcast(messages.current_time(config.timefmt, time.time()))
        self.console.broadcast(messages.shutting_down(self.policy.mode))
        if self.policy.mode is not RestartMode.ONESHOT:
            self.console.broadcast(commands_line(config.keys))
        self._move(ChildState.IDLE)
        self._changed()
        if oneshot:
            self._end_server()

    async def _watch(self, child: Child) -> int:
        """Carry the child's output and input until it exits and its output is drained (rule 4)."""
        drained = trio.Event()
        last_output = [trio.current_time()]

        async def pump_output() -> None:
            try:
                while data := await child.read(READ_SIZE):
                    last_output[0] = trio.current_time()
                    self.console.broadcast(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                drained.set()

        async def pump_input() -> None:
            try:
                while True:
                    await child.write(await self._input.get())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

        exited = False
        self._input.direct = getattr(child, "write_now", None)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump_output)
                nursery.start_soon(pump_input)
                returncode = await child.wait()
                exited = True
                # procServ kills what is left of the child's process group once the child is gone.
                child.signal_group(signal.SIGKILL)
                deadline = trio.current_time() + DRAIN_MAX
                while not drained.is_set():
                    quiet_since = last_output[0]
                    with trio.move_on_at(min(deadline, quiet_since + DRAIN_QUIET)):
                        await drained.wait()
                    if trio.current_time() >= deadline:
                        break
                    # Quiet for a while: stop, unless a read would return at once (a busy
                    # machine may simply not have run our reader yet).
                    if last_output[0] == quiet_since and not child.output_pending():
                        break
                nursery.cancel_scope.cancel()
        finally:
            self._input.direct = None  # the pty closes after this: never write to a stale fd
            if not exited:
                # We are being cancelled (an embedding program stopped us): leave no orphan (rule 6).
                child.signal_group(signal.SIGKILL)
                with trio.CancelScope(shield=True), trio.move_on_after(REAP_MAX):
                    await child.wait()
        return returncode

    async def stop(self) -> None:
        """The orderly stop: ``--killsig``, a grace period if asked for, then SIGKILL; waits for the exit."""
        await self._until(ChildState.IDLE, ChildState.RUNNING)  # a start under way: stop what it starts
        child = self._child
        config = self.config
        if child is None:
            return
        graceful = config.grace_period > 0 and config.kill_signal not in (0, signal.SIGKILL)
        self._say_exit_when_stopped = graceful
        if graceful:
            self.policy.set_mode(RestartMode.ONESHOT)  # upstream: the child leaves as in oneshot mode
        for delay, sig in kill_sequence(config.kill_signal, config.grace_period if graceful else 0.0):
            if delay:
                with trio.move_on_after(delay):
                    await self._until(ChildState.IDLE)
                if self._state is ChildState.IDLE:
                    break
            child.signal_group(sig)
        with trio.move_on_after(REAP_MAX + DRAIN_MAX):
            await self._until(ChildState.IDLE)
