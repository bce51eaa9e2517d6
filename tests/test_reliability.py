"""Reliability: faults the server survives, and proof that nothing is lost (issue #5).

Every test runs the real ``pyprocserv`` command (``ServerProcess``) and, after the fault,
checks that the server still serves and that its log is intact. What is already proved
elsewhere is not repeated here: a port in use, a stale UNIX socket, a long UNIX path, unknown
users and groups, loopback binding, --allow/--restrict, socket modes, the abstract socket,
shell metacharacters, a child that ignores SIGTERM, one non-reading child and one stalled
client are in ``test_cli_real.py``; the child's fds and one ``seq 1 200000`` in
``test_child_real.py``.

Proved here:
* a crash loop of 1000 restarts leaves the server's fd count, RSS and zombie count as they were;
* a server killed with SIGKILL takes its child with it. The mechanism is the pty hangup, not
  PR_SET_PDEATHSIG (pyprocserv sets none): the master dies with the server, the kernel sends
  the child (the session leader of the pty) SIGHUP and SIGCONT, and when it exits, SIGHUP to
  the terminal's foreground process group (the child's group). The child has SIGHUP unblocked
  and at its default; a child that ignores SIGHUP would survive;
* grandchildren that keep the pty open after the child exits (setsid) delay nothing for long;
* a log on a full disk, or in a removed directory, gives one notice and the console goes on;
* 1000 connect/disconnect cycles, 1000 concurrent clients, clients that reset mid-greeting,
  megabytes typed at a child that never reads, 10 MB of random bytes, truncated IAC sequences
  and NAWS floods stall nobody;
* 100 MB written by a child reach the log byte for byte (SHA-256) and every reading client
  either gets every byte or, for the bytes it missed, the documented notice with their count;
* repeated ``seq 1 200000; exit`` runs lose no line;
* malformed option values end in a message or a working server, never in a traceback;
* the telnet codec and the key map, one behind the other, take any input;
* ``bench/soak.py --short`` passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
import random
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.client import OFFER, attach, close_at_end, connect, tcp_address
from support.fakes import FakeSpawner
from support.launch import PY, ServerProcess, short_tmpdir
from support.proc import children_of, fd_count, proc_state, rss_kib
from pyprocserv import ProcessServer, RestartMode
from pyprocserv._core import messages
from pyprocserv._core.keys import KeyMap
from pyprocserv._apps.main import CliExit, _check_owners, check_command, read_command_line
from pyprocserv._core.telnet import Data, TelnetConnection, WindowSize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEPARATOR = b"@@@ @@@ @@@ @@@ @@@\r\n"
END_OF_RUN = b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n"
SKIPPED = re.compile(rb"\r\n@@@ pyprocserv: (\d+) bytes of output skipped: this client could not keep up\r\n")


# -- helpers -------------------------------------------------------------------------------------


def zombies_of(pid: int) -> list[int]:
    """The server's own children in state Z (PID 1 here reaps nobody: look nowhere else)."""
    return [child for child in children_of(pid) if proc_state(child) == "Z"]


async def settle(measure, expected, timeout: float = 10.0) -> object:
    """Poll ``measure()`` until it equals ``expected`` (a closing socket takes a moment)."""
    deadline = trio.current_time() + timeout
    value = measure()
    while value != expected and trio.current_time() < deadline:
        await trio.sleep(0.05)
        value = measure()
    return value


async def steady_fd_count(pid: int) -> int:
    """The fd count once it has not changed for 0.2 s (sockets of clients that left close late)."""
    last, same = fd_count(pid), 0
    while same < 4:
        await trio.sleep(0.05)
        now = fd_count(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


async def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    deadline = trio.current_time() + timeout
    while proc_state(pid) not in (None, "Z"):
        if trio.current_time() > deadline:
            return False
        await trio.sleep(0.02)
    return True


async def still_serves(nursery: trio.Nursery, server: ServerProcess, probe: bytes | None = None):
    """A new client gets the greeting; with ``probe``, a line typed to a ``cat`` child comes back."""
    client = await connect(server.control())
    close_at_end(nursery, client)
    greeting = await client.expect(OFFER)
    assert b"@@@ Welcome to procServ" in greeting
    if probe is not None:
        await client.send(probe + b"\r")
        await client.expect(probe + b"\r\n" + probe + b"\r\n")  # the pty's echo, then cat's copy
    return client


def no_traceback(server: ServerProcess) -> None:
    text = server.read_stderr()
    assert "Traceback" not in text, text[-3000:]


def check_stream(stream: bytes, reference: bytes) -> int:
    """``stream`` is ``reference`` with whole ranges replaced by skip notices naming their size.

    Returns the number of bytes skipped; fails unless every byte is accounted for, in order.
    """
    parts = SKIPPED.split(stream)
    pos = 0
    skipped = 0
    for index, part in enumerate(parts):
        if index % 2:
            pos += int(part)
            skipped += int(part)
            continue
        assert reference[pos : pos + len(part)] == part, f"mismatch in segment {index // 2} at {pos}"
        pos += len(part)
    assert pos == len(reference), f"stream ends at {pos} of {len(reference)}"
    return skipped


def raise_nofile(limit: int) -> None:
    """At least ``limit`` fds for this process and the servers it starts (they inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= limit:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(hard, limit)))  # root may raise the hard limit
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))


async def count_exits(client, n: int) -> None:
    for _ in range(n):
        await client.expect(b"Normal exit status = 0\r\n", timeout=20)


# -- faults: the child ---------------------------------------------------------------------------


async def test_a_crash_loop_of_1000_restarts_leaks_no_fd_memory_or_zombie(nursery):
    d = short_tmpdir()
    log = f"{d}/log"
    async with ServerProcess(["-q", "-w", "--holdoff", "0", "-L", log, "0", "/bin/true"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)

        async def loop_then_stop(n: int) -> tuple[int, int, list[int]]:
            await count_exits(client, n)
            await client.send(b"\x14")  # ^T: auto restart OFF; the child in flight ends the loop
            await client.expect(b"Toggled auto restart to OFF\r\n")
            await client.expect(b"auto restart is disabled\r\n")
            assert await settle(lambda: children_of(server.pid), []) == []
            return fd_count(server.pid), rss_kib(server.pid), zombies_of(server.pid)

        await client.send(b"\x12")  # ^R
        fds0, rss0, zombies0 = await loop_then_stop(100)  # warm up: thread cache, allocator pools
        start = time.monotonic()
        await client.send(b"\x14")  # ^T: ON, and with --holdoff 0 the loop starts again at once
        fds1, rss1, zombies1 = await loop_then_stop(1000)
        elapsed = time.monotonic() - start
        print(f"1000 restarts in {elapsed:.1f} s; fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB")
        assert zombies0 == zombies1 == []
        assert fds1 == fds0
        assert rss1 - rss0 < 2048, f"RSS grew by {rss1 - rss0} KiB over 1000 restarts"
        await still_serves(nursery, server)
        no_traceback(server)
    text = Path(log).read_bytes()
    assert text.count(b"Normal exit status = 0\r\n") == text.count(b"@@@ Restarting child") >= 1100


async def test_a_spawn_that_keeps_failing_backs_off_whatever_the_holdoff(nursery):
    d = short_tmpdir()
    log = f"{d}/log"
    async with ServerProcess(["-q", "--holdoff", "0", "-L", log, "0", "/bin/cat"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"\x14")  # ^T: auto restart OFF
        await client.expect(b"Toggled auto restart to OFF\r\n")
        await client.send(b"\x18")  # ^X: the child goes and stays gone
        await client.expect(b"auto restart is disabled\r\n")
        # No free descriptor below the limit: openpty fails, as on a server out of fds.
        in_use = {int(fd) for fd in os.listdir(f"/proc/{server.pid}/fd")}
        lowest_free = min(set(range(max(in_use) + 2)) - in_use)
        limits = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
        try:
            await client.send(b"\x14")  # ^T: ON, and with --holdoff 0 a start is due at once
            await client.expect(b"could not start the child: Too many open files")
            await trio.sleep(3.5)
        finally:
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, limits)
        tries = Path(log).read_bytes().count(b"@@@ pyprocserv: could not start the child: ")
        # Tries at 0, 1 and 3 s (without the back-off: 78,762 tries in 8 s and 7.6 MB of log).
        assert 2 <= tries <= 4, tries
        assert b"Too many open files; next try in 1 s" in Path(log).read_bytes()
        await client.send(b"\x12")  # ^R: tries at once, and the child runs again
        await client.expect(b"@@@ The PID of new child")
        await still_serves(nursery, server)


# The child records every signal it gets (one line each) and says when it is ready for them.
SIGNAL_RECORDER = """\
import os, signal, sys, time
log = sys.argv[1]
def note(sig, frame):
    with open(log, "a") as f:
        f.write("%d\\n" % sig)
    if sig == signal.SIGHUP:
        os._exit(0)
for sig in (signal.SIGHUP, signal.SIGCONT, signal.SIGTERM):
    signal.signal(sig, note)
open(log + ".ready", "w").close()
while True:
    time.sleep(0.1)
"""


async def wait_for_file(path: str, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not os.path.exists(path):
            await trio.sleep(0.02)


async def test_a_server_killed_with_sigkill_leaves_no_orphan_the_pty_hangup_sends_sighup():
    d = short_tmpdir()
    async with ServerProcess(["-q", "0", PY, "-c", SIGNAL_RECORDER, f"{d}/signals"]) as server:
        await wait_for_file(f"{d}/signals.ready")
        (child,) = children_of(server.pid)
        os.kill(server.pid, signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL
        assert await gone(child), "the child outlived its server"
    # No PR_SET_PDEATHSIG: the kernel's hangup of the pty, whose master died with the server,
    # signals the session leader (our child) with SIGHUP (then SIGCONT).
    assert Path(f"{d}/signals").read_text().splitlines()[0] == str(int(signal.SIGHUP))


async def test_a_server_killed_with_sigkill_takes_a_default_child_and_its_group_along():
    d = short_tmpdir()
    script = f"sleep 1000 & sleep 1000 & touch {d}/ready; wait"
    async with ServerProcess(["-q", "0", "/bin/sh", "-c", script]) as server:
        await wait_for_file(f"{d}/ready")
        (child,) = children_of(server.pid)
        group = [child] + children_of(child)
        assert len(group) == 3
        os.kill(server.pid, signal.SIGKILL)
        await server.wait()
        for pid in group:
            assert await gone(pid), f"{pid} outlived the server"


# A child whose grandchild leaves its process group (setsid) and keeps the pty open.
GRANDCHILD = (
    "setsid sh -c 'echo GC=$$; while :; do {chatter}; sleep 0.05; done' & "
    "sleep 0.3; echo CHILD-EXITS; exit 3"
)


@pytest.mark.parametrize("chatter", ["echo gc-alive", "true"], ids=["chatty", "silent"])
async def test_grandchildren_holding_the_pty_after_the_child_exits_delay_nothing_for_long(nursery, chatter):
    d = short_tmpdir()
    log = f"{d}/log"
    script = GRANDCHILD.format(chatter=chatter)
    grandchildren: list[int] = []
    try:
        async with ServerProcess(["-q", "-w", "--noautorestart", "-L", log, "0", "/bin/sh", "-c", script]) as server:
            client = await connect(server.control())
            close_at_end(nursery, client)
            await client.expect(OFFER)
            for run in range(2):
                await client.send(b"\x12")  # ^R
                text = await client.expect(b"CHILD-EXITS\r\n")
                grandchildren.append(int(re.search(rb"GC=(\d+)", text).group(1)))
                start = time.monotonic()
                await client.expect(b"Normal exit status = 3\r\n", timeout=10)
                # The pty never reports its end: we stop waiting after 0.2 s of quiet, or 2 s at most.
                assert time.monotonic() - start < 4
                await client.expect(END_OF_RUN)
                assert proc_state(grandchildren[-1]) not in (None, "Z")  # it is still there
            await still_serves(nursery, server)
            start = time.monotonic()
        assert time.monotonic() - start < 5  # SIGTERM is not held up either
        assert server.returncode == 0
        no_traceback(server)
    finally:
        for pid in grandchildren:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = Path(log).read_bytes()
    assert text.count(b"CHILD-EXITS\r\n") == 2 and text.count(b"Normal exit status = 3\r\n") == 2
    assert (b"gc-alive\r\n" in text) == (chatter == "echo gc-alive")


# -- faults: the log file ------------------------------------------------------------------------

FULL_NOTICE = b"@@@ pyprocserv: cannot write log file /dev/full: No space left on device\r\n"


async def test_a_log_on_a_full_disk_gives_one_notice_and_the_console_goes_on(nursery):
    async with ServerProcess(["-q", "-w", "--holdoff", "0", "-L", "/dev/full", "0", "/bin/cat"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"\x12")  # ^R: the first console output meets the full disk
        await client.expect(FULL_NOTICE)
        await client.expect(SEPARATOR)  # the child runs: typing reaches it
        for i in range(20):
            line = b"line-%d" % i
            await client.send(line + b"\r")
            await client.expect(line + b"\r\n" + line + b"\r\n")
        await client.send(b"\x18")  # ^X: more messages for the log, no more notices
        await client.expect(b"Restarting child")
        await client.expect(SEPARATOR)
        await still_serves(nursery, server, b"after")
        await client.expect(b"after\r\nafter\r\n")
        assert bytes(client.received).count(b"cannot write log file") == 1
        no_traceback(server)


async def test_a_log_on_a_full_disk_is_reported_to_clients_that_connect_later(nursery):
    # Without -w the child's first output meets the full disk before anybody is connected:
    # a client that connects afterwards must still learn that nothing is being logged.
    async with ServerProcess(["-q", "-L", "/dev/full", "0", "/bin/sh", "-c", "echo started; exec cat"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        text = await client.expect(OFFER)
        text += await client.quiet(0.5)
        await client.send(b"typed\r")
        text += await client.expect(b"typed\r\ntyped\r\n")
        text += server.read_stderr().encode()
        assert b"cannot write log file /dev/full" in text or b"unable to open log file /dev/full" in text, text


async def test_a_removed_log_directory_gives_one_notice_then_logging_resumes(nursery):
    d = short_tmpdir()
    logdir = f"{d}/logs"
    os.mkdir(logdir)
    log = f"{logdir}/log"
    async with ServerProcess(["-q", "-L", log, "0", "/bin/cat"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"one\r")
        await client.expect(b"one\r\none\r\n")
        shutil.rmtree(logdir)
        os.kill(server.pid, signal.SIGHUP)  # logrotate's "reopen": the directory is gone
        await client.expect(b"@@@ pyprocserv: cannot write log file " + log.encode() + b": No such file or directory\r\n")
        for word in (b"two", b"three"):
            await client.send(word + b"\r")
            await client.expect(word + b"\r\n" + word + b"\r\n")
        assert bytes(client.received).count(b"cannot write log file") == 1
        os.mkdir(logdir)
        os.kill(server.pid, signal.SIGHUP)
        await client.send(b"four\r")
        await client.expect(b"@@@ pyprocserv: log file " + log.encode() + b" is written again\r\n")
        await client.expect(b"four\r\nfour\r\n")
        await still_serves(nursery, server, b"five")
        no_traceback(server)
    text = Path(log).read_bytes()
    assert b"four\r\nfour\r\n" in text and b"five\r\nfive\r\n" in text
    assert b"two" not in text and b"three" not in text


# -- faults: clients -----------------------------------------------------------------------------


async def greet_and_leave(address: str) -> None:
    client = await connect(address)
    try:
        await client.expect(OFFER)
    finally:
        await client.aclose()


async def test_1000_connect_disconnect_cycles_leak_no_fd(nursery):
    async with ServerProcess(["-q", "0", "/bin/cat"]) as server:
        await greet_and_leave(server.control())  # warm up
        before = await steady_fd_count(server.pid)
        rss_before = rss_kib(server.pid)

        async def worker(n: int) -> None:
            for _ in range(n):
                await greet_and_leave(server.control())

        start = time.monotonic()
        async with trio.open_nursery() as workers:
            for _ in range(10):
                workers.start_soon(worker, 100)
        elapsed = time.monotonic() - start
        after = await settle(lambda: fd_count(server.pid), before)
        print(f"1000 cycles in {elapsed:.1f} s; fds {before} -> {after}; RSS {rss_before} -> {rss_kib(server.pid)} KiB")
        assert after == before
        await still_serves(nursery, server, b"still")
        no_traceback(server)


async def test_1000_concurrent_clients_all_get_the_output(nursery):
    raise_nofile(4096)  # 1000 sockets here, and the server inherits the limit
    async with ServerProcess(["-q", "0", "/bin/cat"]) as server:
        before = await steady_fd_count(server.pid)
        clients = []

        async def one() -> None:
            client = await connect(server.control())
            clients.append(client)
            await client.expect(OFFER, timeout=30)

        try:
            async with trio.open_nursery() as connecting:
                for _ in range(1000):
                    connecting.start_soon(one)
            assert len(clients) == 1000
            assert fd_count(server.pid) >= before + 1000
            late = await still_serves(nursery, server)
            assert b"@@@ 1000 user(s) and 0 logger(s) connected (plus you)" in bytes(late.received)
            await late.send(b"to-everyone\r")
            async with trio.open_nursery() as reading:
                for client in clients:
                    reading.start_soon(client.expect, b"to-everyone\r\nto-everyone\r\n", 30)
        finally:
            with trio.CancelScope(shield=True):
                for client in clients:
                    await client.aclose()
        assert await settle(lambda: fd_count(server.pid), before + 1) == before + 1  # + the late client
        no_traceback(server)


async def test_clients_that_reset_mid_greeting_disturb_nobody(nursery):
    # A long history makes a long greeting: the server is still sending it when the reset comes.
    script = "seq -f 'history line %g of a long greeting ..........' 2000; while :; do echo tick; sleep 0.01; done"
    async with ServerProcess(["-q", "--history", "2000", "0", "/bin/sh", "-c", script]) as server:
        watcher = await connect(server.control())
        close_at_end(nursery, watcher)
        await watcher.expect(b"tick\r\n")
        before = await steady_fd_count(server.pid)
        address = tcp_address(server.control())
        linger = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # l_onoff=1, l_linger=0: close() sends RST
        for i in range(300):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(address)
            if i % 3 == 1:
                sock.recv(1 + i % 50)  # part of the greeting
            elif i % 3 == 2:
                sock.send(b"\xff\xfd\x01\xff\xfb\x1f")  # starts negotiating, then vanishes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.close()
            if i % 50 == 0:
                await watcher.expect(b"tick\r\n")
        await watcher.expect(b"tick\r\n")
        assert await settle(lambda: fd_count(server.pid), before) == before
        await still_serves(nursery, server)
        no_traceback(server)


async def test_several_clients_typing_megabytes_at_a_child_that_never_reads(nursery):
    # In raw mode the pty keeps what it was given and then blocks (in canonical mode it throws
    # away the excess of an overlong line and takes more, so a "not reading" episode ends).
    code = "import time, tty; tty.setraw(0); print('raw', flush=True); time.sleep(1000)"
    async with ServerProcess(["-q", "-w", "0", PY, "-c", code]) as server:
        typists = [await connect(server.control()) for _ in range(3)]
        close_at_end(nursery, *typists)
        for typist in typists:
            await typist.expect(OFFER)
        await typists[0].send(b"\x12")  # ^R
        for typist in typists:
            await typist.expect(b"raw")
        rss_before = rss_kib(server.pid)
        chunk = b"y" * 65535 + b"\r"
        with trio.fail_after(30):
            async with trio.open_nursery() as typing:
                for typist in typists:

                    async def type_4_mb(typist=typist) -> None:
                        for _ in range(64):
                            await typist.send(chunk)

                    typing.start_soon(type_4_mb)
            for typist in typists:
                await typist.expect(b"bytes of input dropped: the child is not reading\r\n")
        await still_serves(nursery, server)
        for typist in typists:
            # One notice per episode, not one per dropped chunk: an episode ends only when the
            # pty takes more input, and a pty nobody reads takes a few dozen KiB at most.
            await typist.quiet(0.2)
            assert 1 <= bytes(typist.received).count(b"bytes of input dropped") <= 3
        assert rss_kib(server.pid) - rss_before < 8192  # bounded by the 64 KiB input queue, not by 12 MB
        no_traceback(server)
        start = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        assert await server.wait() == 0
        assert time.monotonic() - start < 5


# A child in raw mode (no signals from ^C, no flow control from ^S) that swallows its input and
# prints numbered ticks with the byte count so far.
RAW_SWALLOWER = """\
import os, select, time, tty
tty.setraw(0)
got = 0
tick = 0
next_tick = time.monotonic()
while True:
    if select.select([0], [], [], 0.01)[0]:
        got += len(os.read(0, 65536))
    if time.monotonic() >= next_tick:
        tick += 1
        os.write(1, b"tick %d got %d\\r\\n" % (tick, got))
        next_tick = time.monotonic() + 0.01
"""
TICK = re.compile(rb"tick (\d+) got (\d+)\r\n")

TRUNCATED_IAC = [
    b"\xff",  # IAC at the end of the stream
    b"\xff\xfb",  # WILL without its option
    b"\xff\xfa",  # SB without its option
    b"\xff\xfa\x1f\x00\x50",  # NAWS cut short
    b"\xff\xfa\x18" + b"x" * 5000,  # a subnegotiation that never ends
    b"\xff\xfa\x1f\xff",  # IAC inside SB, then nothing
    b"abc\xff\xfa\x1f\x00\x50\x00\x18\xff",  # everything but the SE
]


DROPPED = b"bytes of input dropped: the child is not reading"


def typed_length(stream: bytes) -> int:
    """How many bytes of ``stream`` a control connection passes on as typed data."""
    codec = TelnetConnection()
    codec.receive_data(stream)
    return sum(len(e.data) for e in codec.events() if isinstance(e, Data))


async def test_random_bytes_and_truncated_telnet_from_one_client_stall_nobody(nursery):
    # The command keys are disabled, so the random bytes cannot kill or toggle the child.
    args = ["-q", "-k", "", "--autorestartcmd", "", "0", PY, "-c", RAW_SWALLOWER]
    async with ServerProcess(args) as server:
        reader = await connect(server.control())
        noisy = await connect(server.control())
        close_at_end(nursery, reader, noisy)
        await reader.expect(OFFER)
        await noisy.expect(OFFER)
        await reader.expect(TICK)  # the child is in raw mode now
        ticks: list[int] = []
        got: list[int] = []
        flood_done = trio.Event()

        rng = random.Random(5)
        blocks = [rng.randbytes(1 << 16) for _ in range(160)]  # 10 MB
        # What the telnet layer hands on to the child (random bytes hold commands, too).
        delivered = typed_length(b"".join(blocks) + b"".join(piece + b"more" for piece in TRUNCATED_IAC))
        delivered += sum(typed_length(piece) for piece in TRUNCATED_IAC)

        async def follow(scope: trio.CancelScope) -> None:
            after = 0
            # 0.2 s of ticks once the flood is over, up to 5 s while input is still on its way
            while after < 20 or (after < 500 and got[-1] < delivered and DROPPED not in noisy_got):
                text = await reader.expect(TICK)
                match = TICK.search(text)
                ticks.append(int(match.group(1)))
                got.append(int(match.group(2)))
                after += flood_done.is_set()
            scope.cancel()

        noisy_got = bytearray()

        async def drain_noisy() -> None:
            while data := await noisy.stream.receive_some(1 << 16):
                noisy_got.extend(data)

        async with trio.open_nursery() as flood:
            flood.start_soon(follow, flood.cancel_scope)
            flood.start_soon(drain_noisy)
            start = time.monotonic()
            for block in blocks:
                await noisy.send(block)
            # truncated sequences: at the end of a chunk (more follows), and at the end of a connection
            for piece in TRUNCATED_IAC:
                await noisy.send(piece)
                await noisy.send(b"more")
                short = await connect(server.control())
                await short.expect(OFFER)
                await short.send(piece)
                await short.aclose()
            elapsed = time.monotonic() - start
            flood_done.set()
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "the reader missed output"
        if got[-1] < delivered:  # what the child could not take was dropped, and the typist told
            assert DROPPED in noisy_got
        print(f"10 MB of random bytes sent in {elapsed:.1f} s; {len(ticks)} ticks; the child got {got[-1]} bytes")
        text = await reader.expect(TICK)
        assert int(TICK.search(text).group(2)) > 0  # the child got (some of) the input
        await still_serves(nursery, server)
        no_traceback(server)


async def test_a_naws_flood_changes_nothing_but_the_window_size(nursery):
    async with ServerProcess(["-q", "0", "/bin/sh"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"\xff\xfd\x01\xff\xfb\x1f")  # DO ECHO, WILL NAWS
        await client.expect(b"\xff\xfd\x1f")  # our DO NAWS
        rng = random.Random(7)
        for _ in range(20):
            sizes = b"".join(
                b"\xff\xfa\x1f" + bytes(rng.randrange(256) for _ in range(4)).replace(b"\xff", b"\xff\xff") + b"\xff\xf0"
                for _ in range(2500)
            )
            await client.send(sizes)  # 50,000 window sizes in all, each a SIGWINCH for the child
        await client.send(b"\xff\xfa\x1f\x00\x84\x00\x32\xff\xf0")  # 132 columns, 50 rows
        await client.send(b"stty size\r")
        await client.expect(b"50 132\r\n", timeout=30)
        await client.send(b"echo alive\r")
        await client.expect(b"alive\r\n")
        await still_serves(nursery, server)
        no_traceback(server)


# -- nothing lost --------------------------------------------------------------------------------

BIG_LINES = 1_000_000  # 101 bytes each: 101 MB
# The child writes numbered lines of printable text and records the SHA-256 of what it wrote.
BIG_CHILD = """\
import hashlib, os, sys
tail = bytes(range(33, 123))
sha = hashlib.sha256()
n = %d
for start in range(0, n, 10000):
    block = b"".join(b"%%09d " %% i + tail + b"\\n" for i in range(start, min(n, start + 10000)))
    sha.update(block)
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
with open(sys.argv[1], "w") as f:
    f.write(sha.hexdigest())
""" % BIG_LINES


def big_output_sha() -> str:
    tail = bytes(range(33, 123))
    sha = hashlib.sha256()
    for start in range(0, BIG_LINES, 10000):
        sha.update(b"".join(b"%09d " % i + tail + b"\n" for i in range(start, min(BIG_LINES, start + 10000))))
    return sha.hexdigest()


async def read_until_end(client, piece: int, pause: float) -> bytes:
    """Everything until the end-of-run line, ``piece`` bytes at a time with ``pause`` between."""
    buf = bytearray()
    while not buf.endswith(END_OF_RUN):
        data = await client.stream.receive_some(piece)
        assert data, "connection closed"
        buf += data
        if pause:
            await trio.sleep(pause)
    return bytes(buf)


async def test_100_mb_reach_the_log_intact_and_every_reader_gets_each_byte_or_the_notice(nursery):
    d = short_tmpdir()
    log = f"{d}/log"
    args = ["-q", "-w", "--noautorestart", "-L", log, "0", PY, "-c", BIG_CHILD, f"{d}/sha"]
    async with ServerProcess(args) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(tcp_address(server.control()))  # never reads
        try:
            fast = await connect(server.control())
            slow = await connect(server.control())
            close_at_end(nursery, fast, slow)
            await fast.expect(OFFER)
            await slow.expect(OFFER)
            got: dict[str, bytes] = {}
            start = time.monotonic()
            async with trio.open_nursery() as readers:

                async def read(name, client, piece, pause):
                    got[name] = await read_until_end(client, piece, pause)

                readers.start_soon(read, "fast", fast, 1 << 20, 0)
                readers.start_soon(read, "slow", slow, 16384, 0.005)
                await fast.send(b"\x12")  # ^R: -w held the start until both readers were there
            elapsed = time.monotonic() - start
        finally:
            stalled.close()
        await still_serves(nursery, server)
        no_traceback(server)
    reference = Path(log).read_bytes()
    body = reference.split(SEPARATOR)[1]
    assert body.endswith(b"\r\n")  # procServ's line end before the exit block
    normalised = body[:-2].replace(b"\r\n", b"\n")  # undo the pty's ONLCR
    child_sha = Path(f"{d}/sha").read_text()
    assert child_sha == big_output_sha()
    assert hashlib.sha256(normalised).hexdigest() == child_sha
    fast_skipped = check_stream(got["fast"], reference)
    slow_skipped = check_stream(got["slow"], reference)
    print(f"100 MB in {elapsed:.1f} s; skipped: fast {fast_skipped}, slow {slow_skipped}")
    shutil.rmtree(d)  # 100 MB of log: not left in /tmp when the test passes


async def test_repeated_seq_runs_lose_no_line(nursery):
    runs = 5  # bench/soak.py does 50
    d = short_tmpdir()
    log = f"{d}/log"
    args = ["-q", "-w", "--holdoff", "0", "-L", log, "0", "/bin/sh", "-c", "seq 1 200000; exit"]
    async with ServerProcess(args) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"\x12")
        await count_exits(client, runs)
        await client.send(b"\x14")  # ^T: OFF after the run in flight
        await client.expect(b"auto restart is disabled\r\n", timeout=30)
        no_traceback(server)
    expected = b"".join(b"%d\r\n" % i for i in range(1, 200001)) + b"\r\n"
    bodies = Path(log).read_bytes().split(SEPARATOR)[1::2]
    assert len(bodies) >= runs
    toggle = messages.toggled(RestartMode.OFF)  # broadcast where the ^T came: maybe inside a run
    for index, body in enumerate(bodies):
        body = body.replace(toggle, b"") if index >= runs else body
        assert body == expected, f"run {index}: {len(body)} bytes instead of {len(expected)}"
    shutil.rmtree(d)


# -- security ------------------------------------------------------------------------------------


async def test_a_daemon_child_holds_no_listener_client_socket_log_or_pipe_fd(nursery):
    d = short_tmpdir()
    server = ServerProcess(
        ["-q", "-L", f"{d}/log", "-l", "0", "-P", "0", "-P", f"unix:{d}/ctl", "/bin/sleep", "1000"],
        foreground=False,
    )
    async with server:
        try:
            clients = [await connect(endpoint) for endpoint in server.endpoints]
            close_at_end(nursery, *clients)
            for client in clients:
                await client.expect(OFFER)
            (child,) = children_of(server.pid)
            fds = {fd: os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")}
            assert sorted(fds) == ["0", "1", "2"], fds
            assert len(set(fds.values())) == 1 and fds["0"].startswith("/dev/pts/"), fds
        finally:
            os.kill(server.pid, signal.SIGTERM)
            assert await gone(server.pid)


async def test_a_unix_socket_gets_the_requested_owner():
    d = short_tmpdir()
    nobody = pwd.getpwnam("nobody")
    spec = f"unix:nobody::0600:{d}/ctl"
    if os.geteuid() == 0:
        async with ServerProcess([spec, "/bin/cat"]):
            st_ = os.stat(f"{d}/ctl")
            assert (st_.st_uid, st_.st_gid, stat.S_IMODE(st_.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o600)
        assert not os.path.exists(f"{d}/ctl")
    else:  # only root may give a socket away: then the start fails, with the reason
        result = subprocess.run(
            [PY, "-m", "pyprocserv", "-f", "-q", spec, "/bin/cat"], capture_output=True, text=True, timeout=20,
            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
        )
        assert result.returncode != 0 and "Operation not permitted" in result.stderr
        assert "Traceback" not in result.stderr and not os.path.exists(f"{d}/ctl")


# -- malformed option values ---------------------------------------------------------------------

_odd_values = st.one_of(
    st.sampled_from(
        ["", " ", "0", "-0", "-1", "1e400", "nan", "inf", "-inf", "0x10", "1_000", "٣", "²", " 5 ", "9" * 40,
         "2.5", "1e308", "TERM", "SIGKILL", "sigterm", "0", "99", "-15", "^", "^^", "^A", "^a", "^]", "%", "%Q",
         "%c%c%c%c%c%c%c%c%c%c", "\udcff", "\udcff%H", "a\tb", "$(touch x)", "`id`", "unlimited", "infinity"]
    ),
    st.text(max_size=8),
    st.binary(max_size=8).map(os.fsdecode),
)
_value_options = st.sampled_from(
    ["--holdoff", "-G", "--history", "--coresize", "--killsig", "-k", "-x", "--autorestartcmd", "-i", "-n",
     "--timefmt", "--logstamp=", "-c", "--client-budget"]
)
_flags = st.lists(st.sampled_from(["-w", "--noautorestart", "-o", "-q", "--allow", "--restrict"]), max_size=2)


async def _run_with_a_fake_child(config) -> None:
    """Greeting, a child's output, typing, an exit and a shutdown, with these options."""
    spawner = FakeSpawner()
    server = ProcessServer(config, spawn=spawner, bound_endpoints=[])
    with trio.fail_after(10_000):  # virtual seconds: a hang shows as TooSlowError
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            observer = attach(nursery, server)
            typist = attach(nursery, server)  # its keys may log it out or kill the child
            await observer.expect(OFFER)
            await typist.expect(OFFER)
            server.start()
            child = await spawner.wait_for(1)
            child.say(b"some output\n\xff\x00 more")
            await typist.send(b"typed\r\x03\x18\x14\x12 \x02\x04^]")
            child.exit(3)
            await observer.expect(b"@@@ Received a sigChild for process %d." % child.pid)
            server.shutdown()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_value_options, _odd_values), min_size=1, max_size=3), _flags)
def test_malformed_option_values_end_in_a_message_or_a_working_server(options, flags):
    argv = ["pyprocserv", "-f", *flags]
    for option, value in options:
        argv += [option + value] if option.endswith("=") else [option, value]
    argv += ["0", "/bin/true"]
    try:
        parsed = read_command_line(argv, environ={}, cwd="/")
        problem = _check_owners(parsed) or check_command(parsed)
    except CliExit as error:
        assert error.code in (0, 1) and (error.stdout or error.stderr)
        assert "Traceback" not in error.stderr
        return
    if problem:
        assert isinstance(problem, str) and problem
        return
    # No files and no standard output from the run in this process: only the console.
    config = dataclasses.replace(parsed.config, logfile=None, info_file=None, echo_to_stdout=False)
    trio.run(_run_with_a_fake_child, config, clock=trio.testing.MockClock(autojump_threshold=0))


# Values that pass the parser and meet the real system: a traceback here is a bug.
REAL_RUNS = [
    ["--coresize", "99999999999999999999999"],
    ["--coresize", "18446744073709551615"],
    ["-I", "/nonexistent/dir/info"],
    ["--logstamp=\udcff", "-L", "log"],
    ["--logstamp=%Q%", "-L", "log"],
    ["--timefmt", "\udcff%"],
    ["-n", "\udcff$(touch x)"],
    ["--holdoff", "1e308"],
    ["-G", "1e308", "--killsig", "TERM"],
    ["--history", "99999999999999999999"],
    ["--killsig", "0"],
    ["-k", "\udcff", "-x", "", "-i", "^"],
    ["-p", "/nonexistent/dir/pid"],
    ["-L", "/nonexistent/dir/log"],
    ["-c", "/nonexistent/dir"],
    ["-e", "/nonexistent/program"],
    ["-P", "unix:/tmp/" + "x" * 120],
    ["-l", "unix:@"],
]


@pytest.mark.parametrize("args", REAL_RUNS, ids=lambda args: " ".join(args)[:40].encode("ascii", "replace").decode())
def test_malformed_option_values_on_the_real_command_never_end_in_a_traceback(args):
    d = short_tmpdir()
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [PY, "-m", "pyprocserv", "-f", "-q", "--oneshot", *args, "0", "/bin/true"],
        capture_output=True, cwd=d, env=env, timeout=30, stdin=subprocess.DEVNULL,
    )
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr[-2000:]
    assert result.returncode in (0, 1), (result.returncode, stderr)
    if result.returncode:
        assert stderr.strip(), "a failure needs a message"
    assert set(os.listdir(d)) <= {"log"}, "nothing left behind but the log asked for"


# -- the telnet codec and the keys, one behind the other, as a session uses them ------------------


_telnet_pieces = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([b"\xff", b"\xff\xff", b"\xff\xf0", b"\xff\xfa", b"\xff\xfa\x1f", b"\xff\xfb\x1f",
                     b"\xff\xfd\x01", b"\xff\xfe\x01", b"\xff\xfc\x22", b"\xff\xf6", b"\r\x00", b"\x18\x14\x12\x11"]),
    st.binary(min_size=4, max_size=4).map(lambda size: b"\xff\xfa\x1f" + size + b"\xff\xf0"),
)
_keymaps = st.builds(
    KeyMap,
    kill=st.integers(0, 255),
    toggle=st.integers(0, 255),
    logout=st.integers(0, 255),
    ignore=st.one_of(st.none(), st.binary(max_size=4)),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_keymaps, st.lists(st.lists(_telnet_pieces, max_size=8).map(b"".join), max_size=6), st.booleans())
def test_any_input_through_the_codec_and_the_key_map_never_raises(keys, chunks, running):
    conn = TelnetConnection()
    conn.initiate()
    for chunk in chunks:
        conn.receive_data(chunk)
        reply = conn.data_to_send()
        assert len(reply) % 3 == 0 and reply[::3] == b"\xff" * (len(reply) // 3)
        for event in conn.events():
            if isinstance(event, Data):
                _, to_child = keys.scan(event.data, running)
                assert to_child == bytes(b for b in event.data if b not in keys.dropped)
            elif isinstance(event, WindowSize):
                assert 0 <= event.columns < 65536 and 0 <= event.rows < 65536


# -- the soak script, short ----------------------------------------------------------------------


def test_the_soak_script_passes_in_its_short_mode():
    result = subprocess.run(
        [PY, os.path.join(ROOT, "bench", "soak.py"), "--short"],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "SOAK PASSED" in result.stdout
