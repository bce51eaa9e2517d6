"""The process server: the trio shell that wires the pure parts to sockets, the pty and files.

Rules:
1. One :class:`ProcessServer` is one child and its console. It owns the listeners, the child,
   the log and the info file; :meth:`ProcessServer.run` serves until ^Q, :meth:`shutdown`
   or (oneshot) the child's exit, then cleans up and returns the exit code, which depends on
   the procServ version spoken (``Config.procserv_version``; ``_core.policy.exit_code_after``).
2. Decisions are made by the pure modules (restart policy, key map, telnet codec, messages);
   this module only carries bytes and events between them.
3. Nothing a client or the child does may stop the server: every session catches its own
   errors, the pty reader never waits on a client, and input to a child that does not read
   waits in a bounded queue.
4. All state the console shows lives here once and is read by the greeting, the
   :class:`Status` snapshot and the info file alike.
5. The optional parts (PV server, watchdog, status file) are extras under a
   :class:`~pyprocserv._shell.extras.Supervisor`: they see this server only as a ``Root`` (status,
   change events, commands, :meth:`ProcessServer.announce`, output listeners), and whatever
   they raise ends them, not the child (architecture §4).
6. Client input is read 1 KiB at a time: each read ends that client's turn, so one client's
   flood cannot hold the loop that every other console and the child's output share.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Awaitable, Callable, Sequence, final

import trio

from .._core import messages
from .child import Child, spawn_pty_child
from .._core.config import Config
from .console import Console, InputQueue, Outbox, Reader
from .extras import ExtraSpec, Supervisor
from .files import replace_file, write_owned_file
from .._core.keys import Key
from .listeners import BoundEndpoint, bind_all, info_lines, procserv_info
from .logfile import LogFile
from .._core.policy import RestartMode, RestartPolicy, exit_code_after, kill_sequence, toggle_cycle
from .status import Status
from .stdio import StdoutWriter
from .._core.telnet import Data, TelnetConnection, WindowSize
from .._core.watchdog import WatchState
from .._version import __version__

READ_SIZE = 1 << 16
# Client input is read in small pieces: each read ends the client's turn, so however fast one
# client sends (an option storm is one Python step per 3 bytes), every other task runs within
# about a millisecond. People type, and pastes are small; only the child's output needs big reads.
INPUT_READ_SIZE = 1 << 10
# After the child exits, its output is read until the pty reports its end (EIO). Only a
# process outside the child's group can keep the pty open longer; we stop waiting when it has
# been quiet this long, or at the latest after DRAIN_MAX.
DRAIN_QUIET = 0.2
DRAIN_MAX = 2.0
# How long shutdown waits for a child to die after SIGKILL, and for clients to take the last bytes.
REAP_MAX = 5.0
FLUSH_MAX = 1.0

SpawnFn = Callable[..., Awaitable[Child]]


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
        extras: Sequence[ExtraSpec] = (),
    ) -> None:
        self.config = config
        self._wanted_extras = tuple(extras)  # the PVs, the watchdog: what the program chose
        self._spawn = spawn or spawn_pty_child
        self._bound = bound_endpoints
        self._log = log
        self.policy = RestartPolicy(
            config.restart_mode, config.holdoff, wait=config.wait,
            cycle=toggle_cycle(config.procserv_version, config.restart_mode),
        )
        self.server_dir = os.getcwd()
        self.child_dir = config.chdir or self.server_dir
        self.server_pid = os.getpid()
        self.server_started_at = time.time()
        self._stdout: StdoutWriter | None = None
        self.console = Console(history_lines=config.history)
        self._input = InputQueue(config.input_queue_limit)
        self._child: Child | None = None
        self._child_started_at: float | None = None
        self._last_exit: tuple[int, float] | None = None
        self._window_size: tuple[int, int] | None = None
        self._stopping = False
        self._quiet_stop = True
        self._exit_code = 0
        self._quit = trio.Event()
        self._poked = trio.Event()
        self._child_gone = trio.Event()
        self._child_gone.set()
        self._changed = trio.lowlevel.ParkingLot()
        self._generation = 0  # counts status changes, so a watcher never misses one
        self._sessions = 0
        self._sessions_done = trio.Event()
        self._settled = trio.Event()  # the first start has happened, or none is due (-w)
        self._watch_state: tuple[WatchState, int] | None = None
        self.extras = Supervisor(self.announce, self._poke)

    # -- public API ----------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The bound endpoints as the info file names them (``tcp:127.0.0.1:20000``, ...)."""
        return tuple(b.address for b in self._bound or ())

    @property
    def status(self) -> Status:
        users, loggers = self.console.counts()
        return Status(
            name=self.config.child_name,
            running=self._child is not None,
            pid=self._child.pid if self._child is not None else None,
            restart_mode=self.policy.mode,
            waiting_for_start=self._child is None and self.policy.due_at() is None,
            start_count=self.policy.starts,
            child_started_at=self._child_started_at if self._child is not None else None,
            last_exit_code=self._last_exit[0] if self._last_exit else None,
            last_exit_at=self._last_exit[1] if self._last_exit else None,
            server_pid=self.server_pid,
            server_started_at=self.server_started_at,
            users=users,
            loggers=loggers,
            endpoints=self.endpoints,
            watchdog=self._watch_state[0] if self._watch_state else None,
            watchdog_restarts=self._watch_state[1] if self._watch_state else 0,
            extras=self.extras.snapshot(),
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
        if self._child is None:
            self.policy.request_start()
            self._poke()

    def kill(self) -> None:
        """^X: send the kill signal to a running child, or start one if none runs."""
        if self._child is not None:
            self._child.signal_group(self.config.kill_signal)
        else:
            self.start()

    def toggle_autorestart(self) -> RestartMode:
        """^T: the next auto restart mode, announced on the console."""
        mode = self.policy.toggle()
        self.console.broadcast(messages.toggled(mode, self.config.procserv_version))
        self._poke()
        return mode

    def set_restart_mode(self, mode: RestartMode) -> None:
        """Set the auto restart mode; a change is announced as ^T announces it."""
        mode = RestartMode(mode)
        if mode is not self.policy.mode:
            self.policy.mode = mode
            self.console.broadcast(messages.toggled(mode, self.config.procserv_version))
            self._poke()

    def stop(self) -> None:
        """Auto restart OFF, then kill the child (procServControl's STOP)."""
        self.set_restart_mode(RestartMode.OFF)
        if self._child is not None:
            self._child.signal_group(self.config.kill_signal)

    def restart(self) -> None:
        """Auto restart ON, then kill the child, or start it if none runs (procServControl's RESTART)."""
        self.set_restart_mode(RestartMode.ON)
        self.kill()

    def respawn(self) -> None:
        """Kill the child and start it again at once, whatever the mode and holdoff (the watchdog's restart)."""
        self.policy.request_start_after_exit()
        self.kill()

    def shutdown(self) -> None:
        """Orderly exit, as on SIGTERM: stop the child, tell the clients, remove our files."""
        if not self._stopping:
            self._stopping = True
            # No start is due any more: run() must not wait for one (a SIGTERM can arrive
            # before the supervisor's first turn, which then never starts the child).
            self._settled.set()
            self._quit.set()
            self._poke()

    def set_watch_state(self, state: WatchState, restarts: int) -> None:
        """The watchdog reports its state here, so the PVs and status snapshot show it."""
        if self._watch_state != (state, restarts):
            self._watch_state = (state, restarts)
            self._poke()

    def announce(self, text: str, *, who: str = "pyprocserv") -> None:
        """An ``@@@ pyprocserv:`` (or ``@@@ WHO:``) line on every console and in the log."""
        self.console.broadcast(messages.announcement(text, who))

    def add_output_listener(self, listener: Callable[[bytes], None]) -> None:
        """Call ``listener`` with every chunk the console shows; it must never wait or raise."""
        self.console.taps.append(listener)

    def remove_output_listener(self, listener: Callable[[bytes], None]) -> None:
        try:
            self.console.taps.remove(listener)
        except ValueError:
            pass

    def reopen_log(self) -> None:
        """SIGHUP: reopen the log file (after logrotate renamed it)."""
        if self._log is not None:
            notice = self._log.reopen()
            if notice:
                self.console.notify(notice)

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
        self.server_pid = os.getpid()
        self.server_started_at = time.time()
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
                nursery.start_soon(self._supervise)
                await self._start_extras(nursery)
                await self._settled.wait()
                if config.info_file and not self._stopping:  # once we serve: tools may take it as "ready"
                    self._write_info_file()
                await self._start_status_file(nursery)
                task_status.started(self)
                await self._quit.wait()
                await self._stop_child()
                await self._close_sessions()
                if self._stdout is not None:
                    self._stdout.close()
                    with trio.move_on_after(FLUSH_MAX):
                        await self._stdout_drained()
                nursery.cancel_scope.cancel()
        finally:
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
        return self._exit_code

    def _write_info_file(self) -> None:
        path = self.config.info_file
        assert path is not None and self._bound is not None
        try:
            text = "".join(line + "\n" for line in info_lines(self.server_pid, self._bound))
            write_owned_file(path, text, "info file")
        except OSError as exc:
            print(f"{self.config.program_name}: unable to write info file {path}: {exc.strerror}", file=sys.stderr)

    async def _keep_status_file(self) -> None:
        """Rewrite the status file on every change (atomically; at most 5 times a second)."""
        path = self.config.status_file
        assert path is not None
        generation = None
        while True:
            snapshot = json.dumps(self.status.as_dict(), sort_keys=True)
            try:
                replace_file(path, snapshot + "\n")
            except OSError as exc:
                print(f"{self.config.program_name}: unable to write status file {path}: {exc.strerror}",
                      file=sys.stderr)
                return
            generation = await self.wait_status_change(generation)
            await trio.sleep(0.2)

    async def _start_extras(self, nursery: trio.Nursery) -> None:
        """The extras the program asked for, in its order, each under the supervisor."""
        for extra in self._wanted_extras:
            run = functools.partial(extra.run, self)
            if extra.awaited:
                await nursery.start(self.extras.run, extra.name, run)
            else:
                nursery.start_soon(self.extras.run, extra.name, run)

    async def _start_status_file(self, nursery: trio.Nursery) -> None:
        if self.config.status_file:

            async def status_file(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                task_status.started()
                await self._keep_status_file()

            await nursery.start(self.extras.run, "status file", status_file)

    async def serve_stream(self, stream: trio.abc.Stream, *, control: bool = True, telnet: bool = True) -> None:
        """Serve one client on any stream (the foreground terminal uses this)."""
        await self._session(stream, control=control, telnet=telnet)

    def _open_outputs(self) -> None:
        config = self.config
        log_to_stdout = config.logfile == "-"
        if log_to_stdout or config.echo_to_stdout:
            self._stdout = StdoutWriter(1)
        if self._log is None and config.logfile and not log_to_stdout:
            self._log = LogFile(config.logfile)
            if self._log.failing:
                print(f"{config.program_name}: unable to open log file {config.logfile}", file=sys.stderr)
        self.console.log = self._stdout if log_to_stdout else self._log
        # nobody may be connected when the log starts failing: say it on stderr too (-f, -d, units)
        self.console.on_log_notice = lambda notice: print(
            notice.decode(errors="replace").strip(), file=sys.stderr, flush=True
        )
        if config.echo_to_stdout and not log_to_stdout and self._stdout is not None:
            self.console.echo = self._stdout.write
        self.console.budget = config.client_budget
        if config.logstamp is not None:
            stamp_format = config.logstamp
            self.console.stamp = lambda: os.fsencode(messages.format_time(stamp_format, time.time()))

    async def _stdout_drained(self) -> None:
        while self._stdout is not None and self._stdout.outbox.queued:
            await trio.sleep(0.01)

    def _poke(self) -> None:
        """Something the supervisor or a status watcher cares about changed."""
        self._generation += 1
        self._poked.set()
        self._changed.unpark_all()

    # -- the child ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stopping:
            self._poked = trio.Event()
            if self.policy.server_done():  # ^T reached ONESHOT while no child runs
                self.shutdown()
                return
            due = self.policy.due_at()
            if due is None:
                self._settled.set()
                await self._poked.wait()
            elif due > trio.current_time():
                with trio.move_on_at(due):
                    await self._poked.wait()
            else:
                await self._run_child()

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.environment or {})
        env["PROCSERV_INFO"] = procserv_info(self.server_pid, self._bound or [])
        return env

    async def _run_child(self) -> None:
        config = self.config
        name = config.child_name
        self.console.broadcast(messages.restarting(name, config.command[0]))
        self._child_gone = trio.Event()
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
            # No pty, no fork, a failed setup in the child: say so where procServ does (its
            # stderr) and on the console, and try again after a back-off (never in a hot loop).
            reason = getattr(exc, "strerror", None) or str(exc)
            delay = self.policy.spawn_failed(trio.current_time())
            print(f"Fork failed: {reason}", file=sys.stderr)
            self.console.broadcast(messages.spawn_retry(reason, delay) if delay is not None
                                   else messages.spawn_failed(reason))
            self._child_gone.set()
            self._settled.set()
            self._poke()
            return
        self._child = child
        self._child_started_at = time.time()
        self.policy.child_started(trio.current_time())
        self.console.broadcast(messages.new_child(name, child.pid))
        self._settled.set()
        self._poke()
        try:
            returncode = await self._watch(child)
        finally:
            self._child = None
            self._input.clear()
            with trio.CancelScope(shield=True):
                await child.aclose()
        self._last_exit = (returncode, time.time())
        oneshot = self.policy.child_exited() and not self._stopping
        if not self._stopping:  # a child we stop ourselves leaves the exit code as it was
            self._exit_code = exit_code_after(
                self._exit_code, returncode, ends_server=oneshot, procserv_version=config.procserv_version
            )
        if not (self._stopping and self._quiet_stop):
            self.console.broadcast(messages.child_exited(child.pid, returncode))
        self.console.broadcast(messages.current_time(config.timefmt, time.time()))
        self.console.broadcast(messages.shutting_down(self.policy.mode))
        if self.policy.mode is not RestartMode.ONESHOT:
            self.console.broadcast(self._commands_line())
        self._child_gone.set()
        self._poke()
        if oneshot:
            self.shutdown()

    async def _watch(self, child: Child) -> int:
        """Carry the child's output and input until it exits and its output is drained."""
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
                # We are being cancelled (an embedding program stopped us): leave no orphan.
                child.signal_group(signal.SIGKILL)
                with trio.CancelScope(shield=True), trio.move_on_after(REAP_MAX):
                    await child.wait()
        return returncode

    async def _stop_child(self) -> None:
        while self._child is None and not self._child_gone.is_set():
            await self._changed.park()  # a start is under way: stop what it starts
        child = self._child
        config = self.config
        if child is None:
            return
        graceful = config.grace_period > 0 and config.kill_signal not in (0, signal.SIGKILL)
        self._quiet_stop = not graceful
        if graceful:
            self.policy.mode = RestartMode.ONESHOT  # upstream: the child leaves as in oneshot mode
        for delay, sig in kill_sequence(config.kill_signal, config.grace_period if graceful else 0.0):
            if delay:
                with trio.move_on_after(delay):
                    await self._child_gone.wait()
                if self._child_gone.is_set():
                    break
            child.signal_group(sig)
        with trio.move_on_after(REAP_MAX + DRAIN_MAX):
            await self._child_gone.wait()

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
            await self._session(stream, control=control, telnet=True)

        await trio.serve_listeners(handler, [listener])

    def _commands_line(self) -> bytes:
        keys = self.config.keys
        return messages.commands(keys.restart, keys.kill, keys.quit, keys.logout)

    def greeting(self, *, control: bool) -> bytes:
        """What a new client reads first (without the telnet offer)."""
        config = self.config
        keys = config.keys
        name = config.child_name
        running = self._child is not None
        text = b""
        if control:
            text += messages.welcome(config.version_text or f"pyprocserv {__version__}")
            text += messages.usage(keys.kill, self.policy.mode, keys.toggle, keys.logout, config.procserv_version)
        text += messages.server_info(self.server_pid, self.server_dir, self.child_dir, name, config.started_as)
        if config.procserv_version != "2.7" and config.logfile:
            log = self._log
            opened = not (isinstance(log, LogFile) and log.failing is not None)
            text += messages.child_log_file(config.logfile, opened)
        if running:
            assert self._child is not None
            text += messages.child_pid(name, self._child.pid)
        else:
            text += messages.child_shut_down(name)
        text += messages.started_at(
            config.timefmt, self.server_started_at, name, self._child_started_at if running else None
        )
        log = self._log
        if log is not None and log.failing is not None and isinstance(log, LogFile):
            text += messages.log_error(log.path, log.failing)
        if control:
            text += messages.connected(*self.console.counts())
        if not running:
            text += self._commands_line()
        return text

    async def _session(self, stream: trio.abc.Stream, *, control: bool, telnet: bool) -> None:
        config = self.config
        reader = Reader(
            Outbox(config.client_queue_limit or config.client_budget),
            control=control,
            telnet=telnet,
            stamped=not control and config.logstamp is not None,
        )
        codec = TelnetConnection() if telnet else None
        first = self.greeting(control=control)
        if codec is not None:
            first += codec.initiate()
        reader.outbox.put(first, bounded=False)
        history = self.console.history.replay()
        if history:  # counted as this client's own: clients that attach at different times hold different ones
            reader.outbox.put(TelnetConnection.encode(history) if telnet else history, bounded=False)
        self.console.attach(reader)
        self._sessions += 1
        self._poke()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_outbox, stream, reader.outbox, nursery.cancel_scope)
                await self._receive(stream, reader, codec)
                nursery.cancel_scope.cancel()
        except Exception:
            traceback.print_exc()  # our own bug: say so, and keep serving everyone else
        finally:
            self.console.detach(reader)
            self._sessions -= 1
            if self._sessions == 0:
                self._sessions_done.set()
            if reader.window_size is not None:
                self._apply_window_size()
            self._poke()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(FLUSH_MAX):
                    await stream.aclose()

    async def _send_outbox(self, stream: trio.abc.Stream, outbox: Outbox, session: trio.CancelScope) -> None:
        try:
            if isinstance(stream, trio.SocketStream):
                # Gathering writes straight from the shared chunks: no copy for this client.
                sock = stream.socket
                outbox.writev = functools.partial(os.writev, sock.fileno())
                while await outbox.wait():
                    if not outbox.flush():
                        await trio.lowlevel.wait_writable(sock)
            else:
                while (data := await outbox.get()) is not None:
                    await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            outbox.writev = None  # never write to a closed (and maybe reused) descriptor
        session.cancel()

    async def _receive(self, stream: trio.abc.Stream, reader: Reader, codec: TelnetConnection | None) -> None:
        try:
            await self._receive_until_done(stream, reader, codec)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the peer went away (reset, timeout): that ends its session and nothing else

    async def _receive_until_done(
        self, stream: trio.abc.Stream, reader: Reader, codec: TelnetConnection | None
    ) -> None:
        while data := await stream.receive_some(INPUT_READ_SIZE):
            if not reader.control:
                continue  # log clients: input is read and dropped, as procServ does
            if codec is None:
                if self._typed(reader, data):
                    return
                continue
            codec.receive_data(data)
            reply = codec.data_to_send()
            if reply:
                reader.outbox.put(reply)
            size = None
            for event in codec.events():
                if isinstance(event, WindowSize):
                    size = (event.rows, event.columns)  # a burst costs one resize: the last size
                    continue
                if size is not None:  # before the keys typed after it reach the child
                    self._apply_window_size(reader, size)
                    size = None
                if isinstance(event, Data) and self._typed(reader, event.data):
                    return
            if size is not None:
                self._apply_window_size(reader, size)

    def _typed(self, reader: Reader, data: bytes) -> bool:
        """Act on a control client's keys; True when it logged out."""
        child = self._child
        keys, to_child = self.config.keys.scan(data, child is not None)
        logout = False
        for key in keys:
            if key is Key.START:
                self.start()
            elif key is Key.QUIT:
                self.shutdown()
            elif key is Key.LOGOUT:
                # Gone at once, as procServ closes it before anything else happens: not even
                # the echo of what it typed before the logout key reaches it.
                logout = True
                self.console.detach(reader)
            elif key is Key.TOGGLE:
                self.toggle_autorestart()
            elif key is Key.KILL and child is not None:
                child.signal_group(self.config.kill_signal)
        if to_child and child is not None:
            dropped = self._input.offer(to_child)
            if dropped and not reader.dropping_input:
                reader.outbox.put(messages.input_dropped(dropped))
            reader.dropping_input = bool(dropped)  # one notice per episode, not one per chunk
        return logout

    def _apply_window_size(self, reader: Reader | None = None, reported: tuple[int, int] | None = None) -> None:
        """Size the pty as the console says (after ``reader`` reported a size); ioctl only on a change."""
        if reader is not None and reported is not None:
            self.console.report_window_size(reader, reported)
        size = self.console.newest_window_size()
        if size is not None and size != self._window_size:
            self._window_size = size
            if self._child is not None:
                self._child.set_window_size(*size)

    async def _close_sessions(self) -> None:
        for reader in self.console.readers:
            reader.outbox.close()
        if self._sessions:
            self._sessions_done = trio.Event()
            with trio.move_on_after(FLUSH_MAX):
                await self._sessions_done.wait()

