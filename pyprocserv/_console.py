"""The console hub: one broadcast of everything the child and the server say, to every reader.

Rules (design.md §3):
1. :meth:`Console.broadcast` never waits. It writes the log file, feeds the history, and appends
   to each client's :class:`Outbox`; each client's own task sends what has queued up, all of it
   in one ``send_all`` (coalescing is what makes many clients cheap).
2. A client whose queue passes its limit loses its *oldest* queued output, not anybody's
   time: the queue is emptied and the client later reads an ``@@@`` notice with the number
   of bytes it missed. Everyone else, the log and the child go on at full speed.
3. The log file gets every byte, in order, whatever the clients do.
4. Routing is procServ's (reference §2): control clients get the bytes with 0xFF doubled; log
   clients the same with per-line stamps when ``--logstamp`` is on; nobody gets stamps but them
   and the log file.
"""

from __future__ import annotations

import collections
from typing import Callable, Iterable, Protocol, final

import trio

from . import _messages as messages
from ._logfile import History, LineStamper
from ._telnet import TelnetConnection


class LogSink(Protocol):
    """Where the log goes: the -L file, or standard output for ``-L -``."""

    def write(self, data: bytes) -> bytes | None:
        """Write everything; a notice for the clients when writing starts or stops failing."""


@final
class Outbox:
    """A bounded queue of bytes for one reader; the writer side never blocks.

    With ``direct`` set (a non-blocking write to the client's socket), :meth:`put` writes at
    once while nothing is queued and the reader's task is not sending, and queues only what
    the socket does not take: one copy and no task switch for a client that keeps up.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self.skipped = 0
        self.total_skipped = 0
        self._closed = False
        self._ready = trio.Event()
        self.direct: Callable[[bytes], int] | None = None
        self.sending = True  # until the reader's task waits for data

    @property
    def queued(self) -> int:
        return self._size

    def put(self, data: bytes) -> None:
        if self._closed or not data:
            return
        if self.direct is not None and not self._chunks and not self.sending:
            sent = _write_now(self.direct, data)
            if sent is None:
                self.direct = None  # the socket failed: the reader's task will see it and end
            elif sent == len(data):
                return
            else:
                data = data[sent:]
        if self._size + len(data) > self.limit and self._chunks:
            self.skipped += self._size
            self.total_skipped += self._size
            self._chunks.clear()
            self._size = 0
        self._chunks.append(data)
        self._size += len(data)
        self._ready.set()

    def close(self) -> None:
        """No more data will come; the reader gets what is queued, then the end."""
        self._closed = True
        self._ready.set()

    async def get(self) -> bytes | None:
        """Everything queued, as one chunk; None once closed and empty.

        The reader's task calls this again once the last chunk has gone out: until then
        :meth:`put` queues instead of writing around it.
        """
        self.sending = False
        while not self._chunks:
            if self._closed:
                return None
            self._ready = trio.Event()
            await self._ready.wait()
        self.sending = True
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self._size = 0
        if self.skipped:
            data = messages.output_skipped(self.skipped) + data
            self.skipped = 0
        return data


def _write_now(write: Callable[[bytes], int], data: bytes) -> int | None:
    """Bytes written without waiting: 0 when the other side is full, None when it failed."""
    try:
        return write(data)
    except BlockingIOError:
        return 0
    except OSError:
        return None


@final
class Reader:
    """A connected reader of the console: a control client, a log client or the terminal."""

    def __init__(self, outbox: Outbox, *, control: bool, telnet: bool, stamped: bool) -> None:
        self.outbox = outbox
        self.control = control
        self.telnet = telnet
        self.stamper = LineStamper() if stamped else None
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
        stamp: Callable[[], bytes] | None = None,
        echo: Callable[[bytes], None] | None = None,
    ) -> None:
        self.log = log
        self.history = History(history_lines)
        self.stamp = stamp  # None: --logstamp is off
        self.echo = echo  # -d: a copy of the log for standard output
        self._log_stamper = LineStamper()
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
        self._attached += 1
        reader.attached = self._attached
        self._readers.append(reader)

    def detach(self, reader: Reader) -> None:
        try:
            self._readers.remove(reader)
        except ValueError:
            pass
        reader.attached = 0
        if reader is self._sizer:  # once per session, not per NAWS: a scan is fine here
            self._sizer = next(
                (r for r in reversed(self._readers) if r.control and r.window_size is not None), None
            )

    def broadcast(self, data: bytes) -> None:
        """Child output or a server message: log, stdout, history and every reader. Never waits."""
        if not data:
            return
        stamp = self.stamp() if self.stamp is not None else None
        if self.log is not None:
            logged = self._log_stamper.apply(data, stamp) if stamp is not None else data
            notice = self.log.write(logged)
            if notice is not None:
                self._to_readers(notice, None)
                if self.on_log_notice is not None:
                    self.on_log_notice(notice)
        if self.echo is not None:
            self.echo(data)
        self.history.feed(data)
        for tap in self.taps:
            tap(data)
        self._to_readers(data, stamp)

    def notify(self, data: bytes) -> None:
        """A notice for the readers only (the log cannot take it: it is about the log)."""
        self._to_readers(data, None)

    def _to_readers(self, data: bytes, stamp: bytes | None) -> None:
        wire = TelnetConnection.encode(data)
        for reader in self._readers:
            if reader.stamper is not None and stamp is not None:
                out = reader.stamper.apply(data, stamp)
                reader.outbox.put(TelnetConnection.encode(out) if reader.telnet else out)
            else:
                reader.outbox.put(wire if reader.telnet else data)

    def report_window_size(self, reader: Reader, size: tuple[int, int]) -> None:
        """A client's NAWS report, in O(1): a flood of them must not cost per connected reader."""
        reader.window_size = size
        sizer = self._sizer
        if reader.control and reader.attached and (sizer is None or reader.attached >= sizer.attached):
            self._sizer = reader

    def newest_window_size(self) -> tuple[int, int] | None:
        """The size reported by the newest control client that reported one."""
        return self._sizer.window_size if self._sizer is not None else None


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
