"""Channel Access from hostile and unlucky peers: the PV channel survives them, and so does the IOC.

Rules:
1. Every network test runs the real ``pyprocserv`` command with ``--pv-prefix`` (ServerProcess),
   its private CA port from conftest's ``ca_env``, and speaks CA over real sockets on 127.0.0.1
   (127.0.0.2 and .3 play hosts without write rights).
2. A test ends with proof that server and child survived: a normal caproto read of STATUS and
   PID answers, and the PID is the child's from before.
3. Hostile bytes are built here from the CA header layout (16 bytes big-endian, 24 with the
   extended size) and never through caproto, so a caproto bug cannot hide in both ends.
   Well-behaved peers use caproto's protocol core (``caproto.VirtualCircuit``).
4. Memory is the server's RSS from /proc, scaled to CI (64 MiB announcements, not 1 GiB).
5. Each test fails on the code before the fix it proves (each names its defect); the module
   stays well under 60 s on 2 cores, every test under ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
from typing import AsyncIterator

import caproto as ca
import pytest
import trio
from caproto import ChannelType
from caproto.sync.client import read
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.launch import PY, ServerProcess
from support.proc import children_of, rss_kib

PREFIX = "H:"
TICKER = (PY, "-u", "-c", "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)")

# CA command ids (CA protocol specification, "Commands").
VERSION, EVENT_ADD, EVENT_CANCEL, WRITE, READ_NOTIFY, CREATE_CHAN, WRITE_NOTIFY, ECHO = 0, 1, 2, 4, 15, 18, 19, 23
HOST_NAME, CLIENT_NAME, CLEAR_CHANNEL = 21, 20, 12
DBR_ENUM, DBR_LONG = 3, 5
UNKNOWN_SID = 999
# Every data type a monitor may ask for: each one a PV is first asked for is a new entry in the
# subscriber lists its publisher walks.
MONITOR_TYPES = [kind for kind in ChannelType if kind < ChannelType.PUT_ACKT]


def message(command: int, payload: bytes = b"", *, data_type: int = 0, data_count: int = 0,
            p1: int = 0, p2: int = 0, announce: int | None = None) -> bytes:
    """One CA message; ``announce`` claims a payload size other than the one sent."""
    payload += bytes(-len(payload) % 8)
    size = len(payload) if announce is None else announce
    if size >= 0xFFFF:  # the extended header: size and count follow as 32-bit fields
        return struct.pack(">HHHHIIII", command, 0xFFFF, data_type, 0, p1, p2, size, data_count) + payload
    return struct.pack(">HHHHII", command, size, data_type, data_count, p1, p2) + payload


HELLO = message(VERSION, data_count=13)


def create_chan(name: str, cid: int) -> bytes:
    return message(CREATE_CHAN, name.encode() + b"\0", p1=cid, p2=13)


@pytest.fixture
def ca_port(ca_env) -> int:
    """The private CA port of ``ca_env`` (conftest), where this test's server listens."""
    return int(ca_env["EPICS_CA_SERVER_PORT"])


@contextlib.asynccontextmanager
async def pv_server(*options: str, child: tuple[str, ...] = TICKER) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(["--pv-prefix", PREFIX, "--holdoff", "1", *options, "0", *child])
    try:
        async with server:
            yield server
    except BaseException as exc:
        exc.add_note("server's stderr: " + server.read_stderr()[-3000:])
        raise
    assert "Traceback" not in server.read_stderr(), server.read_stderr()


async def ca_read(name: str, *, as_string: bool = False):
    kind = ChannelType.STRING if as_string else None
    response = await trio.to_thread.run_sync(
        functools.partial(read, PREFIX + name, data_type=kind, timeout=5, repeater=False))
    return response


async def assert_serving(server: ServerProcess, child_pid: int | None = None) -> int:
    """Server and child are alive: STATUS and PID answer a caproto read; the PID is unchanged."""
    assert server.process is not None and server.process.poll() is None, server.read_stderr()
    assert (await ca_read("STATUS", as_string=True)).data[0] == b"Running"
    pid = int((await ca_read("PID")).data[0])
    assert pid in children_of(server.pid)
    if child_pid is not None:
        assert pid == child_pid
    return pid


async def open_raw(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def reset(stream: trio.SocketStream) -> None:
    """Close with RST (linger 0): the server's next send to it fails at once."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def until_closed(stream: trio.SocketStream, seconds: float = 5) -> bool:
    """Read until the server closes the circuit; False if it stayed open for ``seconds``."""
    with trio.move_on_after(seconds):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


class Peer:
    """A well-behaved CA client on caproto's protocol core (so it can leave at a bad moment)."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self.stream = stream
        self.circuit = ca.VirtualCircuit(our_role=ca.CLIENT, address=("127.0.0.1", port), priority=0)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, port: int, source: str = "127.0.0.1") -> AsyncIterator["Peer"]:
        peer = cls(await open_raw(port, source), port)
        try:
            await peer.send(ca.VersionRequest(priority=0, version=ca.DEFAULT_PROTOCOL_VERSION),
                            ca.HostNameRequest("peer"), ca.ClientNameRequest("tester"))
            yield peer
        finally:
            await peer.stream.aclose()

    async def send(self, *commands) -> None:
        await self.stream.send_all(b"".join(self.circuit.send(*commands)))

    async def receive(self) -> list:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the circuit")
        commands, _ = self.circuit.recv(data)
        for command in commands:
            self.circuit.process_command(command)
        return list(commands)

    async def channels(self, *names: str) -> list[ca.ClientChannel]:
        channels = [ca.ClientChannel(PREFIX + name, self.circuit) for name in names]
        await self.send(*(channel.create() for channel in channels))
        while any(channel.states[ca.CLIENT] is not ca.CONNECTED for channel in channels):
            await self.receive()
        return channels

    async def reply_to(self, command) -> object:
        """Send ``command`` and return the server's WriteNotifyResponse or ErrorResponse."""
        await self.send(command)
        while True:
            for reply in await self.receive():
                if isinstance(reply, (ca.WriteNotifyResponse, ca.ErrorResponse)):
                    return reply


# -- 1: a channel id that was never created ---------------------------------------------------------

UNKNOWN_SID_MESSAGES = {
    "READ_NOTIFY": message(READ_NOTIFY, data_type=DBR_LONG, data_count=1, p1=UNKNOWN_SID, p2=1),
    "WRITE": message(WRITE, struct.pack(">i", 1), data_type=DBR_LONG, data_count=1, p1=UNKNOWN_SID, p2=1),
    "WRITE_NOTIFY": message(WRITE_NOTIFY, struct.pack(">i", 1), data_type=DBR_LONG, data_count=1,
                            p1=UNKNOWN_SID, p2=1),
    "EVENT_ADD": message(EVENT_ADD, bytes(12) + struct.pack(">H", 5), data_type=DBR_LONG, data_count=1,
                         p1=UNKNOWN_SID, p2=1),
    "EVENT_CANCEL": message(EVENT_CANCEL, data_type=DBR_LONG, data_count=1, p1=UNKNOWN_SID, p2=1),
}


async def test_a_message_naming_a_channel_never_created_ends_only_its_circuit(ca_port):
    async with pv_server() as server:
        pid = await assert_serving(server)
        for name, bad in UNKNOWN_SID_MESSAGES.items():
            stream = await open_raw(ca_port)
            await stream.send_all(HELLO + bad)
            assert await until_closed(stream), name
            await stream.aclose()
            await assert_serving(server, pid)


# -- 2: monitor clients coming and going ------------------------------------------------------------


async def test_monitor_clients_coming_and_going_leave_the_server_serving(ca_port):
    async with pv_server() as server:
        pid = await assert_serving(server)

        async def churn(end: float) -> None:
            n = 0
            while trio.current_time() < end:
                n += 1
                async with Peer.connect(ca_port) as peer:
                    channels = await peer.channels("HEARTBEAT", "IOCOUT")
                    await peer.send(*(channel.subscribe(mask=ca.SubscriptionType.DBE_VALUE) for channel in channels))
                    with trio.move_on_after(0.05 * (n % 4)):  # leave before, during and after updates
                        while True:
                            await peer.receive()
                    if n % 2:
                        await reset(peer.stream)

        # A few seconds: several updates of both, each sent while clients come and go.
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(churn, trio.current_time() + 3)
        await assert_serving(server, pid)


async def test_monitors_of_every_type_coming_while_a_crash_loop_publishes_leave_the_server_serving(ca_port):
    # STATUS, PID and START_CNT change hundreds of times a second; each first monitor of a data
    # type adds to the subscriber lists their publisher walks.
    async with pv_server("--holdoff", "0", child=("/bin/sh", "-c", "echo crash; exit 1")) as server:

        async def subscribe(offset: int) -> None:
            for n in range(len(MONITOR_TYPES)):
                async with Peer.connect(ca_port) as peer:
                    channels = await peer.channels("STATUS", "PID", "START_CNT", "IOCOUT")
                    kind = MONITOR_TYPES[(n + offset) % len(MONITOR_TYPES)]
                    await peer.send(*(channel.subscribe(data_type=kind) for channel in channels))
                    with trio.move_on_after(0.02):
                        while True:
                            await peer.receive()

        async with trio.open_nursery() as nursery:
            for offset in range(0, len(MONITOR_TYPES), 5):
                nursery.start_soon(subscribe, offset)
        assert server.process is not None and server.process.poll() is None
        starts = int((await ca_read("START_CNT")).data[0])
        with trio.fail_after(5):
            while int((await ca_read("START_CNT")).data[0]) <= starts:
                await trio.sleep(0.05)


# -- 3: puts whose reply cannot be delivered --------------------------------------------------------


async def test_puts_from_peers_that_leave_at_once_end_only_their_circuits(ca_port):
    async with pv_server() as server:
        pid = await assert_serving(server)
        for source, name in [("127.0.0.2", "STOP")] * 10 + [("127.0.0.1", "SHOWOUT")] * 10:
            async with Peer.connect(ca_port, source) as peer:
                (channel,) = await peer.channels(name)
                puts = [channel.write([1], data_type=ChannelType.LONG, notify=notify, ioid=i)
                        for i, notify in enumerate([True, False] * 10)]
                await peer.send(*puts)
                await reset(peer.stream)
        await assert_serving(server, pid)


# -- 4: a message larger than any PV ----------------------------------------------------------------


async def test_an_oversized_message_is_refused_before_it_is_buffered_and_memory_stays(ca_port):
    announced = 64 << 20
    async with pv_server() as server:
        pid = await assert_serving(server)
        before = rss_kib(server.pid)
        chunk = bytes(256 << 10)
        for _ in range(4):
            stream = await open_raw(ca_port)
            sent = 0
            with trio.fail_after(10):
                try:
                    await stream.send_all(HELLO + message(WRITE, announce=announced, p1=1, p2=1))
                    while sent < announced - len(chunk):
                        await stream.send_all(chunk)
                        sent += len(chunk)
                except trio.BrokenResourceError:
                    pass  # closed by the server: what we want
            assert sent < announced // 4, f"the server took {sent} bytes of a message it should refuse"
            await stream.aclose()
        await assert_serving(server, pid)
        grown = rss_kib(server.pid) - before
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB"


# -- 5: IOCOUT with output outside Latin-1 ----------------------------------------------------------

UNICODE_CHILD = (PY, "-u", "-c", (
    "import sys, time\n"
    "sys.stdout.buffer.write('check \\u2713 euro \\u20ac\\n'.encode() + b'bin \\xff\\xfe end\\n')\n"
    "sys.stdout.buffer.flush()\n"
    "time.sleep(3600)\n"
))
EXPECTED = "check ✓ euro €\nbin \ufffd\ufffd end".encode()

PYEPICS_IOCOUT = """\
import sys, epics, numpy
value = epics.caget(sys.argv[1], use_monitor=False, timeout=5)
if value is None:
    raise SystemExit("no answer")
print(bytes(numpy.asarray(value, dtype=numpy.uint8)).hex())
"""


async def test_iocout_carries_any_output_to_caproto_and_to_libca(ca_port):
    async with pv_server(child=UNICODE_CHILD) as server:
        with trio.fail_after(10):
            while True:
                iocout = bytes((await ca_read("IOCOUT")).data)
                if b"end" in iocout:
                    break
                await trio.sleep(0.1)
        assert EXPECTED in iocout, iocout
        result = await trio.run_process([PY, "-c", PYEPICS_IOCOUT, PREFIX + "IOCOUT"], capture_stdout=True,
                                        capture_stderr=True, check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert EXPECTED in bytes.fromhex(result.stdout.decode().split()[-1])
        await assert_serving(server)


# -- 6: enum indexes outside the strings ------------------------------------------------------------


async def test_enum_pvs_refuse_indexes_outside_their_strings_with_a_put_failure(ca_port):
    async with pv_server() as server:
        pid = await assert_serving(server)
        async with Peer.connect(ca_port) as peer:
            showout, stop = await peer.channels("SHOWOUT", "STOP")
            for channel, index, kind in [(showout, 2, ChannelType.LONG), (showout, 65535, ChannelType.ENUM),
                                        (stop, 2, ChannelType.LONG), (stop, 7, ChannelType.INT)]:
                reply = await peer.reply_to(channel.write([index], data_type=kind, notify=True, ioid=index))
                assert isinstance(reply, ca.ErrorResponse) and reply.status.name == "ECA_PUTFAIL"
            assert (await ca_read("SHOWOUT", as_string=True)).data[0] == b"Yes"
            reply = await peer.reply_to(showout.write([0], data_type=ChannelType.ENUM, notify=True, ioid=1))
            assert isinstance(reply, ca.WriteNotifyResponse) and reply.status.success
            assert (await ca_read("SHOWOUT", as_string=True)).data[0] == b"No"
        await assert_serving(server, pid)


async def test_every_writable_enum_of_process_and_host_pvs_checks_its_index():
    from pyprocserv._ca.hostpvs import HostPVs
    from pyprocserv._ca.pvs import GuardedEnum, ProcessPVs, WritePolicy

    class Nobody:  # neither a host nor a server: a put that got through would touch it and fail
        managed: dict = {}

    host = HostPVs(Nobody(), "HOST:", WritePolicy())  # type: ignore[arg-type]
    guarded = [pv for pv in host.pvdb.values() if isinstance(pv, GuardedEnum)]
    assert [pv.pvname for pv in guarded] == ["HOST:ALL"]
    writable = [spec.attr_name for spec in ProcessPVs._pvs_.values() if not spec.pvspec.read_only]
    assert all(ProcessPVs._pvs_[name].pvspec.dtype is GuardedEnum for name in writable)
    for index in (3, -1, 255):
        with pytest.raises(ca.CaprotoValueError):
            await guarded[0].verify_value(index)
    with pytest.raises(ca.CaprotoValueError):
        await guarded[0].verify_value("Explode")


# -- 7: refused puts, reported once a minute per peer -----------------------------------------------


def test_refusals_are_reported_at_once_then_at_most_once_a_period_with_a_count():
    from pyprocserv._core.reports import ReportLimiter

    limiter = ReportLimiter(period=60.0)
    assert limiter.note("10.0.0.1", now=100.0) == 1  # the first: reported at once
    assert [limiter.note("10.0.0.1", now=100.0 + t) for t in range(1, 6)] == [None] * 5
    assert limiter.note("10.0.0.2", now=101.0) == 1  # per peer
    assert limiter.due(now=159.0) == []
    assert limiter.due(now=160.0) == [("10.0.0.1", 5)]  # the flood stopped: its count, once
    assert limiter.due(now=161.0) == [] and limiter.note("10.0.0.1", now=161.0) is None
    assert limiter.note("10.0.0.1", now=220.0) == 2  # a minute after the last report
    assert limiter.due(now=400.0) == []
    assert limiter.peers() == set()  # quiet peers are forgotten: a flood of addresses leaves nothing


async def test_a_flood_of_refused_puts_leaves_one_line_per_peer(ca_port, tmp_path):
    log = tmp_path / "log"
    async with pv_server("-L", str(log)) as server:
        pid = await assert_serving(server)
        for source in ("127.0.0.2", "127.0.0.3"):
            async with Peer.connect(ca_port, source) as peer:
                (stop,) = await peer.channels("STOP")
                for ioid in range(60):
                    reply = await peer.reply_to(stop.write([1], data_type=ChannelType.LONG, notify=True, ioid=ioid))
                    assert isinstance(reply, ca.ErrorResponse)
        await assert_serving(server, pid)
        lines = [line for line in log.read_bytes().splitlines() if b"refused CA put" in line]
        assert lines == [b"@@@ pyprocserv: refused CA put to H:STOP from 127.0.0.2: not an allowed host",
                         b"@@@ pyprocserv: refused CA put to H:STOP from 127.0.0.3: not an allowed host"]


# -- the fuzzer -------------------------------------------------------------------------------------

# Names a fuzzed circuit may open: every read-only PV and SHOWOUT, never a command (127.0.0.1 may
# write, and a fuzzed put to STOP would rightly stop the child).
FUZZ_NAMES = ["STATUS", "PID", "IOCOUT", "SHOWOUT", "HEARTBEAT", "DESCRIPTION", "EXIT_CODE", "NOSUCHPV"]
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
small_id = st.one_of(st.integers(0, 8), u32)
any_header = st.builds(
    lambda command, data, data_type, data_count, p1, p2: message(
        command, data, data_type=data_type, data_count=data_count, p1=p1, p2=p2),
    st.one_of(st.sampled_from([EVENT_ADD, EVENT_CANCEL, WRITE, READ_NOTIFY, CREATE_CHAN, WRITE_NOTIFY,
                               ECHO, CLEAR_CHANNEL, HOST_NAME, CLIENT_NAME, VERSION, 3, 6, 8, 14, 27]), u16),
    st.binary(max_size=64), st.one_of(st.integers(0, 40), u16), st.one_of(st.integers(0, 4), u16),
    small_id, small_id,
)
oversized = st.builds(lambda command, size: message(command, announce=size),
                      st.sampled_from([WRITE, CREATE_CHAN, ECHO, 0xFFFF]), st.integers(20000, 0xFFFFFFFF))
opening = st.builds(lambda name, cid: create_chan(PREFIX + name, cid), st.sampled_from(FUZZ_NAMES), st.integers(0, 8))
truncated = st.builds(lambda whole, cut: whole[:cut], any_header, st.integers(1, 23))
known_bad = st.sampled_from(list(UNKNOWN_SID_MESSAGES.values()))
fuzz_message = st.one_of(any_header, opening, opening, truncated, oversized, known_bad, st.binary(min_size=1, max_size=48))


def answers_version(port: int) -> bool:
    """A fresh circuit gets a VERSION reply: the server still serves CA."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(HELLO)
        reply = b""
        while len(reply) < 16:
            data = sock.recv(16 - len(reply))
            if not data:
                return False
            reply += data
    return struct.unpack(">H", reply[:2])[0] == VERSION


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
@given(greet=st.booleans(), messages=st.lists(fuzz_message, max_size=12), udp=st.booleans(), rude=st.booleans())
def fuzz_one_circuit(port: int, greet: bool, messages: list[bytes], udp: bool, rude: bool) -> None:
    data = (HELLO if greet else b"") + b"".join(messages)
    if udp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data[:1400] or b"\0", ("127.0.0.1", port))
    else:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            if rude:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                sock.sendall(data)
                sock.settimeout(0.02)
                sock.recv(65536)  # give the server a moment to act on it while we are still here
            except OSError:
                pass
    assert answers_version(port)


async def test_fuzzed_ca_messages_leave_server_and_child_running_with_bounded_memory(ca_port):
    async with pv_server() as server:
        pid = await assert_serving(server)
        before = rss_kib(server.pid)
        with trio.fail_after(40):
            await trio.to_thread.run_sync(fuzz_one_circuit, ca_port)
        await assert_serving(server, pid)
        grown = rss_kib(server.pid) - before
        assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
