"""A sans-IO telnet codec for the server side of a console connection (h11 style).

Rules:
1. No I/O. Bytes go in with :meth:`TelnetConnection.receive_data`; what the peer meant comes
   out of :meth:`TelnetConnection.events`; negotiation replies wait in
   :meth:`TelnetConnection.data_to_send`. Arbitrary input never raises.
2. Option negotiation follows RFC 1143's Q method, as libtelnet (inside procServ) does, so
   replies never loop. We offer WILL ECHO and DO LINEMODE (procServ's table) and refuse every
   other option, except NAWS (window size), which we accept.
3. A request that changes nothing gets no answer (RFC 854's rule against acknowledging a mode
   already in effect): a repeated WILL/DO for an enabled option, WONT/DONT for a disabled one,
   and a request for an option we already refused once. So a peer gets at most one reply per
   request that changed an option, plus one refusal per option and side: replies never outgrow
   what it sends, and an option storm costs no reply bytes once every option is settled.
4. We ask for NAWS (IAC DO NAWS) only once the peer has negotiated something itself: a peer
   that speaks telnet can answer it, and a raw client (socat, nc, a procServControl scraper)
   sees exactly procServ's bytes.
5. Chunk boundaries do not matter: events for a stream are the same however it is split
   (adjacent Data events are merged until :meth:`events` is called).
6. The cost is a few Python operations per command, not per byte: plain data is sliced in C, and
   a whole ``IAC verb option`` or NAWS report inside one chunk is read in one step. (How much
   input a caller feeds per turn of its event loop is the caller's bound, not ours.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union, final

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
SE = 240

ECHO = 1
SGA = 3
NAWS = 31
LINEMODE = 34

_IAC = b"\xff"
_SE = b"\xff\xf0"
# Longest subnegotiation we keep; anything longer is a broken or hostile peer.
MAX_SUBNEGOTIATION = 512


# -- events (frozen; do not subclass) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes the peer typed, with IAC IAC already turned back into one 0xFF."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Command:
    """A bare ``IAC <code>`` (NOP, AYT, IP, BRK, ...). procServ ignores them, and so do we."""

    code: int


@dataclass(frozen=True, slots=True)
class OptionChanged:
    """An option was switched on or off. ``local``: our side (WILL/WONT), else the peer's."""

    option: int
    local: bool
    enabled: bool


@dataclass(frozen=True, slots=True)
class WindowSize:
    """The peer's terminal size from NAWS (RFC 1073); 0 means unknown."""

    columns: int
    rows: int


@dataclass(frozen=True, slots=True)
class Subnegotiation:
    """``IAC SB option ... IAC SE`` for an option we do not interpret."""

    option: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; the codec has recovered and goes on."""

    reason: str


Event = Union[Data, Command, OptionChanged, WindowSize, Subnegotiation, ProtocolError]


class _Q(enum.Enum):
    NO = 0
    YES = 1
    WANTNO = 2
    WANTYES = 3


class _State(enum.Enum):
    DATA = 0
    IAC = 1
    VERB = 2  # after IAC WILL/WONT/DO/DONT, waiting for the option byte
    SB_OPTION = 3
    SB_DATA = 4
    SB_IAC = 5


@final
class TelnetConnection:
    """One peer's telnet state: options both ways and the parser position."""

    def __init__(
        self,
        *,
        local_options: frozenset[int] = frozenset({ECHO}),
        remote_options: frozenset[int] = frozenset({LINEMODE, NAWS}),
        solicit_remote: frozenset[int] = frozenset({NAWS}),
    ) -> None:
        self._local_ok = local_options
        self._remote_ok = remote_options
        self._solicit = solicit_remote
        self._us: dict[int, _Q] = {}
        self._him: dict[int, _Q] = {}
        self._refused_us: set[int] = set()  # options refused once: asked again, we stay silent
        self._refused_him: set[int] = set()
        self._state = _State.DATA
        self._verb = 0
        self._sb_option = 0
        self._sb = bytearray()
        self._sb_overflow = False
        self._events: list[Event] = []
        self._pending = bytearray()
        self._out = bytearray()
        self._peer_negotiated = False

    # -- public API ----------------------------------------------------------------------

    def initiate(self, will: tuple[int, ...] = (ECHO,), do: tuple[int, ...] = (LINEMODE,)) -> bytes:
        """The opening offer (procServ's: IAC WILL ECHO, IAC DO LINEMODE), to send after the greeting."""
        wire = bytearray()
        for option in will:
            self._us[option] = _Q.WANTYES
            wire += bytes((IAC, WILL, option))
        for option in do:
            self._him[option] = _Q.WANTYES
            wire += bytes((IAC, DO, option))
        return bytes(wire)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer. Never raises."""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state is _State.DATA or state is _State.SB_DATA:
                # Runs of plain bytes are sliced in C, not walked in Python.
                iac = data.find(_IAC, pos)
                stop = end if iac < 0 else iac
                if stop > pos:
                    if state is _State.DATA:
                        self._pending += data[pos:stop]
                    else:
                        self._sb_extend(data[pos:stop])
                if iac < 0:
                    return
                pos = iac + 1
                if state is _State.DATA:
                    # Whole commands in one step (an option storm is thousands of them).
                    verb = data[pos] if pos < end else 0
                    if WILL <= verb <= DONT and pos + 1 < end:
                        self._negotiate(verb, data[pos + 1])
                        pos += 2
                        continue
                    # IAC SB option w w h h IAC SE: a window size, the other flood.
                    if verb == SB and data[pos + 6 : pos + 8] == _SE and _IAC not in data[pos + 1 : pos + 6]:
                        self._subnegotiated(data[pos + 1], data[pos + 2 : pos + 6])
                        pos += 8
                        continue
                self._state = _State.IAC if state is _State.DATA else _State.SB_IAC
                continue
            byte = data[pos]
            pos += 1
            self._step(byte)

    def events(self) -> list[Event]:
        """Everything the peer said since the last call."""
        self._flush_data()
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        """Negotiation replies owed to the peer since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def local_enabled(self, option: int) -> bool:
        return self._us.get(option, _Q.NO) is _Q.YES

    def remote_enabled(self, option: int) -> bool:
        return self._him.get(option, _Q.NO) is _Q.YES

    @staticmethod
    def encode(data: bytes) -> bytes:
        """Console output for the wire: every 0xFF doubled, nothing else touched (as procServ)."""
        return data.replace(_IAC, b"\xff\xff") if _IAC in data else data

    # -- parser ---------------------------------------------------------------------------

    def _flush_data(self) -> None:
        if self._pending:
            self._events.append(Data(bytes(self._pending)))
            self._pending.clear()

    def _emit(self, event: Event) -> None:
        self._flush_data()
        self._events.append(event)

    def _step(self, byte: int) -> None:
        state = self._state
        if state is _State.IAC:
            if byte == IAC:
                self._pending.append(IAC)
                self._state = _State.DATA
            elif byte in (WILL, WONT, DO, DONT):
                self._verb = byte
                self._state = _State.VERB
            elif byte == SB:
                self._state = _State.SB_OPTION
            else:
                self._emit(Command(byte))
                self._state = _State.DATA
        elif state is _State.VERB:
            self._state = _State.DATA
            self._negotiate(self._verb, byte)
        elif state is _State.SB_OPTION:
            self._sb_option = byte
            self._sb.clear()
            self._sb_overflow = False
            self._state = _State.SB_DATA
        elif state is _State.SB_IAC:
            if byte == IAC:
                self._sb_extend(_IAC)
                self._state = _State.SB_DATA
            elif byte == SE:
                self._state = _State.DATA
                self._subnegotiation()
            else:
                # A command inside a subnegotiation ends it abnormally (libtelnet does the same):
                # drop it and read the byte as the command that follows IAC.
                self._emit(ProtocolError("subnegotiation interrupted by IAC %d" % byte))
                self._state = _State.IAC
                self._step(byte)

    def _sb_extend(self, chunk: bytes) -> None:
        room = MAX_SUBNEGOTIATION - len(self._sb)
        if len(chunk) > room:
            self._sb_overflow = True
            chunk = chunk[:room]
        self._sb += chunk

    def _subnegotiation(self) -> None:
        option, payload = self._sb_option, bytes(self._sb)
        self._sb.clear()
        if self._sb_overflow:
            self._emit(ProtocolError("subnegotiation of option %d too long" % option))
        else:
            self._subnegotiated(option, payload)

    def _subnegotiated(self, option: int, payload: bytes) -> None:
        if option == NAWS and self._him.get(NAWS) is _Q.YES:
            if len(payload) == 4:
                self._emit(
                    WindowSize(columns=payload[0] << 8 | payload[1], rows=payload[2] << 8 | payload[3])
                )
            else:
                self._emit(ProtocolError("NAWS payload of %d bytes" % len(payload)))
        else:
            self._emit(Subnegotiation(option, payload))

    # -- RFC 1143 --------------------------------------------------------------------------

    def _send(self, verb: int, option: int) -> None:
        self._out += bytes((IAC, verb, option))

    def _negotiate(self, verb: int, option: int) -> None:
        first = not self._peer_negotiated
        self._peer_negotiated = True
        if verb in (WILL, WONT):  # about the peer's side: we answer DO/DONT
            self._answer(self._him, self._remote_ok, verb == WILL, option, local=False)
        else:  # about our side: we answer WILL/WONT
            self._answer(self._us, self._local_ok, verb == DO, option, local=True)
        if first:
            for wanted in sorted(self._solicit):
                if self._him.get(wanted, _Q.NO) is _Q.NO:
                    self._him[wanted] = _Q.WANTYES
                    self._send(DO, wanted)

    def _answer(self, states: dict[int, _Q], supported: frozenset[int], enable: bool, option: int,
                *, local: bool) -> None:
        """RFC 1143 for one side of one option: ``enable`` is WILL/DO, else WONT/DONT."""
        yes, no = (WILL, WONT) if local else (DO, DONT)
        q = states.get(option, _Q.NO)
        if enable:
            if q is _Q.NO:
                if option in supported:
                    states[option] = _Q.YES
                    self._send(yes, option)
                    self._emit(OptionChanged(option, local=local, enabled=True))
                else:
                    refused = self._refused_us if local else self._refused_him
                    if option not in refused:  # once: the peer has our answer (rule 3)
                        refused.add(option)
                        self._send(no, option)
            elif q is _Q.WANTYES:
                states[option] = _Q.YES
                self._emit(OptionChanged(option, local=local, enabled=True))
            elif q is _Q.WANTNO:
                states[option] = _Q.NO  # our refusal answered by an offer: the peer is confused
                asked = "DO" if local else "WILL"
                self._emit(ProtocolError(f"{asked} {option} in answer to our refusal"))
        elif q is _Q.YES:
            states[option] = _Q.NO
            self._send(no, option)
            self._emit(OptionChanged(option, local=local, enabled=False))
        elif q in (_Q.WANTNO, _Q.WANTYES):
            states[option] = _Q.NO
