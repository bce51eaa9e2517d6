"""Memory bounded by design (issue #9, item 4): shared chunks, one budget, memory given back.

Rules for these tests:
* The console's policy is tested on :class:`Console` and :class:`Outbox` alone, synchronously:
  readers whose outboxes nobody drains stand for clients that do not read, and a recording
  ``writev`` stands for a socket.
* "No copy" is checked by identity: what a reader's socket is given is the very ``bytes`` object
  the console made (or a memoryview of it), the same for every reader of that form.
* One real test measures the server process's RSS with clients that never read, as
  ``bench/memory.py`` does on a larger scale.
"""

from __future__ import annotations

import os
import socket

import trio

from support.launch import ServerProcess, child_script
from support.ports import free_port
from support.proc import rss_kib
from pyprocserv._core import messages
from pyprocserv._shell.console import OWN_LIMIT, Console, Outbox, Reader
from pyprocserv._core.telnet import TelnetConnection

BIG = 1 << 40  # an outbox limit that never binds: the budget is what is tested


def reader(console: Console, *, telnet: bool = False, stamped: bool = False, control: bool = True) -> Reader:
    r = Reader(Outbox(BIG), control=control, telnet=telnet, stamped=stamped)
    console.attach(r)
    return r


class Socket:
    """A recording ``writev``: takes up to ``room`` bytes a call (None: all), keeps what it was given."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.calls: list[list[bytes | memoryview]] = []
        self.received = bytearray()

    def writev(self, buffers) -> int:
        self.calls.append(list(buffers))
        data = b"".join(buffers)
        taken = data if self.room is None else data[: self.room]
        if not taken:
            raise BlockingIOError
        self.received += taken
        return len(taken)


def base(buffer: bytes | memoryview) -> object:
    return buffer.obj if isinstance(buffer, memoryview) else buffer


# -- no copy per reader ---------------------------------------------------------------------------

def test_readers_that_fell_behind_are_written_the_consoles_own_chunks_not_copies():
    console = Console()
    readers = [reader(console, telnet=True) for _ in range(3)]
    chunks = [b"line %d \xff\r\n" % i for i in range(5)]
    for chunk in chunks:
        console.broadcast(chunk)
    sockets = [Socket() for _ in readers]
    for r, sock in zip(readers, sockets):
        r.outbox.writev = sock.writev
        assert r.outbox.flush()
    first, *others = sockets
    assert bytes(first.received) == b"".join(TelnetConnection.encode(c) for c in chunks)
    assert len(first.calls) == 1  # one gathering write for the whole queue
    for sock in others:
        assert [base(b) for b in sock.calls[0]] == [base(b) for b in first.calls[0]]
        assert all(a is b for a, b in zip(sock.calls[0], first.calls[0]))


def test_a_partly_written_chunk_is_resumed_from_a_view_of_the_same_chunk():
    console = Console()
    r = reader(console)
    chunk = b"x" * 100
    console.broadcast(chunk)
    sock = Socket(room=30)
    r.outbox.writev = sock.writev
    assert not r.outbox.flush()
    assert not r.outbox.flush()
    assert isinstance(sock.calls[1][0], memoryview) and sock.calls[1][0].obj is chunk
    assert r.outbox.queued == 40
    sock.room = None
    assert r.outbox.flush() and bytes(sock.received) == chunk


def test_a_reader_that_keeps_up_is_written_at_once_and_queues_only_what_its_socket_refuses():
    console = Console()
    r = reader(console)
    sock = Socket()
    r.outbox.writev = sock.writev
    r.outbox.idle = True  # its task waits for data
    console.broadcast(b"fast\r\n")
    assert bytes(sock.received) == b"fast\r\n" and r.outbox.queued == 0
    sock.room = 2
    console.broadcast(b"slower\r\n")
    assert r.outbox.queued == 6 and not r.outbox.idle  # its task takes over the rest


def test_stamped_output_is_made_once_and_every_line_of_every_stamped_reader_starts_with_a_stamp():
    console = Console(stamp=lambda: b"<T> ")
    early = reader(console, stamped=True, control=False)
    console.broadcast(b"half a li")
    late = reader(console, stamped=True, control=False)  # attaches in the middle of a line
    late_telnet = reader(console, stamped=True, telnet=True, control=False)
    for chunk in (b"ne\r\nnext\r\n", b"\xff and more\r\n"):
        console.broadcast(chunk)
    queued = {id(r): list(r.outbox._chunks) for r in (early, late, late_telnet)}
    assert b"".join(queued[id(early)]) == b"<T> half a line\r\n<T> next\r\n<T> \xff and more\r\n"
    assert b"".join(queued[id(late)]) == b"<T> ne\r\n<T> next\r\n<T> \xff and more\r\n"
    assert b"".join(queued[id(late_telnet)]) == b"<T> ne\r\n<T> next\r\n<T> \xff\xff and more\r\n"
    # the two stamped chunks are one object for both raw readers (the first one's stamp is its own)
    assert queued[id(early)][1] is queued[id(late)][1] and queued[id(early)][2] is queued[id(late)][2]


# -- one budget for all readers -------------------------------------------------------------------

def test_readers_at_the_same_place_share_their_queue_in_the_budget():
    console = Console(budget=10_000)
    readers = [reader(console) for _ in range(50)] + [reader(console, telnet=True) for _ in range(50)]
    for _ in range(10):
        console.broadcast(b"y" * 450)  # 50 KiB queued per form if every reader counted on its own
    assert all(r.outbox.queued == 4500 and r.outbox.skipped == 0 for r in readers)


def test_over_budget_the_reader_furthest_behind_skips_first_and_is_told_the_exact_count():
    console = Console(budget=1000)
    furthest = reader(console)
    console.broadcast(b"a" * 600)
    middle = reader(console)
    console.broadcast(b"b" * 300)
    nearest = reader(console)
    console.broadcast(b"c" * 99)
    assert (furthest.outbox.queued, middle.outbox.queued, nearest.outbox.queued) == (999, 399, 99)
    console.broadcast(b"d" * 2)  # 1001 bytes behind: over the budget by one
    assert furthest.outbox.queued == 0 and furthest.outbox.skipped == 1001
    assert (middle.outbox.queued, nearest.outbox.queued) == (401, 101)
    assert middle.outbox.skipped == nearest.outbox.skipped == 0
    console.broadcast(b"e" * 10)
    sock = Socket()
    furthest.outbox.writev = sock.writev
    assert furthest.outbox.flush()
    assert bytes(sock.received) == messages.output_skipped(1001) + b"e" * 10


def test_over_budget_as_many_readers_skip_as_it_takes_furthest_behind_first():
    console = Console(budget=BIG)
    lags = []
    for i in range(6):
        lags.append(reader(console, telnet=bool(i % 2)))
        console.broadcast(b"z" * 200)
    console.budget = 1000
    console.broadcast(b"z" * 200)
    # queued 1400 1200 1000 800 600 400, alternately raw and telnet: the longest of each form
    # count, 1400 + 1200; skipping the four furthest behind leaves 600 + 400
    assert [r.outbox.skipped for r in lags] == [1400, 1200, 1000, 800, 0, 0]
    assert [r.outbox.queued for r in lags] == [0, 0, 0, 0, 600, 400]


def test_bytes_made_for_one_reader_alone_count_in_full_in_the_budget():
    console = Console(budget=20_000)
    readers = [reader(console) for _ in range(10)]
    for r in readers:
        r.outbox.put(b"g" * 3000)  # a greeting each: not shared, so ten of them are held
    console.broadcast(b"0123456789")
    # 3010 for the longest queue plus 30,000 of own bytes; five skip to come down to 18,010
    assert sum(1 for r in readers if r.outbox.skipped) == 5


def test_a_client_that_never_reads_its_telnet_replies_holds_at_most_own_limit_of_them():
    outbox = Outbox(BIG)
    for _ in range(100_000):
        outbox.put(b"\xff\xfc\x01")  # IAC WONT ECHO, again and again
    assert outbox.queued <= OWN_LIMIT and outbox.own <= OWN_LIMIT
    assert outbox.skipped + outbox.queued == 300_000


def test_replies_beside_a_long_history_replay_never_push_the_replay_out():
    outbox = Outbox(BIG)
    outbox.put(b"history\r\n" * 20_000, bounded=False)
    for _ in range(1000):
        outbox.put(b"\xff\xfc\x01")
    assert outbox.skipped == 0 and outbox.queued == 183_000


def test_clients_that_attach_with_the_history_and_never_read_are_held_to_the_budget():
    console = Console(history_lines=100)
    for i in range(50):
        console.broadcast(b"line %02d of the history\r\n" % i)
    history = console.history.replay()
    console.budget = 5 * len(history) + len(history) // 2
    readers = []
    for _ in range(10):  # the child says nothing meanwhile: attaching is what counts them
        r = Reader(Outbox(BIG), control=True, telnet=False, stamped=False)
        r.outbox.put(history, bounded=False)  # as a session queues it before attaching
        console.attach(r)
        readers.append(r)
    # each holds its own replay: the longest queue plus ten of them would be 11 replays
    assert [r.outbox.skipped for r in readers] == [len(history)] * 6 + [0] * 4


def test_a_reader_that_leaves_lets_go_of_its_queue_at_once():
    console = Console()
    r = reader(console)
    chunk = b"q" * 1000
    console.broadcast(chunk)
    console.detach(r)
    assert r.outbox.queued == 0 and not list(r.outbox._chunks)
    r.outbox.put(b"late")  # a broadcast racing the detach changes nothing
    assert r.outbox.queued == 0


# -- the real server --------------------------------------------------------------------------------

STREAMER = "import os\nb = (b'#' * 79 + b'\\n') * 819\nwhile True: os.write(1, b)\n"
LOGGERS = 40
# Old behaviour: a private stamped copy per reader, up to 8 MiB each (320 MiB for 40). Now one
# shared stamped stream, bounded by the 64 MiB budget for all of them.
PEAK_ABOVE_BASELINE_KIB = 112 * 1024
AFTER_ABOVE_BASELINE_KIB = 32 * 1024


async def test_stamped_log_clients_that_never_read_keep_the_servers_memory_within_the_budget():
    log_port = free_port()
    args = ["-q", "--logstamp", "-l", str(log_port), "0", *child_script(STREAMER)]
    async with ServerProcess(args) as server:
        await trio.sleep(0.5)  # the child streams, the server settles
        baseline = rss_kib(server.pid)
        socks = []
        try:
            for _ in range(LOGGERS):
                sock = trio.socket.socket()
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
                await sock.connect(("127.0.0.1", log_port))
            peak = baseline
            with trio.move_on_after(3):
                while True:
                    peak = max(peak, rss_kib(server.pid))
                    await trio.sleep(0.05)
        finally:
            for sock in socks:
                sock.close()
        assert peak - baseline < PEAK_ABOVE_BASELINE_KIB, f"peak {peak} KiB, baseline {baseline} KiB"
        with trio.fail_after(5):  # the memory comes back once they have left
            while rss_kib(server.pid) - baseline >= AFTER_ABOVE_BASELINE_KIB:
                await trio.sleep(0.05)
        assert os.path.exists(f"/proc/{server.pid}")
