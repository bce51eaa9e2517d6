"""Supervised extras: the optional parts beside the IOC, which can never take it down.

Rules (architecture §4):
1. The IOC's core (child, pty, console fan-out, log file, control endpoints) is the root.
   Everything else is an extra: the CA server, the watchdog's monitor, the status file, host
   PVs, host-mode reload.
2. An extra talks to the root only through :class:`Root`: status snapshots and change events
   out, commands in, :meth:`Root.announce` for an ``@@@`` line. It never holds the console, the
   restart policy or the child.
3. :class:`Supervisor` runs each extra. An unexpected exception ends that extra only: it is
   reported once (an ``@@@`` line on the console and in the log, the traceback logged, the
   extra's state in the status snapshot and so the status file) and the extra is started again
   after a back-off (1 s, doubling to 60 s; from 1 s again after a minute of good running).
4. Cancellation is not a failure: when the root stops, its extras stop with it, and an error
   that races with the cancellation is still reported, never passed up.
5. The root does not know which extras exist: the programs (``_apps``) choose them and hand
   each to the server as an :class:`ExtraSpec` (``ProcessServer(config, extras=[...])``), so the
   shell never imports the optional Channel Access layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, Sequence, final

import trio

from .._core import messages
from .._core.backoff import Backoff

if TYPE_CHECKING:
    from .._core.config import Config
    from .._core.policy import RestartMode
    from .._core.watchdog import WatchState
    from .session import MessageTransport
    from .status import Status

Extra = Callable[..., Awaitable[object]]  # async def extra(task_status=trio.TASK_STATUS_IGNORED)
logger = logging.getLogger(__name__)
FIRST_RETRY = 1.0
LAST_RETRY = 60.0


class Root(Protocol):
    """What an extra may see and do of one process server (``ProcessServer`` is one)."""

    config: Config

    @property
    def status(self) -> Status: ...

    async def wait_status_change(self, since: int | None = None) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def kill(self) -> None: ...

    def respawn(self) -> None: ...

    def toggle_autorestart(self) -> object: ...

    def set_restart_mode(self, mode: RestartMode) -> None: ...

    def set_watch_state(self, state: WatchState, restarts: int) -> None: ...

    def announce(self, text: str, *, who: str = "pyprocserv") -> None: ...

    def add_output_listener(self, listener: Callable[[bytes], None]) -> None: ...

    def remove_output_listener(self, listener: Callable[[bytes], None]) -> None: ...

    async def serve_console(self, transport: MessageTransport, *, role: str) -> None: ...


@dataclass(frozen=True)
class ExtraSpec:
    """One extra a program asks a server to run: ``await run(root, task_status=...)``.

    ``name`` is what its failures and the status snapshot call it. With ``awaited`` the server
    reports itself started only once the extra is (a PV server: its port is bound); otherwise
    the extra starts beside the server, which does not wait for it.
    """

    name: str
    run: Callable[..., Awaitable[object]]  # async def run(root: Root, *, task_status=...)
    awaited: bool = False


ConfigExtras = Callable[["Config"], "Sequence[ExtraSpec]"]
# Which extras a configuration asks for (``pv_prefix``, ``watch``): the programs' layer knows,
# and ``pyprocserv/__init__.py`` registers its answer (``_apps/wiring.py``), so a server built
# without ``extras=`` still serves what its Config says while the shell never imports ``_ca``.
_config_extras: ConfigExtras = lambda config: ()


def provide_config_extras(choose: ConfigExtras) -> None:
    """Register how a server built without ``extras=`` finds the extras its Config asks for."""
    global _config_extras
    _config_extras = choose


def config_extras(config: Config) -> Sequence[ExtraSpec]:
    """The extras ``config`` asks for, as the registered chooser says (none if nobody registered)."""
    return _config_extras(config)


def reason(exc: BaseException) -> str:
    """One line for an exception (group): its innermost errors' types and messages."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(reason(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failures(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(the errors to report, what must go on up: cancellation, KeyboardInterrupt, SystemExit)."""
    if isinstance(exc, BaseExceptionGroup):
        failure, passed_on = exc.split(Exception)
        while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
            failure = failure.exceptions[0]  # our own nurseries' wrapping says nothing
        return failure, passed_on
    return (exc, None) if isinstance(exc, Exception) else (None, exc)


@final
class Supervisor:
    """Runs extras; one that fails is reported and started again later, never passed on."""

    def __init__(
        self,
        announce: Callable[[str], None],
        changed: Callable[[], None] = lambda: None,
        *,
        first: float = FIRST_RETRY,
        cap: float = LAST_RETRY,
    ) -> None:
        self._announce = announce
        self._changed = changed
        self.first = first
        self.cap = cap
        self.states: dict[str, str] = {}  # extra -> "running" or what its last failure was

    def snapshot(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.states.items()))

    async def run(self, name: str, extra: Extra, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``extra`` until cancelled. Started once the extra is (or its first try failed)."""
        backoff = Backoff(self.first, self.cap)
        ready = False
        try:
            while True:
                backoff.started(trio.current_time())
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(extra)
                        self._set(name, "running")
                        if not ready:
                            ready = True
                            task_status.started()
                    return  # the extra finished its work
                except BaseException as exc:
                    failure, passed_on = _failures(exc)
                    if failure is not None:
                        delay = backoff.failed(trio.current_time())
                        self._report(name, failure, delay)
                    if passed_on is not None:
                        raise passed_on from None
                if not ready:
                    ready = True
                    task_status.started()  # the IOC does not wait for an extra that cannot start
                await trio.sleep(delay)
        finally:
            self.states.pop(name, None)

    def _set(self, name: str, state: str) -> None:
        if self.states.get(name) != state:
            self.states[name] = state
            self._changed()

    def _report(self, name: str, failure: BaseException, delay: float) -> None:
        why = reason(failure)
        logger.error(f"pyprocserv: {name} failed; restarting it in {delay:g} s", exc_info=failure)
        self._set(name, f"failed ({why}); restarting in {delay:g} s")
        try:
            self._announce(messages.extra_failed(name, why[:200], delay))
        except Exception:
            logger.exception("pyprocserv: reporting a failed extra failed")  # the report must not fail the supervisor
