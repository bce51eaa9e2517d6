"""Key handling: what a control client's typed bytes command, and what reaches the child.

Rules (procServ 2.7.0, behaviour §3.2 and §4.4):
1. Commands are acted on byte by byte, in arrival order, and a chunk sees one state: whether a
   child runs is fixed for the whole chunk (a kill is only reaped later).
2. While no child runs, ^R or the kill character request a start and ^Q quits the server.
   The logout, toggle and kill characters act in every state.
3. After the commands, the whole chunk goes to the child minus the ignored bytes: ``--ignore``
   plus the kill, toggle and logout characters. ^R and ^Q are not added: while a child runs they
   reach it. NUL is dropped whenever an ignore set exists (procServ's ``index()`` matches the
   string's terminator), so telnet's CR NUL reaches the child as CR.
4. Input while no child runs is dropped (the caller does that: it has nowhere to go).
No I/O, no state: :func:`scan` is a pure function of the key map, the bytes and the state.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

RESTART_CHAR = 0x12  # ^R, fixed in procServ
QUIT_CHAR = 0x11  # ^Q, fixed in procServ
KILL_CHAR = 0x18  # ^X, -k
TOGGLE_CHAR = 0x14  # ^T, --autorestartcmd


class Key(enum.Enum):
    """A command typed on a control connection."""

    START = "start"  # ^R, or ^X while no child runs
    QUIT = "quit"  # ^Q while no child runs
    LOGOUT = "logout"  # -x
    TOGGLE = "toggle"  # ^T
    KILL = "kill"  # ^X while a child runs


def parse_char(spec: str | bytes | None) -> int:
    """procServ's getOptionChar: ``^A``..``^Z`` (uppercase), ``^^`` for ``^``, else the first byte.

    ``""`` disables the command (0). ``^a``, ``^[`` and ``^]`` all mean ``^``: procServ reads
    only an uppercase letter after the caret.
    """
    raw = os.fsencode(spec) if isinstance(spec, str) else (spec or b"")
    if not raw:
        return 0
    if raw[:2] == b"^^":
        return ord("^")
    if raw[0:1] == b"^" and len(raw) > 1 and 0x41 <= raw[1] <= 0x5A:
        return raw[1] - 64
    return raw[0]


def parse_ignore(spec: str | bytes) -> bytes:
    """procServ's ``--ignore`` scan: ``^^`` is ``^``, ``^A``..``^Z`` control characters, else literal.

    So procServUtils' ``^D^C^]`` ignores ^D, ^C, ``^`` and ``]`` (not 0x1d), as procServ does.
    """
    raw = os.fsencode(spec) if isinstance(spec, str) else spec
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 2] == b"^^":
            out.append(ord("^"))
            i += 2
        elif raw[i : i + 1] == b"^" and i + 1 < len(raw) and 0x41 <= raw[i + 1] <= 0x5A:
            out.append(raw[i + 1] - 64)
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class KeyMap:
    """The command characters of one server (0 disables one) and the ``--ignore`` set."""

    kill: int = KILL_CHAR
    toggle: int = TOGGLE_CHAR
    logout: int = 0
    ignore: bytes | None = None  # None: no --ignore given
    restart: int = RESTART_CHAR
    quit: int = QUIT_CHAR
    dropped: bytes = field(init=False, repr=False)
    _others: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        dropped = bytearray(self.ignore or b"")
        for char in (self.kill, self.toggle, self.logout):
            if char:
                dropped.append(char)
        if self.ignore is not None or self.kill or self.toggle or self.logout:
            dropped.append(0)
        object.__setattr__(self, "dropped", bytes(sorted(set(dropped))))
        chars = {self.kill, self.toggle, self.logout, self.restart, self.quit} - {0}
        # Deleting every other byte leaves just the command bytes, in order, without a Python loop.
        object.__setattr__(self, "_others", bytes(b for b in range(256) if b not in chars))

    def scan(self, data: bytes, child_running: bool) -> tuple[list[Key], bytes]:
        """The commands in ``data``, in order, and the bytes that go on to the child."""
        keys: list[Key] = []
        for byte in data.translate(None, self._others):
            if not child_running:
                if byte == self.restart or byte == self.kill:
                    keys.append(Key.START)
                if byte == self.quit:
                    keys.append(Key.QUIT)
            if byte == self.logout:
                keys.append(Key.LOGOUT)
            if byte == self.toggle:
                keys.append(Key.TOGGLE)
            if byte == self.kill and child_running:
                keys.append(Key.KILL)
        to_child = data.translate(None, self.dropped) if self.dropped else data
        return keys, to_child
