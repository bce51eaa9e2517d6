"""The console log: per-line time stamps, the history ring, and the ``-L`` file.

The log gets exactly the bytes broadcast on the console (child output with the pty's CRLF and
echo, plus every ``@@@`` message), as procServ writes them. Stamping and the history are pure
and work on whole chunks with C-level bytes methods, not per byte in Python.

Rules (size-based rotation, host mode's logs):
1. With ``max_bytes``, a write that would take the file past it first renames ``LOG`` to
   ``LOG.1`` (``LOG.1`` to ``LOG.2``, ..., the oldest beyond ``backups`` is removed), then goes
   whole into a new ``LOG``: a rotation loses no byte and never splits a write. A write larger
   than ``max_bytes`` on its own still goes whole into one file.
2. Which renames a rotation makes (:func:`rotation_renames`), when it is due
   (:func:`rotation_due`) and sizes such as ``10M`` (:func:`parse_size`) are pure functions.
3. A reader following a log (:func:`follow`) reads the old file to its end before it turns to
   the new one, so it too misses nothing across a rotation.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Callable, Iterator, final

from . import _messages as messages

ROTATE_MAX_BYTES = 10 * 1024 * 1024  # host mode's defaults: 10 MiB a file, 5 old files kept
ROTATE_BACKUPS = 5
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``10M`` or ``1G`` (powers of 1024) as bytes; 0 means no rotation."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (bytes, or a number with K, M or G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def rotation_due(size: int, incoming: int, max_bytes: int) -> bool:
    """Rotate before this write? Only with a limit, and never an empty file (a huge write goes whole)."""
    return max_bytes > 0 and size > 0 and size + incoming > max_bytes


def rotation_renames(path: str, backups: int) -> list[tuple[str, str | None]]:
    """The renames of one rotation, oldest first; ``(old, None)`` removes the oldest backup."""
    backups = max(1, backups)
    steps: list[tuple[str, str | None]] = [(f"{path}.{backups}", None)]
    for n in range(backups - 1, 0, -1):
        steps.append((f"{path}.{n}", f"{path}.{n + 1}"))
    steps.append((path, f"{path}.1"))
    return steps


def log_files(path: str) -> list[str]:
    """A log and its numbered backups that exist, newest first (``logs`` lists and reads these)."""
    backups = []
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        names = []
    for name in names:
        number = name[len(base) + 1:] if name.startswith(base + ".") else ""
        if number.isdigit():
            backups.append((int(number), os.path.join(directory, name)))
    return ([path] if os.path.exists(path) else []) + [name for _, name in sorted(backups)]


def tail(paths: list[str], lines: int) -> bytes:
    """The last ``lines`` lines of the log whose files are ``paths`` (newest first)."""
    if lines <= 0:
        return b""
    data = b""
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read() + data
        except OSError:
            continue  # rotated away meanwhile
        if data.count(b"\n") > lines:
            break
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    cut = end
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]


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
    writing resumes, with another notice, as soon as a write succeeds again. With ``max_bytes``
    (host mode) the file is rotated by size, keeping ``backups`` old files (rules above).
    """

    def __init__(self, path: str, fd: int | None = None, *, max_bytes: int = 0,
                 backups: int = ROTATE_BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = fd
        self._size = 0
        self.failing: str | None = None
        if self._fd is None:
            self._fd = self._open()
        elif max_bytes:
            self._size = os.fstat(fd).st_size

    def _open(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self.failing = exc.strerror or str(exc)
            return None
        self._size = os.fstat(fd).st_size
        return fd

    def _rotate(self) -> None:
        """Rename the file and its backups one step older; the next write opens a new file."""
        self.close()
        for old, new in rotation_renames(self.path, self.backups):
            try:
                if new is None:
                    os.unlink(old)
                else:
                    os.replace(old, new)
            except FileNotFoundError:
                pass  # fewer backups than kept so far

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def write(self, data: bytes) -> bytes | None:
        """Write all of ``data``; returns a notice for the clients when the state changes."""
        if self._fd is not None and rotation_due(self._size, len(data), self.max_bytes):
            try:
                self._rotate()
            except OSError:
                pass  # cannot rename: go on appending to the file we have (reopened below)
        if self._fd is None:
            self._fd = self._open()
            if self._fd is None:
                return None
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
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


def follow(path: str, wait: Callable[[], None], *, start: int = 0) -> Iterator[bytes]:
    """The bytes of ``path`` from ``start``, then whatever is appended, across rotations.

    ``wait`` is called when there is nothing new (a sleep). When ``path`` names a new file (a
    rotation renamed ours), the rest of the old file comes first, then the new one from its start.
    """
    current = open(path, "rb")  # not a with: it is replaced at each rotation
    try:
        current.seek(start)
        while True:
            data = current.read(65536)
            if data:
                yield data
                continue
            try:
                renamed = os.stat(path).st_ino != os.fstat(current.fileno()).st_ino
            except FileNotFoundError:
                renamed = False  # between the rename and the new file's creation
            if renamed:
                rest = current.read()
                if rest:
                    yield rest
                current.close()
                current = open(path, "rb")
                continue
            wait()
    finally:
        current.close()
