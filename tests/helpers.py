"""Test helpers: a fake child, a console client that waits for bytes, and real-process tools.

Rules for the tests that use them (trio-websocket style):
* Use localhost only; servers take port 0 and tests read the port back.
* Tests with fakes run on ``autojump_clock``; tests with real processes or sockets never do.
* Every real test has an absolute timeout (``trio.fail_after``) and waits for bytes, not sleeps.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
import subprocess
import re
import shutil
import socket
import sys
import tempfile
from typing import Pattern

import trio
import trio.testing

from pyprocserv import Config, ProcessServer

PY = sys.executable


class FakeChild:
    """A child without a process: output is fed by the test, input is recorded."""

    _next_pid = 4242

    def __init__(self, argv: tuple[str, ...] = ("fake",), exit_on_signal: bool = True) -> None:
        FakeChild._next_pid += 1
        self.pid = FakeChild._next_pid
        self.argv = argv
        self.exit_on_signal = exit_on_signal
        self.input = bytearray()
        self.signals: list[int] = []  # while it lived; the group kill after its exit is not here
        self.window_sizes: list[tuple[int, int]] = []
        self.reading = True  # False: write() blocks like a child that never reads
        self.closed = False
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](1000)
        self._exited = trio.Event()
        self._returncode: int | None = None
        self._readable = trio.Event()
        self._readable.set()

    # test side
    def say(self, data: bytes) -> None:
        self._out_send.send_nowait(data)

    def exit(self, returncode: int) -> None:
        if self._returncode is None:
            self._returncode = returncode
            self._exited.set()
            self._out_send.close()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    # Child protocol
    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self._out_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""

    async def write(self, data: bytes) -> None:
        while not self.reading:
            await trio.sleep(3600)
        await trio.lowlevel.checkpoint()
        self.input += data

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._returncode is not None
        return self._returncode

    def signal_group(self, sig: int) -> None:
        if self.exited:
            return
        self.signals.append(sig)
        if self.exit_on_signal or sig == 9:
            self.exit(-sig)

    def set_window_size(self, rows: int, columns: int) -> None:
        self.window_sizes.append((rows, columns))

    def output_pending(self) -> bool:
        return False

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class FakeSpawner:
    """Hands out FakeChild objects and records every start (with its trio time)."""

    def __init__(self, **child_kwargs: object) -> None:
        self.children: list[FakeChild] = []
        self.start_times: list[float] = []
        self.calls: list[dict] = []
        self._kwargs = child_kwargs
        self._spawned = trio.lowlevel.ParkingLot()

    async def __call__(self, argv: tuple[str, ...], **kwargs: object) -> FakeChild:
        await trio.lowlevel.checkpoint()
        child = FakeChild(argv, **self._kwargs)  # type: ignore[arg-type]
        self.children.append(child)
        self.start_times.append(trio.current_time())
        self.calls.append(kwargs)
        self._spawned.unpark_all()
        return child

    async def wait_for(self, count: int) -> FakeChild:
        while len(self.children) < count:
            await self._spawned.park()
        return self.children[count - 1]


class Client:
    """A console client: collects everything received and waits for patterns in it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.received = bytearray()  # everything, for transcripts
        self._unread = bytearray()
        self.eof = False

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            raise EOFError("connection closed; unread: %r" % bytes(self._unread[-300:]))
        self.received += data
        self._unread += data

    async def expect(self, pattern: bytes | Pattern[bytes], timeout: float = 10) -> bytes:
        """Everything up to and including the first match; the rest stays unread."""
        with trio.fail_after(timeout):
            while True:
                if isinstance(pattern, bytes):
                    index = self._unread.find(pattern)
                    end = index + len(pattern) if index >= 0 else -1
                else:
                    match = pattern.search(self._unread)
                    end = match.end() if match else -1
                if end >= 0:
                    out = bytes(self._unread[:end])
                    del self._unread[:end]
                    return out
                try:
                    await self._fill()
                except EOFError:
                    raise AssertionError(
                        f"EOF before {pattern!r}; unread: {bytes(self._unread[-500:])!r}"
                    ) from None

    async def expect_eof(self, timeout: float = 10) -> bytes:
        with trio.fail_after(timeout):
            try:
                while True:
                    await self._fill()
            except (EOFError, trio.BrokenResourceError):
                out = bytes(self._unread)
                self._unread.clear()
                return out

    async def quiet(self, seconds: float = 0.3) -> bytes:
        """Everything that arrives until nothing has come for ``seconds``."""
        with trio.move_on_after(seconds) as scope:
            while True:
                try:
                    await self._fill()
                except EOFError:
                    break
                scope.deadline = trio.current_time() + seconds
        out = bytes(self._unread)
        self._unread.clear()
        return out

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


def attach(nursery: trio.Nursery, server, *, control: bool = True, telnet: bool = True) -> Client:
    """A client on an in-memory stream straight into ``server`` (no socket)."""
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: server.serve_stream(server_side, control=control, telnet=telnet))
    return Client(client_side)


# What procServ sends after every greeting: IAC WILL ECHO, IAC DO LINEMODE.
OFFER = b"\xff\xfb\x01\xff\xfd\x22"


async def serve_and_connect(nursery: trio.Nursery, config: Config, **options) -> tuple[ProcessServer, Client]:
    """An in-process server on ``config`` (and ``ProcessServer``'s ``options``, e.g. ``extras``)
    and one client on its first endpoint, past the greeting."""
    server = ProcessServer(config, **options)
    await nursery.start(server.run)
    client = await connect(server.endpoints[0])
    close_at_end(nursery, client)
    await client.expect(OFFER)
    return server, client


async def connect(address: str) -> Client:
    """Connect to an endpoint as the info file names it: tcp:HOST:PORT or unix:PATH."""
    if address.startswith("tcp:"):
        host, _, port = address[4:].rpartition(":")
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
    else:
        path = address[5:]
        stream = await trio.open_unix_socket("\0" + path[1:] if path.startswith("@") else path)
    return Client(stream)


_ISSUED_PORTS: set[int] = set()


def _ports_outside_ephemeral_range() -> range:
    """Ports below the kernel's ephemeral range (the one bind(0) and connect() draw from).

    A probed port handed to a server is free again until the server binds it; a client
    connecting meanwhile could be given it as its local port. Ports from below the range
    are never handed out that way.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    return range(21000, low) if low - 21000 >= 2000 else range(0)


_TEST_PORTS = _ports_outside_ephemeral_range()
_port_choice = random.Random()  # its own: hypothesis seeds the global one


def _bindable(port: int, kinds: tuple[int, ...]) -> bool:
    try:
        for kind in kinds:
            for host in ("127.0.0.1", "0.0.0.0"):  # log ports and some tests bind the wildcard
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((host, port))
    except OSError:
        return False
    return True


def free_port(*, udp: bool = False) -> int:
    """A TCP port free on 127.0.0.1 and 0.0.0.0 that no earlier call in this process returned.

    ``udp``: free for UDP as well (a Channel Access server's port is both).
    """
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    while True:
        if _TEST_PORTS:
            port = _port_choice.choice(_TEST_PORTS)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        if port not in _ISSUED_PORTS and _bindable(port, kinds):
            _ISSUED_PORTS.add(port)
            return port


_SHORT_TMPDIRS: list[str] = []


def short_tmpdir() -> str:
    """A short directory for UNIX socket paths (pytest's tmp_path can pass 108 bytes).

    conftest removes it after the test (``remove_short_tmpdirs``).
    """
    path = tempfile.mkdtemp(prefix="pps", dir="/tmp")
    _SHORT_TMPDIRS.append(path)
    return path


def remove_short_tmpdirs() -> None:
    while _SHORT_TMPDIRS:
        shutil.rmtree(_SHORT_TMPDIRS.pop(), ignore_errors=True)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (for chunk-boundary properties)."""
    points = sorted({min(c, len(data)) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


def child_script(code: str) -> tuple[str, ...]:
    """A Python child running ``code`` (unbuffered, so output reaches the pty at once)."""
    return (PY, "-u", "-c", code)


PID_RE = re.compile(rb"The PID of new child \"[^\"]*\" is: (\d+)")


class ServerProcess:
    """``python -m pyprocserv`` in the foreground (``-f``), found through its info file.

    Use ``async with ServerProcess([...options and command...]) as server:``; on leaving,
    the server gets SIGTERM and must exit within the timeout.
    """

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 preexec_fn=None, foreground: bool = True) -> None:
        self.dir = short_tmpdir()
        self.info = os.path.join(self.dir, "info")
        self.args = args
        self.env = env
        self.cwd = cwd or self.dir
        self.preexec_fn = preexec_fn
        self.foreground = foreground
        self.process: trio.Process | None = None
        self.endpoints: list[str] = []
        self.pid = 0
        self.stdout = os.path.join(self.dir, "stdout")
        self.stderr = os.path.join(self.dir, "stderr")
        self.returncode: int | None = None

    async def __aenter__(self) -> "ServerProcess":
        argv = [PY, "-m", "pyprocserv", "-I", self.info] + (["-f"] if self.foreground else []) + self.args
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=self.cwd,
                preexec_fn=self.preexec_fn,
            )
        try:
            with trio.fail_after(15):
                while True:
                    if os.path.exists(self.info):
                        lines = Path(self.info).read_text().splitlines()
                        if lines and lines[-1] and len(lines) >= 2:
                            break
                    if self.process.poll() is not None and self.foreground:
                        raise AssertionError("server exited: " + Path(self.stderr).read_text())
                    await trio.sleep(0.02)
        except BaseException:
            if self.process.poll() is None:  # a server that never got ready must not outlive its test
                self.process.kill()
                with trio.CancelScope(shield=True):
                    await self.process.wait()
            raise
        self.pid = int(lines[0].split(":")[1])
        self.endpoints = lines[1:]
        return self

    def control(self) -> str:
        return self.endpoints[-1]  # info file order: newest (log) first, first control last

    async def wait(self, timeout: float = 15) -> int:
        assert self.process is not None
        with trio.fail_after(timeout):
            self.returncode = await self.process.wait()
        return self.returncode

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            try:
                os.kill(self.process.pid, 15)
            except ProcessLookupError:
                pass
            try:
                await self.wait()
            except trio.TooSlowError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError("server did not exit on SIGTERM")

    def read_stderr(self) -> str:
        return Path(self.stderr).read_text(errors="replace")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), for zombie and orphan checks."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def close_at_end(nursery: trio.Nursery, *clients: Client) -> None:
    """Close the clients when the test's nursery is cancelled (no ResourceWarning)."""

    async def closer() -> None:
        try:
            await trio.sleep_forever()
        finally:
            for client in clients:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    nursery.start_soon(closer)
