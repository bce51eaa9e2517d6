#!/usr/bin/env python3
"""Soak test for pyprocserv (issue #5): long, run by hand, and reported in the README.

    python bench/soak.py --minutes 30       # the run reported in the README
    python bench/soak.py --short            # about 30 s: what CI runs (tests/test_reliability.py)

For the whole duration, at once:
* server CRASH runs a child in a crash loop (``--holdoff 0``, ``/bin/sh -c 'echo crash; exit 1'``);
* server STREAM runs a child that writes numbered lines (about 2 MB/s) for a few seconds, exits and
  is restarted; a reading client, a log-port client, a slow client and a stalled client are
  attached all along;
* churners connect and disconnect continuously on both servers: greet and leave, type a line
  (CRASH only: typing would echo into STREAM's checked output), reset mid-greeting, negotiate
  telnet options and flood window sizes;
* CRASH also serves its PVs (``--pv-prefix``): CA monitor clients connect, subscribe HEARTBEAT,
  IOCOUT, STATUS and PID, and leave (some with a reset) all along, and a CA fuzzer sends random
  messages (headers with random command ids, channel ids and sizes, truncated and garbage
  bytes, oversized announcements, ids never created) over TCP and UDP;
* server SEQ runs ``seq 1 200000; exit`` again and again (50 runs; 3 with ``--short``);
* a worker process feeds at least 10^6 random inputs (10^5 with ``--short``) through the telnet
  codec and the key map (``pyprocserv._core.telnet``, ``pyprocserv._core.keys``) and checks every result.

At the start (after a warm-up) and at the end, each server is quiesced (^T: auto restart OFF, the
child leaves) and its fd count, RSS and zombie children are measured with the same clients
connected. The end checks: no fd growth, bounded RSS growth, no zombie, every STREAM run in the
log byte for byte, every reader's stream equal to the log except for ranges announced by the
slow-client notice, every SEQ run complete, no traceback on any server's stderr, an orderly exit
on SIGTERM, and no exception anywhere; CRASH's CA server still answers at the end, and no CA
monitor client was refused or cut off by anything but its own leaving. Figures go to standard output; the exit code is 0 only when
every check passed.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the support layer that tests and bench share
from support.client import OFFER, Client, connect, tcp_address  # noqa: E402
from support.launch import ServerProcess, remove_short_tmpdirs  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.proc import children_of, fd_count, proc_state, rss_kib  # noqa: E402

PY = sys.executable
SEPARATOR = b"@@@ @@@ @@@ @@@ @@@\r\n"
END_OF_RUN = b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n"
SKIPPED = re.compile(rb"\r\n@@@ pyprocserv: (\d+) bytes of output skipped: this client could not keep up\r\n")

# Growth allowed between the start and the end measurement.
FD_SLACK = 0
RSS_SLACK_KIB = 16 * 1024

# The STREAM child: numbered lines of printable text at about `rate` bytes/s for `seconds`.
STREAMER = """\
import os, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
tail = bytes(range(33, 123))
i = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    block = b"".join(b"%09d " % n + tail + b"\\n" for n in range(i, i + 200))
    i += 200
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
    time.sleep(max(0.0, start + i * 101 / rate - time.monotonic()))
os.write(1, b"END %d\\n" % i)
"""


def streamer_output(lines: int) -> bytes:
    tail = bytes(range(33, 123))
    return b"".join(b"%09d " % n + tail + b"\n" for n in range(lines)) + b"END %d\n" % lines


# -- measuring a server -----------------------------------------------------------------------------


def zombies_of(pid: int) -> int:
    return sum(1 for child in children_of(pid) if proc_state(child) == "Z")


# -- a reader that records to a file -----------------------------------------------------------------


class Recording:
    """What a client receives after its greeting, written to a file instead of kept in memory
    (a long soak records gigabytes); ``total`` counts the greeting too."""

    def __init__(self, client: Client, path: str) -> None:
        assert client.pos == len(client.received)  # the greeting is consumed, nothing else came
        self.client = client
        self.path = path
        self.file = open(path, "wb")
        self.total = len(client.received)

    async def read(self, size: int = 1 << 16) -> None:
        data = await self.client.stream.receive_some(size)
        if not data:
            raise EOFError("connection closed")
        self.file.write(data)
        self.total += len(data)


# -- a server ---------------------------------------------------------------------------------------


STARTED: list["Server"] = []  # every server this run started: none may outlive it
WORKERS: list[subprocess.Popen] = []


class Server(ServerProcess):
    """A soak server: the support layer's ``ServerProcess`` with its log, info and stderr in the
    work directory, a controller client connected all along, and the soak's measurements."""

    def __init__(self, name: str, args: list[str], workdir: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = os.path.join(workdir, f"{name}.log")
        super().__init__(["-q", "-L", self.log, *args], env={**os.environ, **(env or {})}, cwd=workdir)
        self.info = os.path.join(workdir, f"{name}.info")
        self.stdout = os.devnull
        self.stderr = os.path.join(workdir, f"{name}.stderr")
        self.controller: Client | None = None
        self.log_port: str | None = None
        self.measures: dict[str, dict[str, int]] = {}

    async def start(self) -> None:
        STARTED.append(self)
        await self.__aenter__()
        self.log_port = self.endpoints[0] if len(self.endpoints) > 1 else None
        self.controller = await connect(self.control(), self.name)
        await self.controller.expect(OFFER)

    async def quiesce(self) -> None:
        """^T: auto restart OFF; returns once the child has left and been reaped."""
        assert self.controller is not None
        await self.controller.send(b"\x14")
        await self.controller.expect(b"Toggled auto restart to OFF\r\n")
        await self.controller.expect(b"auto restart is disabled\r\n", timeout=60)
        with trio.fail_after(10):
            while children_of(self.pid):
                await trio.sleep(0.05)

    async def resume(self) -> None:
        assert self.controller is not None
        await self.controller.send(b"\x14")  # ON again; with --holdoff 0 the child starts at once
        await self.controller.expect(b"Toggled auto restart to ON\r\n")

    async def measure(self, label: str) -> dict[str, int]:
        last, same = fd_count(self.pid), 0
        while same < 5:  # sockets of clients that just left close a moment later
            await trio.sleep(0.05)
            now = fd_count(self.pid)
            same = same + 1 if now == last else 0
            last = now
        self.measures[label] = {"fds": last, "rss_kib": rss_kib(self.pid), "zombies": zombies_of(self.pid)}
        return self.measures[label]

    async def stop(self) -> int:
        """SIGTERM; the exit code (an AssertionError when it does not exit within 15 s)."""
        assert self.process is not None
        if self.controller is not None:
            await self.controller.aclose()
        await self.__aexit__(None, None, None)
        return self.process.returncode


# -- checks -----------------------------------------------------------------------------------------


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.items.append(what)


def _mapped(f: BinaryIO) -> mmap.mmap | bytes:
    size = os.fstat(f.fileno()).st_size
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""


def _same(a: mmap.mmap | bytes, a_start: int, b: mmap.mmap | bytes, b_start: int, length: int) -> bool:
    block = 8 << 20
    for offset in range(0, length, block):
        n = min(block, length - offset)
        if a[a_start + offset : a_start + offset + n] != b[b_start + offset : b_start + offset + n]:
            return False
    return True


def check_stream(stream_path: str, reference_path: str) -> tuple[bool, int, str]:
    """The recorded stream is the reference (the log) with whole ranges replaced by skip notices
    naming their size. Files are compared through mmap: a long soak records gigabytes."""
    with open(stream_path, "rb") as fs, open(reference_path, "rb") as fr:
        stream, reference = _mapped(fs), _mapped(fr)
        pos = skipped = start = 0
        segments = [(m.start(), m.end(), int(m.group(1))) for m in SKIPPED.finditer(stream)]
        for index, (end, after, missed) in enumerate(segments + [(len(stream), len(stream), 0)]):
            length = end - start
            if pos + length > len(reference) or not _same(stream, start, reference, pos, length):
                return False, skipped, f"segment {index} differs from the log at offset {pos}"
            pos += length + missed
            skipped += missed
            start = after
        if pos != len(reference):
            return False, skipped, f"ends at {pos} of {len(reference)}"
    return True, skipped, ""


TOGGLED = re.compile(rb"\r\n@@@ Toggled auto restart to (?:ON|OFF)\r\n")


def run_bodies(path: str) -> Iterator[bytes]:
    """Each child run's output in the log, between the start and the exit separators.

    The ^T messages of the measurements may fall inside a run: they are taken out. The log is
    read through mmap, one run at a time.
    """
    with open(path, "rb") as f:
        log = _mapped(f)
        start = log.find(SEPARATOR)
        while start >= 0:
            end = log.find(SEPARATOR, start + len(SEPARATOR))
            if end < 0:
                return
            yield TOGGLED.sub(b"", log[start + len(SEPARATOR) : end - 2])
            start = log.find(SEPARATOR, end + len(SEPARATOR))


def count_in_file(path: str, pattern: bytes) -> int:
    with open(path, "rb") as f:
        log = _mapped(f)
        count, at = 0, log.find(pattern)
        while at >= 0:
            count += 1
            at = log.find(pattern, at + len(pattern))
        return count


# -- the fuzz worker (a process of its own: CPU-bound, it must not starve the clients) ---------------


def fuzz(count: int, seed: int) -> dict:
    from pyprocserv._core.keys import Key, KeyMap, parse_char, parse_ignore
    from pyprocserv._core.telnet import (
        Command, Data, OptionChanged, ProtocolError, Subnegotiation, TelnetConnection, WindowSize,
    )

    rng = random.Random(seed)
    specials = bytes([0xFF, 0xFA, 0xF0, 0xFB, 0xFC, 0xFD, 0xFE, 0xF6, 0x1F, 0x22, 0x01, 0x03, 0x18, 0x00,
                      0x0D, 0x0A, 0x11, 0x12, 0x14, 0x04, 0x5E, 0x5D])
    verbs = (0xFB, 0xFC, 0xFD, 0xFE)
    options = (0x01, 0x03, 0x18, 0x1F, 0x22, 0x00, 0xFF, 0x27)
    keymaps = [KeyMap(), KeyMap(ignore=parse_ignore("^D^C^]"), logout=parse_char("^D")), KeyMap(kill=0, toggle=0)]
    for _ in range(60):
        keymaps.append(KeyMap(kill=rng.randrange(256), toggle=rng.randrange(256), logout=rng.randrange(256),
                              ignore=rng.choice([None, rng.randbytes(rng.randrange(5))])))
    kinds = (Data, Command, OptionChanged, WindowSize, Subnegotiation, ProtocolError)

    def piece() -> bytes:
        r = rng.random()
        if r < 0.25:
            return rng.randbytes(rng.randrange(1, 24))
        if r < 0.45:
            return bytes((0xFF, rng.choice(verbs), rng.choice(options)))
        if r < 0.6:
            payload = rng.randbytes(rng.randrange(0, 8))
            end = rng.choice([b"\xff\xf0", b"", b"\xff", b"\xff\xf1", b"\xff\xff"])
            return b"\xff\xfa" + bytes([rng.choice(options)]) + payload + end
        if r < 0.7:
            return b"\xff\xfa\x1f" + rng.randbytes(4).replace(b"\xff", b"\xff\xff") + b"\xff\xf0"
        if r < 0.8:
            return bytes([0xFF, rng.randrange(256)])
        return bytes(rng.choice(specials) for _ in range(rng.randrange(1, 12)))

    done = 0
    errors: list[str] = []
    conn = TelnetConnection()
    conn.initiate()
    start = time.monotonic()
    while done < count:
        if done % 200 == 0:
            conn = TelnetConnection()
            conn.initiate()
        data = b"".join(piece() for _ in range(rng.randrange(1, 6)))
        keys = rng.choice(keymaps)
        running = rng.random() < 0.7
        try:
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(3)))
            before = (conn._state, dict(conn._us), dict(conn._him)) if done % 97 == 0 else None
            position = 0
            events = []
            for cut in cuts + [len(data)]:
                conn.receive_data(data[position:cut])
                position = cut
            events = conn.events()
            reply = conn.data_to_send()
            if len(reply) % 3 or reply[::3] != b"\xff" * (len(reply) // 3):
                raise AssertionError(f"malformed reply {reply!r}")
            for event in events:
                if not isinstance(event, kinds):
                    raise AssertionError(f"unknown event {event!r}")
                if isinstance(event, Data):
                    found, to_child = keys.scan(event.data, running)
                    if to_child != bytes(b for b in event.data if b not in keys.dropped):
                        raise AssertionError("key map let a dropped byte through")
                    if not all(isinstance(k, Key) for k in found):
                        raise AssertionError("unknown key")
                elif isinstance(event, WindowSize):
                    if not (0 <= event.columns < 65536 and 0 <= event.rows < 65536):
                        raise AssertionError(f"bad size {event!r}")
            if before is not None:
                # chunk boundaries must not matter: the same bytes in one piece, from a fresh codec
                whole, split = TelnetConnection(), TelnetConnection()
                whole.initiate()
                split.initiate()
                whole.receive_data(data)
                for byte in data:
                    split.receive_data(bytes([byte]))
                if whole.events() != split.events() or whole.data_to_send() != split.data_to_send():
                    raise AssertionError(f"chunking changed the result for {data!r}")
            # the option parsers on random specs
            spec = rng.randbytes(rng.randrange(4))
            parse_char(spec)
            parse_ignore(spec)
        except Exception:
            if len(errors) < 5:
                errors.append(f"input {data!r}: {traceback.format_exc()}")
            else:
                errors.append("...")
        done += 1
    return {"inputs": done, "errors": errors, "seconds": round(time.monotonic() - start, 1)}


# -- the soak ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    connections: int = 0
    resets: int = 0
    typed_lines: int = 0
    naws_floods: int = 0
    bytes_received: int = 0
    churn_errors: list[str] = field(default_factory=list)


async def churn(servers: list[Server], figures: Figures, stop: trio.Event, paused: list[bool], seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        if paused[0]:
            await trio.sleep(0.05)
            continue
        server = rng.choice(servers)
        action = rng.random()
        try:
            if action < 0.15:  # reset mid-greeting
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    sock.connect(tcp_address(server.control()))
                except BlockingIOError:
                    pass
                await trio.lowlevel.wait_writable(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
                figures.resets += 1
                figures.connections += 1
                continue
            client = await connect(server.control())
            figures.connections += 1
            try:
                await client.expect(OFFER, timeout=30)
                if action < 0.3 and server.name == "crash":
                    await client.send(b"typed line %d\r" % figures.typed_lines)
                    figures.typed_lines += 1
                elif action < 0.4:
                    sizes = b"".join(
                        b"\xff\xfa\x1f" + rng.randbytes(4).replace(b"\xff", b"\xff\xff") + b"\xff\xf0"
                        for _ in range(rng.randrange(1, 200))
                    )
                    await client.send(b"\xff\xfd\x01\xff\xfb\x1f" + sizes)
                    figures.naws_floods += 1
                elif action < 0.5:
                    await client.quiet(seconds=1.0, max_time=rng.random() * 0.3)  # reads until the time is up
                    if client.eof:
                        raise EOFError("connection closed")
            finally:
                figures.bytes_received += len(client.received)
                await client.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError, trio.TooSlowError) as exc:
            figures.churn_errors.append(f"{server.name}: {exc!r}")
        await trio.sleep(rng.random() * 0.01)


# -- Channel Access: monitor clients coming and going, and a fuzzer -------------------------------

CA_PREFIX = "SOAK:"
CA_HELLO = struct.pack(">HHHHII", 0, 0, 0, 13, 0, 0)  # VERSION, priority 0, protocol 13


def ca_env(port: int) -> dict[str, str]:
    return {"EPICS_CA_SERVER_PORT": str(port), "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_ADDR_LIST": "127.255.255.255"}


@dataclass
class CAFigures:
    monitors: int = 0  # monitor clients that came and went
    updates: int = 0  # monitor updates they received
    fuzz_messages: int = 0
    fuzz_circuits: int = 0
    fuzz_datagrams: int = 0
    errors: list[str] = field(default_factory=list)


async def ca_monitors(port: int, figures: CAFigures, stop: trio.Event, paused: list[bool], seed: int) -> None:
    """Connect, subscribe, take a few updates (or none), leave; again and again."""
    import caproto as ca

    rng = random.Random(seed)
    while not stop.is_set():
        if paused[0]:
            await trio.sleep(0.05)
            continue
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                circuit = ca.VirtualCircuit(our_role=ca.CLIENT, address=("127.0.0.1", port), priority=0)
                channels = [ca.ClientChannel(CA_PREFIX + name, circuit) for name in ("HEARTBEAT", "IOCOUT", "STATUS", "PID")]

                async def send(*commands) -> None:  # type: ignore[no-untyped-def]
                    await stream.send_all(b"".join(circuit.send(*commands)))

                async def receive() -> list:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise EOFError("the CA server closed the circuit")
                    commands, _ = circuit.recv(data)
                    for command in commands:
                        circuit.process_command(command)
                    return list(commands)

                await send(ca.VersionRequest(priority=0, version=ca.DEFAULT_PROTOCOL_VERSION),
                           ca.HostNameRequest("soak"), ca.ClientNameRequest("soak"),
                           *(channel.create() for channel in channels))
                with trio.fail_after(30):
                    while any(channel.states[ca.CLIENT] is not ca.CONNECTED for channel in channels):
                        await receive()
                await send(*(channel.subscribe() for channel in channels))
                with trio.move_on_after(rng.random() * 0.5):
                    while True:
                        figures.updates += sum(isinstance(c, ca.EventAddResponse) for c in await receive())
                if rng.random() < 0.5:
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                await stream.aclose()
            figures.monitors += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError, trio.TooSlowError) as exc:
            figures.errors.append(f"CA monitor: {exc!r}")
        await trio.sleep(rng.random() * 0.02)


def ca_fuzz_message(rng: random.Random) -> bytes:
    """One hostile or broken CA message: mostly well-formed headers with nonsense in them."""
    r = rng.random()
    if r < 0.1:
        return rng.randbytes(rng.randrange(1, 48))  # garbage
    if r < 0.2:  # an oversized announcement (extended header), with a little of its payload
        return struct.pack(">HHHHIIII", rng.choice([1, 4, 18, 19, 23]), 0xFFFF, 0, 0, 1, 1,
                           rng.randrange(20000, 1 << 32), 0) + rng.randbytes(rng.randrange(64))
    if r < 0.3:  # a channel that exists, so later ids may hit it
        name = (CA_PREFIX + rng.choice(["STATUS", "PID", "IOCOUT", "SHOWOUT", "HEARTBEAT", "NOSUCH"])).encode() + b"\0"
        name += bytes(-len(name) % 8)
        return struct.pack(">HHHHII", 18, len(name), 0, 0, rng.randrange(8), 13) + name
    command = rng.choice([0, 1, 2, 4, 12, 15, 18, 19, 20, 21, 23, 27, rng.randrange(1 << 16)])
    payload = rng.randbytes(rng.choice([0, 8, 16, rng.randrange(64)]))
    payload += bytes(-len(payload) % 8)
    data_type = rng.choice([0, 3, 5, 6, 14, 20, 34, rng.randrange(1 << 16)])
    ids = [rng.choice([0, 1, 2, 3, 999, rng.randrange(1 << 32)]) for _ in range(2)]
    message = struct.pack(">HHHHII", command, len(payload), data_type, rng.randrange(4), *ids) + payload
    return message[: rng.randrange(1, len(message))] if rng.random() < 0.1 else message


async def ca_fuzz(port: int, figures: CAFigures, stop: trio.Event, paused: list[bool], seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        if paused[0]:
            await trio.sleep(0.05)
            continue
        messages = [ca_fuzz_message(rng) for _ in range(rng.randrange(1, 12))]
        data = (CA_HELLO if rng.random() < 0.8 else b"") + b"".join(messages)
        figures.fuzz_messages += len(messages)
        if rng.random() < 0.2:
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                await udp.sendto(data[:1400], ("127.0.0.1", port))
            figures.fuzz_datagrams += 1
            continue
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError as exc:
            figures.errors.append(f"CA fuzz connect: {exc!r}")  # the server must always accept
            await trio.sleep(0.1)
            continue
        figures.fuzz_circuits += 1
        try:
            await stream.send_all(data)
            with trio.move_on_after(rng.random() * 0.05):
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server closed a circuit it would not serve: what it should do
        finally:
            if rng.random() < 0.5:
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        await trio.sleep(rng.random() * 0.01)


async def ca_answers(port: int) -> bool:
    """The CA server still answers a VERSION message on a new circuit."""
    with trio.move_on_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(CA_HELLO)
            return len(await stream.receive_some(16)) > 0
        finally:
            await stream.aclose()
    return False


async def read_all(client: Recording, piece: int = 1 << 20, pause: float = 0.0) -> None:
    while True:
        await client.read(piece)
        if pause:
            await trio.sleep(pause)


async def read_until_idle(client: Recording, idle: float = 2.0, timeout: float = 120) -> None:
    with trio.fail_after(timeout):
        while True:
            with trio.move_on_after(idle):
                await client.read()
                continue
            return


async def sample(servers: list[Server], every: float, series: list[dict]) -> None:
    """fds, RSS and zombie children of each server, every ``every`` seconds (while busy)."""
    start = time.monotonic()
    while True:
        point: dict = {"t": round(time.monotonic() - start, 1)}
        for server in servers:
            point[server.name] = {"fds": fd_count(server.pid), "rss_kib": rss_kib(server.pid),
                                  "zombies": zombies_of(server.pid)}
        series.append(point)
        await trio.sleep(every)


async def seq_runs(workdir: str, runs: int, result: dict) -> None:
    seq = Server("seq", ["-w", "--holdoff", "0", "0", "/bin/sh", "-c", "seq 1 200000; exit"], workdir)
    await seq.start()
    assert seq.controller is not None
    await seq.controller.send(b"\x12")
    for _ in range(runs):
        await seq.controller.expect(b"Normal exit status = 0\r\n", timeout=120)
    await seq.quiesce()
    expected = b"".join(b"%d\r\n" % i for i in range(1, 200001))
    result["runs"] = result["complete"] = 0
    for body in run_bodies(seq.log):
        result["runs"] += 1
        result["complete"] += body == expected
    result["traceback"] = "Traceback" in seq.read_stderr()
    result["exit"] = await seq.stop()


async def soak(args: argparse.Namespace) -> tuple[dict, list[str]]:
    failures = Failures()
    workdir = tempfile.mkdtemp(prefix="pps-soak-", dir="/tmp")
    duration = args.minutes * 60
    warmup = min(30.0, max(3.0, duration / 10))
    started = time.monotonic()

    fuzz_process = subprocess.Popen(
        [PY, __file__, "--fuzz-worker", str(args.fuzz_inputs), "--seed", str(args.seed)],
        stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    WORKERS.append(fuzz_process)
    ca_port = free_port(udp=True)  # a CA server port is both TCP and UDP
    crash = Server("crash", ["--holdoff", "0", "--pv-prefix", CA_PREFIX, "0", "/bin/sh", "-c", "echo crash; exit 1"],
                   workdir, env=ca_env(ca_port))
    # The stalled client holds up to the client budget for as long as it stays: 8M (not the
    # default 64M) keeps that within the RSS check's slack.
    stream = Server(
        "stream", ["-w", "--holdoff", "0", "--client-budget", "8M", "-l", "0", "0",
                   PY, "-c", STREAMER, str(args.rate), str(args.run_seconds)],
        workdir,
    )
    figures = Figures()
    ca_figures = CAFigures()
    seq_result: dict = {}
    stop = trio.Event()
    paused = [False]
    await crash.start()
    await stream.start()
    assert stream.controller is not None and stream.log_port is not None

    clients = {"reader": await connect(stream.control()), "log client": await connect(stream.log_port),
               "slow client": await connect(stream.control())}
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(tcp_address(stream.control()))  # never reads
    recorded: dict[str, Recording] = {}
    for name, client in clients.items():
        await client.expect(OFFER)
        # Recording asserts that nothing came after the greeting: nothing was broadcast yet (-w)
        recorded[name] = Recording(client, os.path.join(workdir, name.replace(" ", "-") + ".stream"))
    reader, logger, slow = recorded.values()
    await stream.controller.send(b"\x12")  # ^R: every reader was there before the first byte
    readers = trio.CancelScope()

    async def run_readers() -> None:
        with readers:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, reader)
                nursery.start_soon(read_all, logger)
                nursery.start_soon(read_all, slow, 4096, 0.02)

    series: list[dict] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_readers)
            nursery.start_soon(seq_runs, workdir, args.seq_runs, seq_result)
            nursery.start_soon(sample, [crash, stream], max(1.0, duration / 60), series)
            for n in range(args.churners):
                nursery.start_soon(churn, [crash, stream], figures, stop, paused, args.seed + n)
            for n in range(args.ca_churners):
                nursery.start_soon(ca_monitors, ca_port, ca_figures, stop, paused, args.seed + 100 + n)
            for n in range(args.ca_fuzzers):
                nursery.start_soon(ca_fuzz, ca_port, ca_figures, stop, paused, args.seed + 200 + n)

            await trio.sleep(warmup)
            paused[0] = True
            await trio.sleep(0.5)
            for server in (crash, stream):
                await server.quiesce()
                await server.measure("start")
                await server.resume()
            paused[0] = False

            await trio.sleep(max(0.0, started + duration - time.monotonic()))

            paused[0] = True
            await trio.sleep(0.5)
            for server in (crash, stream):
                await server.quiesce()
                await server.measure("end")
            stop.set()
            readers.cancel()
            # the readers take what is still queued for them, until they have been idle for a while
            async with trio.open_nursery() as draining:
                for client in (reader, logger, slow):
                    draining.start_soon(read_until_idle, client)
            # the seq runs end on their own; then the sampler is the only task left
            while len(nursery.child_tasks) > 1:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    finally:
        stalled.close()
        for client in clients.values():
            await client.aclose()
        for recording in recorded.values():
            recording.file.close()

    # -- the checks --
    complete = runs = lines = 0
    expected: dict[int, bytes] = {}
    for body in run_bodies(stream.log):
        runs += 1
        normal = body.replace(b"\r\n", b"\n")
        match = re.search(rb"END (\d+)\n$", normal)
        if match:
            count = int(match.group(1))
            if count not in expected:
                expected[count] = streamer_output(count)
            if normal == expected[count]:
                complete += 1
                lines += count
    failures.check(runs >= 2 and complete == runs, f"stream runs intact: {complete} of {runs}")
    stream_checks = {}
    for name, recording in recorded.items():
        ok, skipped, why = check_stream(recording.path, stream.log)
        failures.check(ok, f"{name}'s stream equals the log but for announced skips: {why}")
        stream_checks[name] = {"bytes": recording.total, "skipped": skipped}
    for server in (crash, stream):
        start_m, end_m = server.measures["start"], server.measures["end"]
        failures.check(end_m["fds"] <= start_m["fds"] + FD_SLACK, f"{server.name}: fds {start_m['fds']} -> {end_m['fds']}")
        failures.check(end_m["rss_kib"] <= start_m["rss_kib"] + RSS_SLACK_KIB,
                       f"{server.name}: RSS {start_m['rss_kib']} -> {end_m['rss_kib']} KiB")
        failures.check(start_m["zombies"] == end_m["zombies"] == 0, f"{server.name}: zombies {start_m} {end_m}")
    failures.check(await ca_answers(ca_port), "crash: the CA server answers at the end")
    failures.check(not ca_figures.errors, f"CA clients: {ca_figures.errors[:5]}")
    failures.check(ca_figures.monitors > 0 and ca_figures.fuzz_circuits > 0, f"CA phases ran: {ca_figures}")
    restarts = count_in_file(crash.log, b"@@@ Restarting child")
    failures.check(restarts == count_in_file(crash.log, b"Normal exit status = 1\r\n"),
                   "crash: every start has its exit in the log")
    codes = {}
    for server in (crash, stream):
        codes[server.name] = await server.stop()
        failures.check(codes[server.name] == 0, f"{server.name}: exit code {codes[server.name]} on SIGTERM")
        failures.check("Traceback" not in server.read_stderr(),
                       f"{server.name}: traceback on stderr:\n{server.read_stderr()[-2000:]}")
        failures.check(not os.path.exists(server.info), f"{server.name}: info file left")
    failures.check(seq_result.get("runs", 0) >= args.seq_runs and seq_result.get("complete") == seq_result.get("runs"),
                   f"seq runs complete: {seq_result}")
    failures.check(not seq_result.get("traceback") and seq_result.get("exit") == 0, f"seq server: {seq_result}")
    # churn errors: a connect refused or a reset while we reset ourselves would be a server fault
    failures.check(not figures.churn_errors, f"client errors: {figures.churn_errors[:5]}")
    # a child that has just exited may be sampled before it is reaped; more would be a leak
    for server in (crash, stream):
        worst = max(point[server.name]["zombies"] for point in series)
        failures.check(worst <= 1, f"{server.name}: {worst} zombie children at once")

    with trio.fail_after(max(600.0, args.fuzz_inputs / 1000)):
        out = await trio.to_thread.run_sync(fuzz_process.communicate)
    fuzz_result = json.loads(out[0] or b"{}") if fuzz_process.returncode == 0 else {"inputs": 0, "errors": ["crashed"]}
    failures.check(fuzz_result.get("inputs", 0) >= args.fuzz_inputs and not fuzz_result.get("errors"),
                   f"fuzz: {fuzz_result}")

    elapsed = time.monotonic() - started
    report = {
        "duration_s": round(elapsed, 1),
        "restarts": {"crash": restarts, "stream": runs, "seq": seq_result.get("runs", 0)},
        "connections": figures.connections + 7,  # + 3 controllers, the reader, log, slow and stalled clients
        "churn": {"resets": figures.resets, "typed_lines": figures.typed_lines, "naws_floods": figures.naws_floods},
        "bytes": {
            "stream_log": os.path.getsize(stream.log),
            "crash_log": os.path.getsize(crash.log),
            "clients_received": figures.bytes_received + sum(c["bytes"] for c in stream_checks.values()),
            "stream_lines_verified": lines,
        },
        "ca": {"monitor_clients": ca_figures.monitors, "monitor_updates": ca_figures.updates,
               "fuzz_messages": ca_figures.fuzz_messages, "fuzz_circuits": ca_figures.fuzz_circuits,
               "fuzz_datagrams": ca_figures.fuzz_datagrams},
        "readers": stream_checks,
        "servers": {s.name: s.measures for s in (crash, stream)},
        "series": series,
        "seq": seq_result,
        "fuzz": fuzz_result,
        "exit_codes": codes,
        "workdir": workdir,
    }
    return report, failures.items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="duration (default 5)")
    parser.add_argument("--short", action="store_true", help="about 30 s with fewer inputs and runs: for CI")
    parser.add_argument("--fuzz-inputs", type=int, default=None, help="random inputs for the codec (default 10^6)")
    parser.add_argument("--seq-runs", type=int, default=None, help="runs of seq 1 200000 (default 50)")
    parser.add_argument("--churners", type=int, default=8, help="clients connecting and leaving at once")
    parser.add_argument("--ca-churners", type=int, default=4, help="CA monitor clients coming and going at once")
    parser.add_argument("--ca-fuzzers", type=int, default=2, help="CA fuzzers at once")
    parser.add_argument("--rate", type=int, default=2_000_000, help="STREAM child's bytes per second")
    parser.add_argument("--run-seconds", type=float, default=3.0, help="how long each STREAM child runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, recordings)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--fuzz-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fuzz_worker is not None:
        print(json.dumps(fuzz(args.fuzz_worker, args.seed)))
        return 0
    if args.short:
        args.minutes = 0.4
        args.fuzz_inputs = args.fuzz_inputs or 100_000
        args.seq_runs = args.seq_runs or 3
        args.churners = min(args.churners, 4)
        args.ca_churners = min(args.ca_churners, 2)
        args.ca_fuzzers = min(args.ca_fuzzers, 1)
    args.fuzz_inputs = args.fuzz_inputs or 1_000_000
    args.seq_runs = args.seq_runs or 50
    try:
        report, failures = trio.run(soak, args)
    except BaseException:
        traceback.print_exc()
        print("SOAK FAILED: an exception ended the run", file=sys.stderr)
        return 2
    finally:
        for worker in WORKERS:  # after a failure: leave nothing behind
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for server in STARTED:  # trio's Process cannot be polled once the run is over: by pid
            if server.process is not None:
                try:
                    os.kill(server.process.pid, signal.SIGKILL)
                    os.waitpid(server.process.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass  # already gone and reaped
        remove_short_tmpdirs()  # ServerProcess makes one each; its files are in the work directory
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if failures:
        for failure in failures:
            print("FAILED:", failure, file=sys.stderr)
        print(f"SOAK FAILED; the files are in {report['workdir']}")
        return 1
    if not args.keep:
        shutil.rmtree(report["workdir"], ignore_errors=True)
    print("SOAK PASSED")
    return 0


def print_report(r: dict) -> None:
    print(f"duration: {r['duration_s']} s")
    print(f"restarts: crash loop {r['restarts']['crash']}, streamer {r['restarts']['stream']}, seq {r['restarts']['seq']}")
    print(f"connections: {r['connections']} (resets {r['churn']['resets']}, NAWS floods {r['churn']['naws_floods']}, "
          f"typed lines {r['churn']['typed_lines']})")
    b = r["bytes"]
    print(f"bytes: stream log {b['stream_log']}, crash log {b['crash_log']}, received by clients {b['clients_received']}, "
          f"stream lines verified {b['stream_lines_verified']}")
    c = r["ca"]
    print(f"CA: {c['monitor_clients']} monitor clients came and went ({c['monitor_updates']} updates), "
          f"{c['fuzz_messages']} fuzz messages in {c['fuzz_circuits']} circuits and {c['fuzz_datagrams']} datagrams")
    for name, info in r["readers"].items():
        print(f"  {name}: {info['bytes']} bytes received, {info['skipped']} skipped with notice")
    for name, measures in r["servers"].items():
        s, e = measures["start"], measures["end"]
        print(f"server {name}: fds {s['fds']} -> {e['fds']}, RSS {s['rss_kib']} -> {e['rss_kib']} KiB, "
              f"zombies {s['zombies']} -> {e['zombies']}")
    if r["series"]:
        for name in r["servers"]:
            rss = [point[name]["rss_kib"] for point in r["series"]]
            fds = [point[name]["fds"] for point in r["series"]]
            third = max(1, len(rss) // 3)
            print(f"  {name} while busy ({len(rss)} samples): RSS min {min(rss)} max {max(rss)} KiB, "
                  f"max of first third {max(rss[:third])}, of last third {max(rss[-third:])}; fds {min(fds)}..{max(fds)}")
    print(f"seq: {r['seq']}")
    f = r["fuzz"]
    print(f"fuzz: {f.get('inputs')} inputs in {f.get('seconds')} s, {len(f.get('errors', []))} errors")
    print(f"work directory: {r['workdir']}")


if __name__ == "__main__":
    sys.exit(main())
