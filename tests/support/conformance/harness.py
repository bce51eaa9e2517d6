"""The conformance harness: one daemon-mode run of procServ or pyprocserv (``ServerUnderTest``),
its clients, leak checks and launch results."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from support.client import DEFAULT_TIMEOUT, OFFER, Client, ExpectTimeout
from support.launch import reap
from support.ports import free_port
from support.proc import alive, children_of, descendants, listening_tcp_ports, pids_with_cwd_under, start_time

from .normalise import PID_RES, canonical_exit_order, normalise, NormContext


PROCSERV = shutil.which("procServ") or "/usr/bin/procServ"


# The block that ends every child start (the second line may carry a
# --logstamp prefix on log clients).
START_BLOCK_END = re.compile(
    rb"The PID of new child [^\r\n]* is: \d+\r\n[^\r\n@]*@@@ @@@ @@@ @@@ @@@\r\n"
)
SIGCHILD_MSG = re.compile(rb"@@@ Received a sigChild for process \d+\.[^\r\n]*\r\n")
SHUTDOWN_MSG = re.compile(rb"@@@ Child process is shutting down, [^\r\n]*\r\n")


class LaunchFailed(RuntimeError):
    """The launcher exited non-zero; ``result`` holds its output."""

    def __init__(self, result: LaunchResult) -> None:
        super().__init__(f"server launch failed: {result}")
        self.result = result


def _lost_port_race(result: LaunchResult) -> bool:
    """The launch failed because a listening port was taken (procServ and
    pyprocserv both exit with EADDRINUSE, 98, and name the port)."""
    return result.returncode == 98 and b"port" in result.stderr


class LeakError(AssertionError):
    """The server ignored SIGTERM or left processes behind."""


@dataclass
class LaunchResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    def render(self, ctx: NormContext) -> bytes:
        return normalise(
            b"exit: %d\n--- stdout\n%s--- stderr\n%s"
            % (self.returncode, self.stdout, self.stderr),
            ctx,
        )


class ServerCommand(list[str]):
    """A server command prefix plus what the harness must know about it.

    A plain list works as ``server_cmd`` too; this adds

    * ``prog_names``: the argv[0] string(s) the program prints in its
      messages (``<PROG>``).  Default: the first word of the command.  For
      ``[sys.executable, "-m", "pyprocserv"]`` pass whatever pyprocserv
      prints (e.g. the path of its ``__main__.py``).
    * ``env``: extra environment variables (e.g. ``PYTHONPATH``), since the
      server runs with a temporary directory as its cwd.
    """

    def __init__(
        self,
        argv: Sequence[str],
        prog_names: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(argv)
        self.prog_names = list(prog_names) or [argv[0]]
        self.env = dict(env or {})


def _prog_names(server_cmd: Sequence[str]) -> list[str]:
    return list(getattr(server_cmd, "prog_names", None) or [server_cmd[0]])


def _server_env(server_cmd: Sequence[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without PROCSERV_* (procServ reads PROCSERV_PID and
    PROCSERV_DEBUG), plus the command's and the caller's extra variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCSERV_")}
    env.update(getattr(server_cmd, "env", None) or {})
    env.update(extra or {})
    return env


async def _run_captured(
    argv: Sequence[str], cwd: str, env: dict[str, str], timeout: float
) -> LaunchResult:
    """Run a command; capture stdout/stderr in files, not pipes, so that a
    daemon that keeps them open cannot make us wait.

    The files are opened O_WRONLY like a pipe or ``2>file``: procServ 2.7.0
    exits with the errno left over after ``perror()``, and glibc's perror
    leaves EINVAL (22) when stderr is write-only but not when it is O_RDWR
    (a tty, or Python's ``TemporaryFile``), where the code is 2 (ENOENT).
    """
    cap = tempfile.mkdtemp(prefix="cfcap", dir="/tmp")
    try:
        out_path, err_path = os.path.join(cap, "out"), os.path.join(cap, "err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await trio.lowlevel.open_process(
                list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err,
            )
            try:
                with trio.fail_after(timeout):
                    rc = await proc.wait()
            finally:
                await reap(proc)
        with open(out_path, "rb") as f:
            stdout = f.read()
        with open(err_path, "rb") as f:
            stderr = f.read()
        return LaunchResult(rc, stdout, stderr)
    finally:
        shutil.rmtree(cap, ignore_errors=True)


class ServerUnderTest:
    """One daemon-mode run of a procServ-compatible server, as an async CM.

    ``server_cmd`` is the command prefix (``["/usr/bin/procServ"]`` or
    ``[sys.executable, "-m", "pyprocserv"]``).

    The server runs in a fresh ``/tmp/cfXXXXXXXX`` directory (its cwd) as::

        <server_cmd> [-q] -p server.pid [-l LOGPORT] [-L log.txt] [-I info.txt]
                     <options...> -P CTLPORT [-P unix:DIR/ctl.sock] <child...>

    ``__aenter__`` waits until the launcher exited, the pid file holds a pid
    and every listener is listening.  Readiness is read from /proc/net/tcp
    (LISTEN state) instead of by connecting: a probe connection would be
    counted in the next client's "N user(s)" greeting line if the server had
    not yet noticed that the probe went away.

    ``__aexit__`` closes the clients and stops the server (``stop``).
    """

    def __init__(
        self,
        server_cmd: Sequence[str],
        child: Sequence[str] = ("/bin/cat",),
        *,
        options: Sequence[str] = (),
        quiet: bool = True,
        log_port: bool = False,
        log_file: bool = False,
        info_file: bool = False,
        unix_control: bool = False,
        env: dict[str, str] | None = None,
        prog_names: Sequence[str] | None = None,
    ) -> None:
        self.server_cmd = list(server_cmd)
        self.child = list(child)
        self.options = list(options)
        self.quiet = quiet
        self.want_log_port = log_port
        self.want_log_file = log_file
        self.want_info_file = info_file
        self.want_unix = unix_control
        self.env = _server_env(server_cmd, env)
        self.ctx = NormContext(
            prog_names=list(prog_names) if prog_names else _prog_names(server_cmd)
        )
        self.clients: list[Client] = []
        self.server_pid: int | None = None
        self._server_start: int | None = None
        self.launch: LaunchResult | None = None
        self.known_children: dict[int, int] = {}  # pid -> start time
        self.saved: dict[str, bytes] = {}  # the directory's files after stop
        self.leaks: list[str] = []

    # paths -------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def pid_file(self) -> str:
        return self.path("server.pid")

    @property
    def log_file(self) -> str:
        return self.path("log.txt")

    @property
    def info_file(self) -> str:
        return self.path("info.txt")

    @property
    def unix_path(self) -> str:
        return self.path("ctl.sock")

    def argv(self) -> list[str]:
        a = list(self.server_cmd)
        if self.quiet:
            a.append("-q")
        a += ["-p", "server.pid"]
        if self.want_log_port:
            a += ["-l", str(self.log_port)]
        if self.want_log_file:
            a += ["-L", "log.txt"]
        if self.want_info_file:
            a += ["-I", "info.txt"]
        a += self.options
        a += ["-P", str(self.ctl_port)]
        if self.want_unix:
            a += ["-P", "unix:" + self.unix_path]
        return a + self.child

    # lifecycle ---------------------------------------------------------
    async def __aenter__(self) -> ServerUnderTest:
        self.dir = tempfile.mkdtemp(prefix="cf", dir="/tmp")
        self.ctx.dirs += [self.dir, os.path.realpath(self.dir)]
        try:
            for attempt in range(3):
                self._pick_ports()
                try:
                    await self._start()
                    break
                except LaunchFailed as exc:
                    # Another process may take a probed port before the server
                    # binds it; only that failure is worth another try.
                    if attempt == 2 or not _lost_port_race(exc.result):
                        raise
                    for name in os.listdir(self.dir):  # start the next try clean
                        os.unlink(self.path(name))
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _pick_ports(self) -> None:
        self.ctl_port = free_port()
        self.ctx.ports[self.ctl_port] = "<PORT>"
        self.log_port = 0
        if self.want_log_port:
            self.log_port = free_port()
            self.ctx.ports[self.log_port] = "<LOGPORT>"

    async def _start(self) -> None:
        self.launch = await _run_captured(self.argv(), self.dir, self.env, 10)
        if self.launch.returncode != 0:
            raise LaunchFailed(self.launch)
        try:
            await self._wait_ready(10)
        except trio.TooSlowError:
            raise ExpectTimeout(
                f"server not ready after 10 s: pid file {_read_or_empty(self.pid_file)!r}, "
                f"listening {sorted(listening_tcp_ports())}, launch {self.launch}"
            ) from None

    async def _wait_ready(self, timeout: float) -> None:
        with trio.fail_after(timeout):
            while True:
                try:
                    with open(self.pid_file, "rb") as f:
                        raw = f.read()
                except FileNotFoundError:
                    raw = b""
                if re.fullmatch(rb"\d+\n", raw):
                    self.server_pid = int(raw)
                    break
                await trio.sleep(0.01)
            self._server_start = start_time(self.server_pid)
            self.ctx.pid_token(self.server_pid)  # the server is always <PID1>
            want = {self.ctl_port} | ({self.log_port} if self.want_log_port else set())
            while not want <= listening_tcp_ports() or (
                self.want_unix and not os.path.exists(self.unix_path)
            ):
                await trio.sleep(0.01)

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        with trio.CancelScope(shield=True):
            for c in self.clients:
                await c.aclose()
            await self.stop()
            self.saved = {}
            for name in sorted(os.listdir(self.dir)):
                if os.path.isfile(self.path(name)):
                    self.saved[name] = self.read(name)
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.leaks and exc_type is None:
            raise LeakError("; ".join(self.leaks))

    def serveralive(self) -> bool:
        return self.server_pid is not None and alive(self.server_pid, self._server_start)

    async def wait_server_gone(self, timeout: float) -> bool:
        """True once the daemon has exited (a zombie counts as gone)."""
        with trio.move_on_after(timeout):
            while self.serveralive():
                await trio.sleep(0.02)
            return True
        return False

    def _pids_in_transcripts(self) -> set[int]:
        found = set()
        for c in self.clients:
            for rx in PID_RES[:3]:
                found |= {int(m.group(1)) for m in rx.finditer(c.received)}
        return found

    async def stop(self) -> None:
        """SIGTERM the daemon (pid from the pid file), wait until it is gone,
        SIGKILL as a fallback; then make sure no child is left behind.

        Children are found three ways: processes whose parent is the daemon
        (before the SIGTERM), pids seen in the clients' transcripts (greeting
        and start messages), and processes whose cwd is the server directory.
        A pid is only killed if it is still the same process (start time) or
        its cwd is inside our directory, so a reused pid is never hit.
        Anything that had to be killed is recorded in ``leaks``.
        """
        with trio.CancelScope(shield=True):
            suspects = dict(self.known_children)
            if self.server_pid is not None:
                for p in descendants(self.server_pid):
                    started = start_time(p)
                    if started is not None:
                        suspects[p] = started
            if self.serveralive():
                assert self.server_pid is not None
                os.kill(self.server_pid, signal.SIGTERM)
                if not await self.wait_server_gone(5):
                    self.leaks.append(f"server {self.server_pid} ignored SIGTERM for 5 s")
                    os.kill(self.server_pid, signal.SIGKILL)
                    await self.wait_server_gone(2)

            def leftovers() -> set[int]:
                left = {p for p, st in suspects.items() if alive(p, st)}
                in_dir = pids_with_cwd_under(self.dir)
                left |= in_dir
                left |= {p for p in self._pids_in_transcripts() if p in in_dir}
                left.discard(os.getpid())
                return left

            # procServ SIGKILLs the child's process group on shutdown; give
            # the kernel a moment to finish it.
            with trio.move_on_after(2):
                while leftovers():
                    await trio.sleep(0.02)
            for p in leftovers():
                self.leaks.append(f"left-over process {p} had to be killed")
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # clients -------------------------------------------------------------
    async def connect(self, kind: str = "control", name: str | None = None) -> Client:
        """kind: "control" (TCP), "log" (TCP log port) or "unix" (unix control)."""
        name = name or kind
        if kind == "control":
            c = await Client.connect_tcp(self.ctl_port, name)
        elif kind == "log":
            c = await Client.connect_tcp(self.log_port, name)
        elif kind == "unix":
            c = await Client.connect_unix(self.unix_path, name)
        else:
            raise ValueError(kind)
        self.clients.append(c)
        return c

    async def greeted(self, kind: str = "control", name: str | None = None) -> Client:
        """``connect``, then read the greeting up to the telnet offer."""
        c = await self.connect(kind, name)
        await c.expect(OFFER)
        return c

    async def control_and_log(self, name: str = "control") -> tuple[Client, Client]:
        """A control client once the child runs, then a log client; both past their greetings."""
        return await self.connect_when_running("control", name), await self.greeted("log")

    def child_pids(self) -> list[int]:
        if self.server_pid is None:
            return []
        kids = children_of(self.server_pid, zombies=False)
        for p in kids:
            started = start_time(p)
            if started is not None:
                self.known_children[p] = started
        return kids

    async def wait_for_child(self, timeout: float = 5.0) -> bool:
        """Wait until the server has a child process (read from /proc)."""
        with trio.move_on_after(timeout):
            while not self.child_pids():
                await trio.sleep(0.02)
            return True
        return False

    async def connect_when_running(
        self, kind: str = "control", name: str | None = None, timeout: float = 6.0
    ) -> Client:
        """Connect once the child runs; return the client with its greeting read.

        Waits for a child process in /proc, then connects; if the greeting
        still says ``is SHUT DOWN`` the client is dropped and a new one tried
        0.3 s later.
        """
        with trio.fail_after(timeout):
            await self.wait_for_child(timeout)
            while True:
                c = await self.connect(kind, name)
                greeting = await c.expect(OFFER)
                if b"is SHUT DOWN" not in greeting:
                    return c
                await c.aclose()
                self.clients.remove(c)
                await trio.sleep(0.3)

    # files -----------------------------------------------------------------
    def read(self, name: str) -> bytes:
        with open(self.path(name), "rb") as f:
            return f.read()

    def listing(self) -> bytes:
        """``<mode> <name>`` of every entry in the server's directory."""
        lines = []
        for name in sorted(os.listdir(self.dir)):
            mode = stat.filemode(os.lstat(self.path(name)).st_mode)
            lines.append(f"{mode} {name}\n")
        return "".join(lines).encode()

    def norm(self, data: bytes) -> bytes:
        return normalise(data, self.ctx)

    def transcripts(self, **clients: Client) -> dict[str, bytes]:
        """What each client received, normalised, under the name the scenario gives it."""
        return {name: self.norm(client.transcript()) for name, client in clients.items()}

    def norm_exit(self, data: bytes) -> bytes:
        return canonical_exit_order(normalise(data, self.ctx))


async def expect_exit(client: Client, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Wait for both child-exit groups (in either order); return the bytes.

    The cursor moves past the later of the two marker lines; a trailing
    "^R or ^X" line may still be unread (it stays in the transcript anyway).
    """
    start = client.pos
    await client.wait_until(
        lambda: bool(SIGCHILD_MSG.search(client.received, start) and SHUTDOWN_MSG.search(client.received, start)),
        timeout,
        "child exit messages",
    )
    m1 = SIGCHILD_MSG.search(client.received, start)
    m2 = SHUTDOWN_MSG.search(client.received, start)
    assert m1 and m2
    client.pos = max(m1.end(), m2.end())
    return bytes(client.received[start : client.pos])


Scenario = Callable[[Sequence[str]], Awaitable[dict[str, bytes]]]
SCENARIO_TIMEOUT = 90.0


def _read_or_empty(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


async def wait_for_file(path: str, pattern: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Wait until the file's content matches ``pattern``; return the content."""
    rx = re.compile(pattern)
    try:
        with trio.fail_after(timeout):
            while not rx.search(data := _read_or_empty(path)):
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise ExpectTimeout(f"{path}: no {pattern!r}; content {_read_or_empty(path)!r}") from None
    return data
