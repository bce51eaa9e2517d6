"""The console log's pure rules: per-line time stamps, the history ring, rotation by size.

Stamping and the history work on whole chunks with C-level bytes methods, not per byte in
Python. The file itself (``-L``, rotation's renames, following a log) is ``_shell/logfile.py``.

Rules (size-based rotation, host mode's logs):
1. With ``max_bytes``, a write that would take the file past it first renames ``LOG`` to
   ``LOG.1`` (``LOG.1`` to ``LOG.2``, ..., the oldest beyond ``backups`` is removed), then goes
   whole into a new ``LOG``: a rotation loses no byte and never splits a write. A write larger
   than ``max_bytes`` on its own still goes whole into one file.
2. Which renames a rotation makes (:func:`rotation_renames`), when it is due
   (:func:`rotation_due`) and sizes such as ``10M`` (:func:`parse_size`) are decided here.
"""

from __future__ import annotations

import re
from typing import final

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
