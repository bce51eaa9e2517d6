"""The process server: the trio shell that wires the pure parts to sockets, the pty and files.

Rules:
1. One :class:`ProcessServer` is one child and its console. It keeps the control API, the
   :class:`Status` model and :meth:`ProcessServer.run`, which serves until ^Q, :meth:`shutdown`
   or (oneshot) the child's exit, then cleans up and returns the exit code, which depends on
   the procServ version spoken (``Config.procserv_version``; ``_core.policy.exit_code_after``).
2. The work is done by one object per job: the :class:`~.supervision.ChildSupervisor` (the
   restart policy and the child), one :class:`~.session.Session` per client, the console, and
   :mod:`.statusfile`. A run moves through the phases of :class:`~.lifecycle.Phase` in order.
3. Decisions are made by the pure modules (restart policy, key map, telnet codec, messages);
   the shell only carries bytes and events between them.
4. Nothing a client or the child does may stop the server: every session catches its own
   errors, the pty reader never waits on a client, and input to a child that does not read
   waits in a bounded queue.
5. All state the console shows lives in one place and is read by the greeting, the
   :class:`Status` snapshot and the info file alike.
6. The optional parts (PV server, watchdog, status file) are extras under a
   :class:`~.extras.Supervisor`: they see this server only as a ``Root`` (status,
   change events, commands, :meth:`ProcessServer.announce`, output listeners), and whatever
   they raise ends them, not the child (architecture §4).
7. Client input is read 1 KiB at a time: each read ends that client's turn, so one client's
   flood cannot hold the loop that every other console and the child's output share.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from typing import Callable, Sequence, final

import trio

from .._core import messages
from .._core.config import Config
from .._core.policy import RestartMode
from .._core.watchdog import WatchState
from .._version import __version__
from .child import spawn_pty_child
from .console import Console
from .extras import ExtraSpec, Supervisor, config_extras
from .lifecycle import Lifecycle, Phase
from .listeners import BoundEndpoint, bind_all, procserv_info
from .logfile import LogFile
from .status import Status
from .session import CONSOLE_ROLES, FLUSH_MAX, MessageTransport, Session, Sessions
from .statusfile import keep_status_file, write_info_file
from .stdio import StdoutWriter
from .supervision import ChildSupervisor, SpawnFn, commands_line

logger = logging.getLogger(__name__)


@final
class ProcessServer:
    """Runs one child under a pty and serves its console. See the README for embedding."""

    def __init__(
        self,
        config: Config,
        *,
        spawn: SpawnFn | None = None,
        bound_endpoints: list[BoundEndpoint] | None = None,
        log: LogFile | None = None,
        extras: Sequence[ExtraSpec] | None = None,
    ) -> None:
        self.config = config
        # The PVs, the watchdog: what the program chose, or (None) what the Config asks for,
        # found when run() starts, so a missing caproto is raised by run() as it documents.
        self._wanted_extras = None if extras is None else tuple(extras)
        self._bound = bound_endpoints
        self._log = log
        self._server_dir = os.getcwd()
        self._server_pid = os.getpid()
        self._server_started_at = time.time()
        self._stdout: StdoutWriter | None = None
        self._console = Console(history_lines=config.history, browser_history_lines=config.browser_history)
        self._lifecycle = Lifecycle()
        self._supervisor = ChildSupervisor(
            config,
            self._console,
            self._lifecycle,
            spawn=spawn or spawn_pty_child,
            child_dir=config.chdir or self._server_dir,
            procserv_info=lambda: procserv_info(self._server_pid, self._bound or []),
            changed=self._poke,
            end_server=self.shutdown,
        )
        self._changed = trio.lowlevel.ParkingLot()
        self._generation = 0  # counts status changes, so a watcher never misses one
        self._sessions = Sessions(self._poke)
        self._watch_state: tuple[WatchState, int] | None = None
        self._extras = Supervisor(self.announce, self._poke)

    # -- public API ----------------------------------------------------------------------


    @property
    def endpoints(self) -> tuple[str, ...]:
        """The bound endpoints as the info file names them (``tcp:127.0.0.1:20000``, ...)."""
        return tuple(b.address for b in self._bound or ())

    @property
    def status(self) -> Status:
        users, loggers = self._console.counts()
        supervisor = self._supervisor
        policy = supervisor.policy
        last_exit = supervisor.last_exit
        return Status(
            name=self.config.child_name,
            running=supervisor.running,
            pid=supervisor.pid,
            restart_mode=policy.mode,
            waiting_for_start=not supervisor.running and policy.due_at() is None,
            start_count=policy.starts,
            child_started_at=supervisor.started_at,
            last_exit_code=last_exit[0] if last_exit else None,
            last_exit_at=last_exit[1] if last_exit else None,
            server_pid=self._server_pid,
            server_started_at=self._server_started_at,
            users=users,
            loggers=loggers,
            endpoints=self.endpoints,
            watchdog=self._watch_state[0] if self._watch_state else None,
            watchdog_restarts=self._watch_state[1] if self._watch_state else 0,
            extras=self._extras.snapshot(),
        )

    @property
    def status_generation(self) -> int:
        """A number that grows with every change of :attr:`status`."""
        return self._generation

    async def wait_status_change(self, since: int | None = None) -> int:
        """Wait for a change of :attr:`status` (start, exit, mode, clients); return the generation.

        With ``since`` (a generation seen before), return at once if anything changed after it.
        """
        if since is None or since == self._generation:
            await self._changed.park()
        return self._generation

    def start(self) -> None:
        """Start the child now if it is not running (^R): bypasses holdoff, OFF mode and ``-w``."""
        if self._supervisor.request_start():
            self._poke()

    def kill(self) -> None:
        """^X: send the kill signal to a running child, or start one if none runs."""
        if not self._supervisor.signal(self.config.kill_signal):
            self.start()

    def toggle_autorestart(self) -> RestartMode:
        """^T: the next auto restart mode, announced on the console."""
        mode = self._supervisor.toggle()
        self._console.broadcast(messages.toggled(mode, self.config.procserv_version))
        self._poke()
        return mode

    def set_restart_mode(self, mode: RestartMode) -> None:
        """Set the auto restart mode; a change is announced as ^T announces it."""
        mode = RestartMode(mode)
        if self._supervisor.set_mode(mode):
            self._console.broadcast(messages.toggled(mode, self.config.procserv_version))
            self._poke()

    def stop(self) -> None:
        """Auto restart OFF, then kill the child (procServControl's STOP)."""
        self.set_restart_mode(RestartMode.OFF)
        self._supervisor.signal(self.config.kill_signal)

    def restart(self) -> None:
        """Auto restart ON, then kill the child, or start it if none runs (procServControl's RESTART)."""
        self.set_restart_mode(RestartMode.ON)
        self.kill()

    def respawn(self) -> None:
        """Kill the child and start it again at once, whatever the mode and holdoff (the watchdog's restart)."""
        self._supervisor.restart_after_exit()
        self.kill()

    def shutdown(self) -> None:
        """Orderly exit, as on SIGTERM: stop the child, tell the clients, remove our files."""
        # No start is due any more: run() must not wait for one (a SIGTERM can arrive
        # before the supervisor's first turn, which then never starts the child).
        if self._lifecycle.advance(Phase.STOPPING):
            self._poke()

    def set_watch_state(self, state: WatchState, restarts: int) -> None:
        """The watchdog reports its state here, so the PVs and status snapshot show it."""
        if self._watch_state != (state, restarts):
            self._watch_state = (state, restarts)
            self._poke()

    def announce(self, text: str, *, who: str = "pyprocserv") -> None:
        """An ``@@@ pyprocserv:`` (or ``@@@ WHO:``) line on every console and in the log."""
        self._console.broadcast(messages.announcement(text, who))

    def add_output_listener(self, listener: Callable[[bytes], None]) -> None:
        """Call ``listener`` with every chunk the console shows; it must never wait or raise."""
        self._console.taps.append(listener)

    def remove_output_listener(self, listener: Callable[[bytes], None]) -> None:
        try:
            self._console.taps.remove(listener)
        except ValueError:
            pass

    def reopen_log(self) -> None:
        """SIGHUP: reopen the log file (after logrotate renamed it)."""
        if self._log is not None:
            notice = self._log.reopen()
            if notice:
                self._console.notify(notice)

    async def serve_stream(self, stream: trio.abc.Stream, *, control: bool = True, telnet: bool = True) -> None:
        """Serve one client on any stream (the foreground terminal uses this)."""
        session = Session(self, self._console, self._greeting, self._supervisor, self._sessions, stream,
                          control=control, telnet=telnet)
        await session.run()

    async def serve_console(self, transport: MessageTransport, *, role: str) -> None:
        """Serve one browser console on a message transport (a WebSocket) until either side ends.

        ``role`` "operator": a read-write control client, keys handled as telnet's, its size
        the pty's as NAWS sets it. "spy": reads what a control client reads, counts as a
        logger, and its input is dropped. Both read the greeting and the history, then the
        replay-end text message, then live output; keys before the browser's ``ready`` are
        dropped (``_core.webterm``). Raises ValueError for any other role.
        """
        if role not in CONSOLE_ROLES:
            raise ValueError(f"console role must be one of {', '.join(CONSOLE_ROLES)}, not {role!r}")
        session = Session(self, self._console, self._greeting, self._supervisor, self._sessions, transport,
                          control=role == "operator", telnet=False, web=True)
        await session.run()

    def _greeting(self, *, control: bool) -> bytes:
        """What a new client reads first (without the telnet offer)."""
        config = self.config
        keys = config.keys
        name = config.child_name
        supervisor = self._supervisor
        text = b""
        if control:
            text += messages.welcome(config.version_text or f"pyprocserv {__version__}")
            text += messages.usage(keys.kill, supervisor.policy.mode, keys.toggle, keys.logout, config.procserv_version)
        text += messages.server_info(self._server_pid, self._server_dir, supervisor.child_dir, name, config.started_as)
        if config.procserv_version != "2.7" and config.logfile:
            log = self._log
            opened = not (isinstance(log, LogFile) and log.failing is not None)
            text += messages.child_log_file(config.logfile, opened)
        pid = supervisor.pid
        text += messages.child_pid(name, pid) if pid is not None else messages.child_shut_down(name)
        text += messages.started_at(config.timefmt, self._server_started_at, name, supervisor.started_at)
        log = self._log
        if log is not None and log.failing is not None and isinstance(log, LogFile):
            text += messages.log_error(log.path, log.failing)
        if control:
            text += messages.connected(*self._console.counts())
        if pid is None:
            text += commands_line(keys)
        return text

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[ProcessServer] = trio.TASK_STATUS_IGNORED) -> int:
        """Serve until the end; returns the exit code (the child's, in oneshot mode).

        Raises, before ``task_status.started()`` (so ``nursery.start`` raises them):

        * :class:`~pyprocserv.BindError` (an ``OSError``): an endpoint cannot be bound (in
          use, no permission, an unknown user or group, a path that is not a socket). Nothing
          bound is left open.
        * ``ImportError``: ``pv_prefix`` or ``watch`` is set but caproto is not installed.
        * ``ValueError``: ``pv_write_hosts`` names a host that does not resolve.

        Once it serves, nothing a client, the child, the log or an extra does is raised: it is
        handled and shown on the console or logged, and the child is restarted as configured.
        """
        config = self.config
        lifecycle = self._lifecycle
        self._server_pid = os.getpid()
        self._server_started_at = time.time()
        if self._bound is None:
            self._bound = bind_all(
                config.control,
                config.log_endpoint,
                allow_remote_control=config.allow_remote_control,
                restrict_log=config.restrict_log,
            )
        opened_log = False
        try:
            self._open_outputs()
            opened_log = self._log is not None
            async with trio.open_nursery() as nursery:
                if self._stdout is not None:
                    nursery.start_soon(self._stdout.run)
                for bound in self._bound:
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(bound.sock))
                    nursery.start_soon(self._serve, listener, bound.role == "control")
                nursery.start_soon(self._supervisor.run)
                await self._start_extras(nursery)
                await lifecycle.reached(Phase.SERVING)
                if config.info_file and not lifecycle.stopping:  # once we serve: tools may take it as "ready"
                    write_info_file(config.info_file, config.program_name, self._server_pid, self._bound)
                await self._start_status_file(nursery)
                task_status.started(self)
                await lifecycle.reached(Phase.STOPPING)
                await self._supervisor.stop()
                await self._sessions.close(self._console)
                if self._stdout is not None:
                    self._stdout.close()
                    with trio.move_on_after(FLUSH_MAX):
                        await self._stdout.finished()
                nursery.cancel_scope.cancel()
        finally:
            lifecycle.advance(Phase.DONE)
            for bound in self._bound:
                bound.close()
            for path in (config.info_file, config.status_file):
                if path:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
            if opened_log and self._log is not None:
                self._log.close()
        return self._supervisor.exit_code

    async def _start_extras(self, nursery: trio.Nursery) -> None:
        """The extras the program asked for, in its order, each under the supervisor."""
        wanted = self._wanted_extras
        for extra in config_extras(self.config) if wanted is None else wanted:
            run = functools.partial(extra.run, self)
            if extra.awaited:
                await nursery.start(self._extras.run, extra.name, run)
            else:
                nursery.start_soon(self._extras.run, extra.name, run)

    async def _start_status_file(self, nursery: trio.Nursery) -> None:
        path = self.config.status_file
        if path:

            async def status_file(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                task_status.started()
                await keep_status_file(self, path)

            await nursery.start(self._extras.run, "status file", status_file)

    def _open_outputs(self) -> None:
        config = self.config
        log_to_stdout = config.logfile == "-"
        if log_to_stdout or config.echo_to_stdout:
            self._stdout = StdoutWriter(1)
        if self._log is None and config.logfile and not log_to_stdout:
            self._log = LogFile(config.logfile)
            if self._log.failing:
                logger.error(f"{config.program_name}: unable to open log file {config.logfile}")
        self._console.log = self._stdout if log_to_stdout else self._log
        # nobody may be connected when the log starts failing: say it on stderr too (-f, -d, units)
        self._console.on_log_notice = lambda notice: logger.error(notice.decode(errors="replace").strip())
        if config.echo_to_stdout and not log_to_stdout and self._stdout is not None:
            self._console.echo = self._stdout.write
        self._console.budget = config.client_budget
        if config.logstamp is not None:
            stamp_format = config.logstamp
            self._console.stamp = lambda: os.fsencode(messages.format_time(stamp_format, time.time()))

    def _poke(self) -> None:
        """Something the supervisor or a status watcher cares about changed."""
        self._generation += 1
        self._supervisor.wake()
        self._changed.unpark_all()

    # -- clients -----------------------------------------------------------------------------

    async def _serve(self, listener: trio.SocketListener, control: bool) -> None:
        async def handler(stream: trio.SocketStream) -> None:
            try:
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                # trio keeps unsent data under 16 KiB (TCP_NOTSENT_LOWAT); 0 restores the kernel's
                # default, so the socket buffer absorbs a client's hiccup before our queue does.
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 0)
            except OSError:
                pass
            await self.serve_stream(stream, control=control, telnet=True)

        await trio.serve_listeners(handler, [listener])
