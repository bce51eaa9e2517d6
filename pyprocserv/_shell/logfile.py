"""The console log's files: the ``-L`` file, rotation's renames, reading and following a log.

The log gets exactly the bytes broadcast on the console (child output with the pty's CRLF and
echo, plus every ``@@@`` message), as procServ writes them. The rules (when to rotate, which
renames, stamps, the history ring) are pure and live in ``_core/log.py``.

A reader following a log (:class:`LogReader`, :func:`follow`) reads the old file to its end
before it turns to the new one, so it misses nothing across a rotation. Reading is blocking
file I/O: the web console does it in worker threads (``_web/logview.py``), never on the loop.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Callable, Iterator, final

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


def last_bytes(path: str, limit: int) -> tuple[bytes, int]:
    """The last ``limit`` bytes of the regular file ``path``, and the offset they end at (where
    a reader following it goes on from). Blocking: a caller on an event loop runs it in a thread.

    Anything but a regular file (a FIFO, a device) is refused with an ``OSError`` saying so.
    """
    with open(path, "rb") as f:
        begin = max(0, _regular_size(f, path) - limit)
        f.seek(begin)
        data = f.read(limit)
    return data, begin + len(data)


def open_regular(path: str) -> BinaryIO:
    """``path`` open for reading, refused with an ``OSError`` unless it is a regular file."""
    f = open(path, "rb")
    try:
        _regular_size(f, path)
    except OSError:
        f.close()
        raise
    return f


def _regular_size(f: BinaryIO, path: str) -> int:
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)
    return st.st_size


@final
class LogReader:
    """Reads a log as it is written, across rotations: blocking calls, for one thread at a time.

    Rules:
    1. The first file is opened at the first :meth:`read` (none yet: nothing new, try later);
       reading starts at ``start`` (None: its end then). A ``start`` beyond the file's end
       means the file was rotated or truncated since ``start`` was measured: from its start.
    2. Only the file ``path`` names is written to. Once ``path`` names another file (a rotation
       renamed ours), the rest of ours comes first, then the next newer file from its start: the
       backup ``path.N`` one number below ours (:func:`log_files`), so rotations that happen
       between two reads lose nothing either; a file renamed to no numbered backup (by
       logrotate) is followed by ``path``. A file deleted (the oldest backup, rotated out: the
       reader is more rotations behind than there are backups) is followed by the oldest backup
       left, and counts one in :attr:`lost`: the files rotated out after it, if any, are gone
       unread, how many is unknown. A file shorter than what was read of it (truncated in
       place) is read again from its start. Each new file counts one in :attr:`files`.
    3. A read returns at most ``limit`` bytes, so a reader far behind holds no more than that;
       :meth:`unread` says how far behind it is in its file and :meth:`skip` jumps ahead.
    """

    def __init__(self, path: str, start: int | None = 0) -> None:
        self.path = path
        self.files = 0  # files read so far: counts the rotations and truncations seen
        self.lost = 0  # times whole files may have been rotated out unread (rule 2)
        self._start = start
        self._file: BinaryIO | None = None
        self._pos = 0

    def read(self, limit: int = 65536) -> bytes:
        """Up to ``limit`` new bytes; empty when nothing is new now."""
        if self._file is None and not self._open(self.path):
            return b""
        assert self._file is not None
        data = self._file.read(limit)
        if not data:
            ino = os.fstat(self._file.fileno()).st_ino
            try:
                renamed = os.stat(self.path).st_ino != ino
            except FileNotFoundError:
                renamed = False  # between the rename and the new file's creation
            if renamed:
                data = self._file.read(limit)  # written before the rename, after our read above
                if not data:
                    return self._next_file(ino, limit)
            elif os.fstat(self._file.fileno()).st_size < self._pos:  # truncated in place
                self._file.seek(0)
                self._pos = 0
                self.files += 1
                data = self._file.read(limit)
        self._pos += len(data)
        return data

    def _next_file(self, ino: int, limit: int) -> bytes:
        """Rule 2: ours (inode ``ino``) is read to its end; on to the next newer file."""
        files = log_files(self.path)
        inodes = []
        for name in files:
            try:
                inodes.append(os.stat(name).st_ino)
            except FileNotFoundError:
                inodes.append(None)  # rotated on meanwhile
        assert self._file is not None
        newer = files[inodes.index(ino) - 1] if ino in inodes[1:] else self.path
        if ino not in inodes and os.fstat(self._file.fileno()).st_nlink == 0:  # deleted: rotated out
            newer = files[-1] if files else self.path
            self.lost += 1
        self._file.close()
        self._file, self._start = None, 0
        return self.read(limit) if self._open(newer) else b""

    def unread(self) -> int:
        """Bytes of the file being read that are not read yet (0 before the first file)."""
        if self._file is None:
            return 0
        return max(0, os.fstat(self._file.fileno()).st_size - self._pos)

    def skip(self, count: int) -> None:
        """Go ``count`` bytes forward in the file being read."""
        if self._file is not None and count > 0:
            self._pos += count
            self._file.seek(self._pos)

    def _open(self, name: str) -> bool:
        try:
            self._file = open_regular(name)
        except FileNotFoundError:
            self._start = 0  # not written yet, or between a rename and the new file's creation
            return False
        size = os.fstat(self._file.fileno()).st_size
        start = size if self._start is None else self._start
        self._pos = start if start <= size else 0
        self._file.seek(self._pos)
        self.files += 1
        return True

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            f.close()


def follow(path: str, wait: Callable[[], None], *, start: int = 0) -> Iterator[bytes]:
    """The bytes of ``path`` from ``start``, then whatever is appended, across rotations
    (:class:`LogReader`'s rules). ``wait`` is called when there is nothing new (a sleep)."""
    reader = LogReader(path, start)
    try:
        while True:
            data = reader.read()
            if data:
                yield data
            else:
                wait()
    finally:
        reader.close()
