"""The console log's files: the ``-L`` file, rotation's renames, reading and following a log.

The log gets exactly the bytes broadcast on the console (child output with the pty's CRLF and
echo, plus every ``@@@`` message), as procServ writes them. The rules (when to rotate, which
renames, stamps, the history ring) are pure and live in ``_core/log.py``.

A reader following a log (:func:`follow`) reads the old file to its end before it turns to the
new one, so it misses nothing across a rotation.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Iterator, final

from .._core import messages
from .._core.log import ROTATE_BACKUPS, rotation_due, rotation_renames

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
