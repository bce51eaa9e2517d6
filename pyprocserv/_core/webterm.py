"""A sans-IO codec for the browser console: xterm.js on the far end of one WebSocket.

Rules:
1. No I/O. Messages go in with :meth:`WebTermConnection.receive_message` (``bytes``: a binary
   frame, ``str``: a text frame); what the browser meant comes out of
   :meth:`WebTermConnection.events`. Arbitrary input never raises: a message that breaks the
   protocol gives one :class:`Closed` event, and everything after it is ignored.
2. The events are the telnet codec's where they mean the same (``Data``: keys typed;
   ``WindowSize``: the terminal's size), so one session handler table serves both kinds of
   console; :class:`Ready` and :class:`Closed` are the browser's own.
3. Binary frames are keys as typed (no telnet escaping). A text frame is one JSON object of at
   most ``MAX_TEXT`` characters: ``{"resize": [columns, rows]}`` (integers 1..65535) or
   ``{"ready": true}``. Unknown keys are ignored, so a newer page works with this server; a
   known key with a bad value, a text that is not a JSON object, or a longer one is a
   protocol error.
4. Keys are held back until the browser is ready: ``Data`` before ``{"ready": true}`` is
   dropped. The page sends it once it has written the replay, so the answers xterm.js gives to
   terminal queries inside the replay never reach the child. Window sizes count at once (the
   page is sized before it replays).
5. Output to the browser is the console's bytes as they are, in binary frames, and one text
   frame, :data:`REPLAY_END`, after the greeting and the history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Union, final

from .telnet import Data, WindowSize

# A longer text frame is not one of ours (a resize is about 20 characters).
MAX_TEXT = 1024
MAX_SIZE = 0xFFFF  # what a pty's window size (and NAWS) can hold
# The text frame that ends the replay: what follows is live.
REPLAY_END = '{"replayed": true}'


@dataclass(frozen=True, slots=True)
class Ready:
    """The browser has written the replay: keys from now on are typed by a person."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The browser broke the protocol; the connection should end. Nothing follows."""

    reason: str


Event = Union[Data, WindowSize, Ready, Closed]


@final
class WebTermConnection:
    """One browser's side of a console: whether it is ready, and whether it broke the protocol."""

    def __init__(self) -> None:
        self.ready = False
        self.closed = False
        self._events: list[Event] = []

    def receive_message(self, message: bytes | str) -> None:
        """One frame from the browser: bytes for a binary frame, str for a text frame."""
        if self.closed:
            return
        if isinstance(message, (bytes, bytearray, memoryview)):
            if self.ready and message:
                self._events.append(Data(bytes(message)))
        elif isinstance(message, str):
            self._text(message)
        else:
            self._close(f"a message must be bytes or text, not {type(message).__name__}")

    def events(self) -> list[Event]:
        """The events since the last call, in order."""
        events, self._events = self._events, []
        return events

    def _text(self, text: str) -> None:
        if len(text) > MAX_TEXT:
            self._close(f"a text message longer than {MAX_TEXT} characters")
            return
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError):
            self._close("a text message that is not JSON")
            return
        if not isinstance(fields, dict):
            self._close("a text message that is not a JSON object")
            return
        if "resize" in fields:
            size = fields["resize"]
            if not _is_size(size):
                self._close(f"resize must be [columns, rows], each 1..{MAX_SIZE}")
                return
            self._events.append(WindowSize(columns=size[0], rows=size[1]))
        if "ready" in fields:
            if fields["ready"] is not True:
                self._close("ready must be true")
                return
            if not self.ready:
                self.ready = True
                self._events.append(Ready())

    def _close(self, reason: str) -> None:
        self.closed = True
        self._events.append(Closed(reason))


def _is_size(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(type(n) is int and 1 <= n <= MAX_SIZE for n in value)
    )
