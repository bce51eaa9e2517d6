"""The console log: per-line time stamps, the history ring, and the ``-L`` file.

The log gets exactly the bytes broadcast on the console (child output with the pty's CRLF and
echo, plus every ``@@@`` message), as procServ writes them. Stamping and the history are pure
and work on whole chunks with C-level bytes methods, not per byte in Python.
"""

from __future__ import annotations

import errno
import os
from typing import final

from . import _messages as messages


@final
class LineStamper:
    """Puts a stamp before the first byte of every line, across chunk boundaries (--logstamp)."""

    def __init__(self) -> None:
        self.at_line_start = True

    def apply(self, data: bytes, stamp: bytes) -> bytes:
        if not data:
            return data
        out = (b"\n" + stamp).join(data.split(b"\n"))
        if data.endswith(b"\n"):
            out = out[: len(out) - len(stamp)]  # the next line has not begun yet
        if self.at_line_start:
            out = stamp + out
        self.at_line_start = data.endswith(b"\n")
        return out


@final
class History:
    """The last ``lines`` lines of console output (and the line in progress), for new clients.

    Bounded in bytes too, so a child that never writes a newline cannot grow it without end.
    """

    def __init__(self, lines: int, max_bytes: int | None = None) -> None:
        self.lines = max(0, lines)
        self.max_bytes = max_bytes if max_bytes is not None else max(1 << 16, self.lines * 1024)
        self._buf = bytearray()
        self._trim_at = self.max_bytes
        self._replay: bytes | None = None  # one copy for every client that attaches until new output

    def feed(self, data: bytes) -> None:
        if not self.lines:
            return
        self._replay = None
        self._buf += data
        if len(self._buf) > self._trim_at:
            self._trim()
            # Trim again once the buffer has grown by half: amortised O(1) per byte.
            self._trim_at = max(len(self._buf) * 3 // 2, 4096)

    def replay(self) -> bytes:
        if not self.lines:
            return b""
        if self._replay is None:
            self._trim()
            self._replay = bytes(self._buf)
        return self._replay

    def _trim(self) -> None:
        buf = self._buf
        end = len(buf)
        if buf.endswith(b"\n"):
            end -= 1  # the final newline closes the last line; it does not start one
        cut = end
        for _ in range(self.lines):
            cut = buf.rfind(b"\n", 0, cut)
            if cut < 0:
                break
        if cut >= 0:
            del buf[: cut + 1]
        if len(buf) > self.max_bytes:
            del buf[: len(buf) - self.max_bytes]


@final
class LogFile:
    """The ``-L`` file: opened for append, reopened on SIGHUP, never fatal to the server.

    A write that fails (disk full, file system gone) yields one ``@@@`` notice for the clients;
    writing resumes, with another notice, as soon as a write succeeds again.
    """

    def __init__(self, path: str, fd: int | None = None) -> None:
        self.path = path
        self._fd = fd
        self.failing: str | None = None
        if self._fd is None:
            self._fd = self._open()

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self.failing = exc.strerror or str(exc)
            return None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def write(self, data: bytes) -> bytes | None:
        """Write all of ``data``; returns a notice for the clients when the state changes."""
        if self._fd is None:
            self._fd = self._open()
            if self._fd is None:
                return None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            if self.failing is None:
                self.failing = reason
                return messages.log_error(self.path, reason)
            return None
        if self.failing is not None:
            self.failing = None
            return messages.log_resumed(self.path)
        return None

    def reopen(self) -> bytes | None:
        """SIGHUP: close and open the same path again (after a rename by logrotate)."""
        self.close()
        self._fd = self._open()
        if self._fd is None:
            return messages.log_error(self.path, self.failing or "cannot open")
        return None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
