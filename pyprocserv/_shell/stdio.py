"""Standard input and output without making them non-blocking.

``trio.lowlevel.FdStream`` would set O_NONBLOCK on the open file description, which a terminal
or a journald pipe shares with the shell and other processes. So output goes through a worker
thread doing plain blocking writes, and input waits for readability and then reads.
"""

from __future__ import annotations

import errno
import os
import termios
from typing import final

import trio

from .console import Outbox

STDOUT_QUEUE_LIMIT = 8 << 20


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@final
class StdoutWriter:
    """Queues output for a file descriptor and writes it from a worker thread (``-L -``, ``-d``)."""

    def __init__(self, fd: int = 1, limit: int = STDOUT_QUEUE_LIMIT) -> None:
        self.fd = fd
        self.outbox = Outbox(limit)
        self.broken = False
        self._finished = trio.Event()

    # the log-file interface the console uses
    def write(self, data: bytes) -> None:
        if not self.broken:
            self.outbox.share(data)

    def close(self) -> None:
        """No more output: :meth:`run` writes what is queued, then ends."""
        self.outbox.close()

    async def finished(self) -> None:
        """Wait until :meth:`run` has ended: everything queued is written, or stdout broke."""
        await self._finished.wait()

    async def run(self) -> None:
        try:
            while (data := await self.outbox.get()) is not None:
                try:
                    await trio.to_thread.run_sync(_write_all, self.fd, data)
                except OSError as exc:
                    if exc.errno not in (errno.EPIPE, errno.EBADF, errno.EIO):
                        raise
                    self.broken = True  # nobody reads our stdout any more
                    return
        finally:
            self._finished.set()


@final
class TerminalStream(trio.abc.Stream):
    """The foreground console (``-f``) as a stream: keystrokes in, console output out."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self._pollable = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or 4096
        if self._pollable:
            try:
                await trio.lowlevel.wait_readable(self.fd_in)
            except OSError:
                self._pollable = False  # epoll refuses regular files and /dev/null
        if self._pollable:
            try:
                return os.read(self.fd_in, size)
            except BlockingIOError:
                return await self.receive_some(max_bytes)
        return await trio.to_thread.run_sync(os.read, self.fd_in, size, abandon_on_cancel=True)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await trio.to_thread.run_sync(_write_all, self.fd_out, bytes(data))
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class RawTerminal:
    """Puts a terminal in the console's mode for as long as the ``with`` lasts.

    Keys go straight to the child: no line editing, no local echo (the child's pty echoes),
    no flow control and no signals from ^C or ^\\ (they are bytes for the child; -i filters them),
    and no second CR before the console's own CRLF.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._saved: list | None = None

    def __enter__(self) -> "RawTerminal":
        try:
            self._saved = termios.tcgetattr(self.fd)
        except termios.error:
            return self  # not a terminal: nothing to set or restore
        mode = termios.tcgetattr(self.fd)
        mode[0] &= ~termios.IXON
        mode[1] &= ~termios.ONLCR  # console output already ends lines in \r\n
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
