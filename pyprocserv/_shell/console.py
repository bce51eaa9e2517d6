"""The console hub: one broadcast of everything the child and the server say, to every reader.

Rules (architecture §3, §4):
1. :meth:`Console.broadcast` never waits. It writes the log file, feeds the history, and
   queues the chunk for each reader; each reader's task sends what has queued up.
2. No reader gets a copy of console output. Each chunk is made once in each form readers need
   (as the child wrote it; with 0xFF doubled for telnet; stamped; stamped and doubled) and
   the same ``bytes`` object is queued for every reader of that form. A reader's socket takes
   its queue with one gathering write (``writev``) over those shared chunks. A queue of
   references was chosen over one shared ring with per-reader offsets because readers also get
   bytes of their own (greeting, telnet replies, notices) in order between console chunks: a
   deque of references keeps that order for 8 bytes a chunk, with no offsets to keep in step.
3. A reader that keeps up has each chunk written to its socket from :meth:`Outbox.share`,
   without a task switch; only what the socket does not take is queued.
4. One budget for all readers together (:attr:`Console.budget`). The queues of one form are
   suffixes of one stream, so the memory they hold is that of the longest; the budget counts
   the longest queue of each form plus every reader's own bytes, after every chunk. When that
   passes the budget, the readers furthest behind skip first: their queue is emptied (all but
   the rest of a chunk partly written) and they later read an ``@@@`` notice with the number
   of bytes they missed. Everyone else, the log and the child go on at full speed.
5. Two bounds per reader besides: its :attr:`Outbox.limit`, and ``OWN_LIMIT`` for bytes made
   for it alone after its greeting and history, so a client that sends telnet negotiation and
   never reads the replies holds 64 KiB of them at most.
6. Stamped output is made once per chunk by one :class:`LineStamper`, shared with the log file:
   stamped readers read the log file's stamps. A reader that attaches in the middle of a line
   gets the stamp before its first byte, as procServ (one line-start flag per log client)
   gives it, so every line it shows starts with a stamp.
7. Memory comes back: a reader that leaves lets go of its queue at once, and when the queues
   have shrunk well below their peak the freed pages are returned to the system.
8. The log file gets every byte, in order, whatever the readers do.
9. Routing is procServ's (behaviour §2): control clients get the bytes with 0xFF doubled; log
   clients the same with per-line stamps when ``--logstamp`` is on; nobody gets stamps but them
   and the log file.
"""

from __future__ import annotations

import collections
import itertools
import os
from typing import Callable, Iterable, Protocol, Sequence, final

import trio

from .._core import messages
from .._core.config import DEFAULT_CLIENT_BUDGET
from .._core.log import History, LineStamper
from .._core.telnet import TelnetConnection

# One gathering write takes at most this many chunks and (about) this many bytes.
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
GATHER_BYTES = 1 << 19
# The most a reader may have queued of bytes made for it alone (greeting, telnet replies).
OWN_LIMIT = 1 << 16
# Free pages go back to the system once the queues have shrunk by this much (and by half).
RELEASE_STEP = 8 << 20


class LogSink(Protocol):
    """Where the log goes: the -L file, or standard output for ``-L -``."""

    def write(self, data: bytes) -> bytes | None:
        """Write everything; a notice for the clients when writing starts or stops failing."""


class _Own(bytes):
    """Bytes queued for one reader only (greeting, telnet replies, notices): counted apart."""


@final
class Outbox:
    """The output queued for one reader: references to shared chunks, never a copy of them.

    The writer side (:meth:`share`, :meth:`put`) never blocks. With :attr:`writev` set (a
    non-blocking gathering write to the reader's socket), it writes at once while the reader's
    task waits for data, and queues only what the socket does not take.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit  # this reader's own bound, besides the console's budget
        self._chunks: collections.deque[bytes] = collections.deque()
        self._sent = 0  # bytes of the first chunk already written
        self._size = 0  # bytes queued and not yet written
        self.own = 0  # of which bytes made for this reader alone
        self._own_allowance = OWN_LIMIT  # raised by the greeting and the history
        self.skipped = 0  # not yet announced to the reader
        self._closed = False
        self._ready = trio.Event()
        self.writev: Callable[[Sequence[bytes | memoryview]], int] | None = None
        self.failure: OSError | None = None  # a write from put() failed; the reader's task ends
        self.idle = False  # the reader's task waits for data, so put() may write itself

    @property
    def queued(self) -> int:
        return self._size

    def share(self, chunk: bytes) -> None:
        """Queue a chunk that other readers may hold too (console output, the history)."""
        if self._closed or not chunk:
            return
        if self.idle and self.writev is not None:  # nothing is queued: write it now
            try:
                written = self.writev((chunk,))
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self.failure = exc
                written = 0
            if written == len(chunk):
                return
            self._chunks.append(chunk)
            self._sent = written
            self._size = len(chunk) - written
            self.idle = False  # the reader's task takes over from here
            self._ready.set()
            return
        if self._size + len(chunk) > self.limit and self._size:
            self.skip()
        self._queue(chunk)

    def put(self, data: bytes, *, bounded: bool = True) -> None:
        """Queue bytes for this reader alone (its copy, counted apart from shared chunks).

        Unless ``bounded`` is False (the greeting, the history replay), they may not take its
        own bytes more than ``OWN_LIMIT`` past those: a reader that does not read the replies
        to its telnet negotiation is not keeping up.
        """
        if self._closed or not data:
            return
        if not bounded:
            self._own_allowance += len(data)
        elif (self.own + len(data) > self._own_allowance or self._size + len(data) > self.limit) and self._size:
            self.skip()
        self.own += len(data)
        self._queue(_Own(data))

    def _queue(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self.idle and self.writev is not None:
            try:
                if self.flush():
                    return
            except OSError as exc:
                self.failure = exc
            self.idle = False  # the reader's task takes over from here
        self._ready.set()

    def skip(self) -> int:
        """Drop what is queued, but the rest of a chunk partly written; the reader is told later."""
        keep = self._chunks[0] if self._sent else None
        dropped = self._size - (len(keep) - self._sent if keep is not None else 0)
        self._chunks.clear()
        self.own = 0
        if keep is not None:
            self._chunks.append(keep)
            self.own = len(keep) if type(keep) is _Own else 0
        self._size -= dropped
        self.skipped += dropped
        return dropped

    def close(self) -> None:
        """No more data will come; the reader gets what is queued, then the end."""
        self._closed = True
        self._ready.set()

    def drop(self) -> None:
        """The reader is gone: let go of everything queued for it at once."""
        self.close()
        self._chunks.clear()
        self._size = self._sent = self.skipped = self.own = 0

    async def wait(self) -> bool:
        """Wait until something is queued; False once closed and empty."""
        if not self._chunks and not self.skipped:
            self.idle = True
            try:
                while not self._chunks:
                    if self._closed:
                        return False
                    self._ready = trio.Event()
                    await self._ready.wait()
            finally:
                self.idle = False
        return True

    def flush(self) -> bool:
        """One gathering write of what is queued, as much as the socket takes now.

        True when nothing is left. Raises OSError when the socket failed.
        """
        if self.failure is not None:
            raise self.failure
        assert self.writev is not None
        self._announce_skip()
        if not self._chunks:
            return True
        try:
            written = self.writev(self._gather())
        except BlockingIOError:
            return False
        self._consume(written)
        return not self._chunks

    async def get(self, limit: int = GATHER_BYTES) -> bytes | None:
        """The next queued output as one buffer, for a stream without gathering writes (the
        terminal, standard output, tests) or a message transport; None once closed and empty.

        A single chunk is handed over as it is; several are joined, at most about ``limit``
        bytes at a time, so the copy stays small. With a ``limit`` below ``GATHER_BYTES`` the
        buffer is never longer than ``limit`` (a longer chunk is handed over in pieces).
        """
        if not await self.wait():
            return None
        self._announce_skip()
        parts = self._gather(limit)
        if limit < GATHER_BYTES:
            parts = _at_most(parts, limit)
        data = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        self._consume(len(data))
        return data

    def _announce_skip(self) -> None:
        if self.skipped:
            notice = _Own(messages.output_skipped(self.skipped))
            self._chunks.insert(1 if self._sent else 0, notice)  # never inside a chunk
            self._size += len(notice)
            self.own += len(notice)
            self.skipped = 0

    def _gather(self, limit: int = GATHER_BYTES) -> list[bytes | memoryview]:
        first = self._chunks[0]
        parts: list[bytes | memoryview] = [memoryview(first)[self._sent :] if self._sent else first]
        total = len(parts[0])
        for chunk in itertools.islice(self._chunks, 1, IOV_MAX):
            if total >= limit:
                break
            parts.append(chunk)
            total += len(chunk)
        return parts

    def _consume(self, written: int) -> None:
        self._size -= written
        written += self._sent
        chunks = self._chunks
        while chunks and written >= len(chunks[0]):
            chunk = chunks.popleft()
            written -= len(chunk)
            if type(chunk) is _Own:
                self.own -= len(chunk)
        self._sent = written


def _at_most(parts: list[bytes | memoryview], limit: int) -> list[bytes | memoryview]:
    """The first ``limit`` bytes of ``parts`` (the last part cut without a copy)."""
    room = limit
    for i, part in enumerate(parts):
        if len(part) >= room:
            return [*parts[:i], part if len(part) == room else memoryview(part)[:room]]
        room -= len(part)
    return parts


@final
class Reader:
    """A connected reader of the console: a control client, a log client or the terminal."""

    def __init__(self, outbox: Outbox, *, control: bool, telnet: bool, stamped: bool) -> None:
        self.outbox = outbox
        self.control = control
        self.telnet = telnet
        self.stamped = stamped
        self.form = 2 * stamped + telnet  # which made-once form of each chunk it reads
        self.owes_stamp = False  # attached mid-line: its first stamped chunk needs a stamp
        self.window_size: tuple[int, int] | None = None  # (rows, columns) from NAWS
        self.attached = 0  # attach order (newer readers have larger numbers); 0 when detached
        self.dropping_input = False


@final
class Console:
    """Fan-out of the console to the log file, stdout (-d), the history and every reader."""

    def __init__(
        self,
        *,
        log: LogSink | None = None,
        history_lines: int = 0,
        browser_history_lines: int = 0,
        stamp: Callable[[], bytes] | None = None,
        echo: Callable[[bytes], None] | None = None,
        budget: int = DEFAULT_CLIENT_BUDGET,
    ) -> None:
        self.log = log
        self.history = History(history_lines)
        # Browser consoles replay more than telnet clients when asked to (``Config.browser_history``):
        # a second ring then, else the same one.
        more = browser_history_lines > history_lines
        self.browser_history = History(browser_history_lines) if more else self.history
        self.stamp = stamp  # None: --logstamp is off
        self.echo = echo  # -d: a copy of the log for standard output
        self.budget = budget  # bytes queued for all readers together
        self._stamper = LineStamper()  # for the log file and every stamped reader
        self._high_water = 0  # queued bytes (as the budget counts them) since memory was last released
        self._readers: list[Reader] = []
        self._attached = 0
        self._sizer: Reader | None = None  # whose window size is in effect (newest_window_size)
        self.taps: list[Callable[[bytes], None]] = []  # in-process watchers (IOCOUT); never wait
        self.on_log_notice: Callable[[bytes], None] | None = None

    @property
    def readers(self) -> Iterable[Reader]:
        return tuple(self._readers)

    def counts(self) -> tuple[int, int]:
        """(users, loggers) connected, as procServ counts them."""
        users = sum(1 for r in self._readers if r.control)
        return users, len(self._readers) - users

    def attach(self, reader: Reader) -> None:
        """A new reader, its greeting and history queued: they count in the budget from now."""
        reader.owes_stamp = reader.stamped and not self._stamper.at_line_start
        self._attached += 1
        reader.attached = self._attached
        self._readers.append(reader)
        longest, total = self._measure()
        if total > self.budget:
            self._skip_furthest_behind(longest, total)

    def detach(self, reader: Reader) -> None:
        """The reader leaves; what was queued for it is let go of at once."""
        try:
            self._readers.remove(reader)
        except ValueError:
            return
        reader.attached = 0
        if reader is self._sizer:  # once per session, not per NAWS: a scan is fine here
            self._sizer = next(
                (r for r in reversed(self._readers) if r.control and r.window_size is not None), None
            )
        reader.outbox.drop()
        self._queues_now(self._measure()[1])

    def broadcast(self, data: bytes) -> None:
        """Child output or a server message: log, stdout, history and every reader. Never waits."""
        if not data:
            return
        stamp = stamped = None
        if self.stamp is not None:
            stamp = self.stamp()
            stamped = self._stamper.apply(data, stamp)
        if self.log is not None:
            notice = self.log.write(stamped if stamped is not None else data)
            if notice is not None:
                self._to_readers(notice)
                if self.on_log_notice is not None:
                    self.on_log_notice(notice)
        if self.echo is not None:
            self.echo(data)
        self.history.feed(data)
        if self.browser_history is not self.history:
            self.browser_history.feed(data)
        for tap in self.taps:
            tap(data)
        self._to_readers(data, stamped, stamp)

    def notify(self, data: bytes) -> None:
        """A notice for the readers only (the log cannot take it: it is about the log)."""
        self._to_readers(data)

    def _to_readers(self, data: bytes, stamped: bytes | None = None, stamp: bytes | None = None) -> None:
        # The forms by Reader.form; the telnet ones are made on first use.
        forms: list[bytes | None] = [data, None, data if stamped is None else stamped, None]
        longest = [0, 0, 0, 0]  # the longest queue of each form
        own = 0  # bytes queued for one reader alone, all readers together
        for reader in self._readers:
            form = reader.form
            chunk = forms[form]
            if chunk is None:
                chunk = forms[form] = TelnetConnection.encode(forms[form - 1])  # type: ignore[arg-type]
            outbox = reader.outbox
            if reader.owes_stamp and stamp is not None:
                outbox.put(TelnetConnection.encode(stamp) if reader.telnet else stamp)
                reader.owes_stamp = False
            outbox.share(chunk)
            own += outbox.own
            if outbox.queued > longest[form]:
                longest[form] = outbox.queued
        total = longest[0] + longest[1] + longest[2] + longest[3] + own
        if total > self.budget:
            total = self._skip_furthest_behind(longest, total)
        if total > self._high_water:
            self._high_water = total
        elif total < self._high_water:
            self._queues_now(total)

    def _measure(self) -> tuple[list[int], int]:
        """The longest queue of each form, and what the budget counts: those and all own bytes."""
        longest = [0, 0, 0, 0]
        own = 0
        for reader in self._readers:
            longest[reader.form] = max(longest[reader.form], reader.outbox.queued)
            own += reader.outbox.own
        return longest, sum(longest) + own

    def _queues_now(self, total: int) -> None:
        # The queues shrank well below their peak (readers caught up, skipped or left): give the
        # freed chunks back to the system, which malloc alone does not do for a fragmented heap.
        if total >= self._high_water:
            self._high_water = total
        elif self._high_water - total >= RELEASE_STEP and total < self._high_water // 2:
            release_freed_memory()
            self._high_water = total

    def _skip_furthest_behind(self, longest: list[int], total: int) -> int:
        """Empty the longest queues, longest first, until the total fits the budget; the new total."""
        behind = sorted(self._readers, key=lambda r: r.outbox.queued, reverse=True)
        of_form: list[list[Reader]] = [[], [], [], []]
        for reader in behind:
            of_form[reader.form].append(reader)
        skipped = [0, 0, 0, 0]
        for reader in behind:
            if total <= self.budget:
                break
            form = reader.form
            own = reader.outbox.own
            reader.outbox.skip()
            total -= own - reader.outbox.own
            skipped[form] += 1
            same = of_form[form]
            following = same[skipped[form]].outbox.queued if skipped[form] < len(same) else 0
            total += following - longest[form]
            longest[form] = following
        return total

    def report_window_size(self, reader: Reader, size: tuple[int, int]) -> None:
        """A client's NAWS report, in O(1): a flood of them must not cost per connected reader."""
        reader.window_size = size
        sizer = self._sizer
        if reader.control and reader.attached and (sizer is None or reader.attached >= sizer.attached):
            self._sizer = reader

    def newest_window_size(self) -> tuple[int, int] | None:
        """The size reported by the newest control client that reported one."""
        return self._sizer.window_size if self._sizer is not None else None


def release_freed_memory() -> None:
    """Return free pages inside the heap to the system (glibc's ``malloc_trim``; elsewhere a no-op).

    Chunks of console output are small ``malloc`` blocks; once the readers that held them are
    gone, the pages stay with the process unless they are at the top of the heap.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = lambda pad: 0  # noqa: E731 (not glibc)
    _malloc_trim(0)


_malloc_trim: Callable[[int], int] | None = None


def _write_now(write: Callable[[bytes], int], data: bytes) -> int | None:
    """Bytes written without waiting: 0 when the other side is full, None when it failed."""
    try:
        return write(data)
    except BlockingIOError:
        return 0
    except OSError:
        return None


@final
class InputQueue:
    """Client input waiting for the child; bounded, so a child that never reads costs no more.

    With ``direct`` set (a non-blocking write to the pty), input goes straight to the child
    while nothing is queued: a keystroke's echo comes back without a task switch.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._ready = trio.Event()
        self.direct: Callable[[bytes], int] | None = None
        self.sending = True  # until the writer task waits for input

    def offer(self, data: bytes) -> int:
        """Queue what fits; returns how many bytes were dropped."""
        if self.direct is not None and not self._buf and not self.sending:
            sent = _write_now(self.direct, data)
            if sent is None:
                self.direct = None
            elif sent == len(data):
                return 0
            else:
                data = data[sent:]
        room = self.limit - len(self._buf)
        taken = data[: max(0, room)]
        if taken:
            self._buf += taken
            self._ready.set()
        return len(data) - len(taken)

    def clear(self) -> None:
        self._buf.clear()

    async def get(self) -> bytes:
        self.sending = False
        while not self._buf:
            self._ready = trio.Event()
            await self._ready.wait()
        self.sending = True
        data = bytes(self._buf)
        self._buf.clear()
        return data
