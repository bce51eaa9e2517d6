"""The ``pyprocserv`` command: parse, check, bind, daemonize, serve, clean up.

Rules:
1. Everything that can fail because of the command line fails here, before the fork, with a
   message on stderr and a non-zero exit: options, endpoints, users, ports in use, the command.
2. Daemon mode (the default) forks once; the daemon writes the PID file before it reports that
   it serves (so systemd's Type=forking never races it, and the file is the daemon's to remove);
   the parent waits for that report, prints ``spawning daemon process: PID`` or why the daemon
   failed, and exits accordingly. The parent owns no file: signals reach it as they always did.
3. SIGTERM and SIGINT shut down in order, SIGHUP reopens the log; SIGPIPE stays ignored
   (EPIPE is an error on one client, not an event, and never a console message).
4. No signal finds a window: SIGTERM, SIGINT and SIGHUP are held (blocked) from the start of
   ``main()``, before any file exists, until trio's receiver takes them, and again from when it
   closes until ``main()`` returns. What arrives while they are held is delivered to the
   receiver once it is open, or, during the last clean-up, dropped: the shutdown it asks for is
   under way. The child still starts with an empty mask (``_shell.child``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import stat
import sys
from typing import Iterator, Mapping, Sequence

import trio

from .._core.cli import CliAnswer, CliError, CliOptions, parse_args, program_name, usage
from .._core.endpoints import Endpoint, TcpEndpoint, UnixEndpoint
from .._shell.files import UnsafeFile, write_owned_file
from .._shell.listeners import BindError, BoundEndpoint, bind_all, owner_ids
from .._shell.logfile import LogFile
from .._shell.server import ProcessServer
from .._shell.stdio import RawTerminal, TerminalStream
from . import wiring
from .logs import log_to_stderr
from .systemd import address_of, listen_fds, notify, watchdog_interval

READY_TIMEOUT = 10.0
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # rule 4


class CliExit(Exception):
    """The program stops before it serves: print ``stdout``/``stderr`` and exit with ``code``."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stderr or stdout)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def read_command_line(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> CliOptions:
    """:func:`parse_args`, with what ends the program there as a :class:`CliExit`.

    ``-h``/``-V``: the answer on stdout, exit 0; an error: its message on stderr (after the
    synopsis on stdout for getopt's errors, as procServ), exit 1.
    """
    try:
        return parse_args(argv, environ, cwd)
    except CliAnswer as answer:
        raise CliExit(0, stdout=answer.text, stderr=answer.message) from None
    except CliError as error:
        shown = usage(program_name(argv)) if error.show_usage else ""
        raise CliExit(1, stdout=shown, stderr=error.message) from None


def _write(stream: object, text: str) -> None:
    if text:
        stream.write(text)  # type: ignore[attr-defined]
        stream.flush()  # type: ignore[attr-defined]


def check_command(options: CliOptions) -> str | None:
    """What is wrong with the command, as procServ 2.7.0 checks it at start-up (None: nothing).

    Unlike procServ 2.7.0, a bare name is looked up in PATH as the child's exec will do.
    """
    config = options.config
    program = config.executable if config.executable is not None else config.started_as
    cwd = config.chdir or os.getcwd()
    if not os.path.isdir(cwd):
        return f"cannot start the child in {cwd}: no such directory (--chdir)"
    if "/" in program:
        path = os.path.join(cwd, program)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return f"{program}: {exc.strerror}"
        if not stat.S_ISREG(mode):
            return f"{program} is not a regular file"
        if not os.access(path, os.X_OK):
            return f"{program}: Permission denied (not executable)"
        return None
    search = (config.environment or {}).get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=search) is None:
        return f"{program}: command not found in PATH"
    return None


def _check_owners(options: CliOptions) -> str | None:
    """An unknown user or group of a UNIX endpoint, found before anything is bound."""
    for endpoint in [*options.config.control, options.config.log_endpoint]:
        if isinstance(endpoint, UnixEndpoint):
            try:
                owner_ids(endpoint)
            except BindError as exc:
                return exc.strerror
    return None


def _adopt(activated: list[tuple[socket.socket, str]], role: str) -> list[BoundEndpoint]:
    """Sockets systemd passed us for ``role`` (FileDescriptorName=log is the log port)."""
    out = []
    for sock, name in activated:
        if (name == "log") == (role == "log"):
            address = address_of(sock)
            if address.startswith("unix:"):
                endpoint: Endpoint = UnixEndpoint(address[5:])
            else:
                host, _, port = address[4:].rpartition(":")
                endpoint = TcpEndpoint(int(port), host.strip("[]"))
            out.append(BoundEndpoint(endpoint, role, sock, address))  # systemd owns any file
    return out


def _bind(options: CliOptions, activated: list[tuple[socket.socket, str]] = ()) -> list[BoundEndpoint]:
    """Bind the endpoints, or take the ones systemd's socket units passed in (LISTEN_FDS)."""
    config = options.config
    adopted_control = _adopt(list(activated), "control")
    adopted_log = _adopt(list(activated), "log")
    try:
        bound = adopted_control or bind_all(
            config.control, None, allow_remote_control=config.allow_remote_control, restrict_log=False
        )
    except BindError as exc:
        raise CliExit(
            exc.errno or 1,
            stderr=f"Caught an exception creating the initial control telnet port: {exc.strerror}\n"
            f"{config.program_name}: Exiting with error code: {exc.errno or 1}\n",
        ) from None
    if adopted_log:
        bound += adopted_log
    elif config.log_endpoint is not None:
        try:
            bound += bind_all((), config.log_endpoint, allow_remote_control=False, restrict_log=config.restrict_log)
        except BindError as exc:
            for b in bound:
                b.close()
            raise CliExit(
                exc.errno or 1,
                stderr=f"Caught an exception creating the initial log telnet port: {exc.strerror}\n"
                f"{config.program_name}: Exiting with error code: {exc.errno or 1}\n",
            ) from None
    return bound


def _loopback_warnings(options: CliOptions) -> list[str]:
    """A control address other than loopback is not used without --allow: say so."""
    config = options.config
    if config.allow_remote_control:
        return []
    out = []
    for endpoint in config.control:
        host = getattr(endpoint, "host", None)
        if host and host not in ("127.0.0.1", "::1"):
            out.append(
                f"{config.program_name}: control endpoint {host}:{endpoint.port} is bound to "  # type: ignore[union-attr]
                "loopback; use --allow to listen on other addresses\n"
            )
    return out


def _unwritable(path: str | None) -> str | None:
    """Why a file the daemon will write at ``path`` cannot be created (None: it can, or no path)."""
    if not path:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"no directory {directory} (create it, or choose another path)"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable for this user"
    return None


def _write_pidfile(path: str, prog: str) -> str | None:
    """Write our pid to ``path``; the message for stderr when that fails, else None."""
    try:
        write_owned_file(path, f"{os.getpid()}\n", "PID file")
    except UnsafeFile as exc:
        return f"{prog}: unable to open PID file {path}: {exc.strerror}\n"
    except OSError:
        return f"{prog}: unable to open PID file {path}\n"
    return None


@contextlib.contextmanager
def _signals_held() -> Iterator[set[signal.Signals]]:
    """Rule 4: hold the shutdown signals (yields the mask before); at the end drop what arrived."""
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield saved
    finally:
        while signal.sigtimedwait(HELD_SIGNALS, 0) is not None:
            pass  # the shutdown it asks for has happened
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)


def _daemonize(options: CliOptions, warnings: list[str], signal_mask: set[signal.Signals]) -> int | None:
    """Fork. In the parent: wait for the daemon to report, then return the exit code.

    In the daemon: return None, with the ready pipe's write end in ``_READY_FD``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        global _READY_FD
        _READY_FD = write_end
        return None
    signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)  # rule 2: the files are the daemon's
    os.close(write_end)
    prog = options.config.program_name
    report = b""
    with os.fdopen(read_end, "rb") as pipe:
        import select

        if select.select([pipe], [], [], READY_TIMEOUT)[0]:
            report = pipe.read()
        else:
            report = b"ok\n"  # slow, but alive: let it be
    if not report.startswith(b"ok"):
        text = report.decode(errors="replace").strip() or "the daemon exited during start-up"
        _write(sys.stderr, f"{prog}: {text}\n")
        return 1
    _write(sys.stderr, report[3:].decode(errors="replace"))  # the daemon's notes (a PID file it could not write)
    if not options.quiet:
        _write(sys.stderr, f"{prog}: spawning daemon process: {pid}\n")
        for line in warnings:
            _write(sys.stderr, line)
    return 0


_READY_FD: int | None = None


def explain(exc: BaseException) -> str:
    """The innermost errors of an exception (group), in a line (an OSError as its message)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(explain(e) for e in exc.exceptions)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return f"{type(exc).__name__}: {exc}"


def _report_ready(text: bytes) -> None:
    global _READY_FD
    if _READY_FD is not None:
        try:
            os.write(_READY_FD, text)
        except OSError:
            pass
        os.close(_READY_FD)
        _READY_FD = None


@contextlib.contextmanager
def _signals_let_through() -> Iterator[None]:
    """Rule 4: while trio's receiver is open, the held signals (and those that came) reach it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


async def _serve(options: CliOptions, bound: list[BoundEndpoint], log: LogFile | None, notes: str) -> int:
    """Serve until the end; ``notes`` go to the parent with the report that we serve."""
    config = options.config
    server = ProcessServer(config, bound_endpoints=bound, log=log, extras=wiring.server_extras(config))
    codes: list[int] = []
    with trio.open_signal_receiver(*HELD_SIGNALS) as signals, _signals_let_through():
        async with trio.open_nursery() as nursery:

            async def run_server(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                codes.append(await server.run(task_status=task_status))
                notify("STOPPING=1")
                nursery.cancel_scope.cancel()

            async def handle_signals() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        server.reopen_log()
                    else:
                        notify("STOPPING=1")
                        server.shutdown()

            async def tell_systemd() -> None:
                """Type=notify: ready once serving, a status line on changes, the watchdog."""
                if not os.environ.get("NOTIFY_SOCKET"):
                    return
                interval = watchdog_interval()
                if interval:
                    nursery.start_soon(keep_watchdog_fed, interval)
                generation = None
                first = True
                while True:
                    status = server.status
                    if status.running:
                        line = f"{status.name}: running, pid {status.pid}, {status.users} client(s)"
                    else:
                        line = f"{status.name}: shut down, auto restart {status.restart_mode.value}"
                    notify(("READY=1\n" if first else "") + "STATUS=" + line)
                    first = False
                    generation = await server.wait_status_change(generation)

            async def keep_watchdog_fed(interval: float) -> None:
                while True:
                    notify("WATCHDOG=1")
                    await trio.sleep(interval)

            nursery.start_soon(handle_signals)
            await nursery.start(run_server)  # a failure is reported by main(), after the clean-up
            _report_ready(b"ok\n" + notes.encode())
            nursery.start_soon(tell_systemd)
            if options.foreground and config.logfile != "-":
                nursery.start_soon(functools.partial(server.serve_stream, TerminalStream(0, 1), telnet=False))
    return codes[0] if codes else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if argv:  # messages name the program, not the path of its script (procServ prints argv[0] as is)
        argv[0] = os.path.basename(argv[0])
        if argv[0] == "__main__.py":
            argv[0] = "pyprocserv"
    with _signals_held() as signal_mask:
        return _main(argv, signal_mask)


def _main(argv: list[str], signal_mask: set[signal.Signals]) -> int:
    try:
        options = read_command_line(argv)
        config = options.config
        prog = config.program_name
        problem = _check_owners(options)
        if problem:
            raise CliExit(1, stderr=problem + "\n")
        problem = wiring.check_pv_support(options.config) or wiring.check_web_support(options.config)
        if problem:
            raise CliExit(1, stderr=f"{prog}: {problem}\n")
        problem = check_command(options)
        if problem:
            raise CliExit(1, stderr=f"{prog}: {problem}\n")
        warnings = list(options.warnings) + _loopback_warnings(options)
        bound = _bind(options, listen_fds())
    except CliExit as exc:
        _write(sys.stdout, exc.stdout)
        _write(sys.stderr, exc.stderr)
        return exc.code

    log = None
    if config.logfile and config.logfile != "-":
        log = LogFile(config.logfile)
        if log.failing:  # unlike procServ 2.7.0, not followed by "No log file specified": one was
            _write(sys.stderr, f"{prog}: unable to open log file {config.logfile}: {log.failing} "
                   "(serving without it; SIGHUP tries again)\n")
    for what, path in (("info file", config.info_file), ("status file", config.status_file)):
        problem = _unwritable(path)
        if problem:  # procServ 2.7.0 says nothing; the daemon's own message would go to /dev/null
            _write(sys.stderr, f"{prog}: cannot write the {what} {path}: {problem}; serving without it\n")
    daemon = not (options.foreground or options.debug)
    if daemon and not options.quiet and log is None and config.logfile != "-":
        what = "" if config.log_endpoint is not None else " and no port for log connections"
        warnings.append(f"Warning: No log file{what} specified.\n")
    if daemon:
        code = _daemonize(options, warnings, signal_mask)
        if code is not None:
            for b in bound:
                b.sock.close()  # the daemon owns them now; the files are its to remove
            return code
    elif not options.quiet:
        for line in warnings:
            _write(sys.stderr, line)

    notes = ""  # for the parent's stderr, in daemon mode
    pidfile = None  # once written: ours to remove
    if options.pidfile:
        notes = _write_pidfile(options.pidfile, prog) or ""
        pidfile = None if notes else options.pidfile
        if not daemon:
            _write(sys.stderr, notes)

    def remove_pidfile() -> None:
        nonlocal pidfile
        if pidfile is not None:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
            pidfile = None

    console = options.foreground and config.logfile != "-" and os.isatty(0)
    try:
        with RawTerminal(0) if console else contextlib.nullcontext():
            return trio.run(_serve, options, bound, log, notes if daemon else "")
    except BaseException as exc:
        remove_pidfile()  # before the parent hears of it and exits: nothing of ours is left then
        _report_ready(f"error: {explain(exc)}\n".encode())
        raise
    finally:
        remove_pidfile()


def entrypoint() -> None:
    log_to_stderr()
    sys.exit(main())
