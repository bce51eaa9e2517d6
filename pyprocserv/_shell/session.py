"""One client session: a console reader on one stream or message transport, with its outbox and keys.

Rules:
1. A :class:`Session` owns its reader and outbox, its telnet codec and the two tasks that send
   and receive; the server only keeps the list of sessions (:class:`Sessions`).
2. The telnet codec turns bytes into events; each event type has one handler in the session's
   table (:attr:`Session.handlers`), as trio-websocket's server dispatches. Types without a
   handler are negotiation the codec has already answered.
3. A burst of window sizes costs one resize, to the last size, applied before any key typed
   after it reaches the child.
4. Nothing a client does may stop the server: a session ends on its peer's errors, and an error
   of our own is logged and ends that session only.
5. Input is read 1 KiB at a time: each read ends this client's turn, so one client's flood cannot
   hold the loop that every other console and the child's output share. On a message transport
   a message's keys are typed 1 KiB a turn too, and the transport bounds a message's size.
6. A browser console (a :class:`MessageTransport`, codec :mod:`.._core.webterm`) is the same
   kind of reader: the same fan-out, budget and skips, keys and history. Its output is the
   console's bytes as they are (binary messages); after the greeting and the history (the
   ``Config.browser_history`` lines when that is more than ``--history``) comes one
   ``REPLAY_END`` text message, also when the reader fell behind and the rest of the replay was
   skipped. An operator is a control reader; a spy is a log reader that reads the control form
   (no stamps) and whose input, resizes included, is read and dropped. A session the server's
   stop ends closes its transport with ``going_away`` (a WebSocket's close code 1001).
7. A message to a browser carries at most ``MAX_OUTPUT_MESSAGE`` bytes of output: the one queued
   chunk as it is, or queued chunks joined (a copy), and the WebSocket's framing copies it once
   more. One message is in flight per browser at a time, so besides the shared budget a browser
   holds at most two copies of ``MAX_OUTPUT_MESSAGE`` (architecture §3 rule 2's exception).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Iterator, Protocol, cast, final

import trio

from .._core import messages
from .._core.config import Config
from .._core.keys import Key
from .._core.telnet import Data, TelnetConnection, WindowSize
from .._core.webterm import REPLAY_END, Closed, WebTermConnection
from .console import Console, Outbox, Reader
from .supervision import ChildSupervisor

logger = logging.getLogger(__name__)

# Client input is read in small pieces: each read ends the client's turn, so however fast one
# client sends (an option storm is one Python step per 3 bytes), every other task runs within
# about a millisecond. People type, and pastes are small; only the child's output needs big reads.
INPUT_READ_SIZE = 1 << 10
# How long a closing session may take to hand its last bytes to the peer.
FLUSH_MAX = 1.0
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel, OSError)
# The most console output one message to a browser carries (rule 7).
MAX_OUTPUT_MESSAGE = 1 << 16
# Who a browser console is: "operator" types, "spy" only reads (rule 6).
CONSOLE_ROLES = ("operator", "spy")


class MessageTransport(Protocol):
    """A console connection made of whole messages, not a byte stream (a WebSocket).

    ``bytes`` is a binary message, ``str`` a text message. Once the peer has gone or the
    transport is closed, both calls raise ``trio.BrokenResourceError`` or
    ``trio.ClosedResourceError``; :meth:`aclose` may be called more than once.
    """

    async def send_message(self, message: bytes | str) -> None: ...

    async def receive_message(self) -> bytes | str: ...

    async def aclose(self, *, going_away: bool = False) -> None:
        """End the connection; ``going_away``: because the server stops (a WebSocket's 1001)."""


class Host(Protocol):
    """The commands a session needs of its server (``ProcessServer`` is one)."""

    config: Config

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def toggle_autorestart(self) -> object: ...


@final
class Sessions:
    """The server's list of sessions, so that a stop can close them and wait for them to leave."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._open: list[Session] = []
        self.closing = False  # the server stops: sessions end telling their peer it goes away
        self._all_closed = trio.Event()
        self._changed = changed

    def opened(self, session: Session) -> None:
        self._open.append(session)
        self._changed()

    def closed(self, session: Session) -> None:
        self._open.remove(session)
        if not self._open:
            self._all_closed.set()
        self._changed()

    async def close(self, console: Console) -> None:
        """Every reader gets what is queued for it, then its end; wait (a while) until they left."""
        self.closing = True
        for reader in console.readers:
            reader.outbox.close()
        if self._open:
            self._all_closed = trio.Event()
            with trio.move_on_after(FLUSH_MAX):
                await self._all_closed.wait()


@final
class Session:
    def __init__(
        self,
        host: Host,
        console: Console,
        greeting: Callable[..., bytes],  # greeting(control=...): the first bytes a client gets
        supervisor: ChildSupervisor,
        sessions: Sessions,
        link: trio.abc.Stream | MessageTransport,
        *,
        control: bool,
        telnet: bool,
        web: bool = False,
    ) -> None:
        """``web``: ``link`` is a :class:`MessageTransport` to a browser console (rule 6)."""
        config = host.config
        self.reader = Reader(
            Outbox(config.client_queue_limit or config.client_budget),
            control=control,
            telnet=telnet and not web,
            stamped=not control and not web and config.logstamp is not None,
        )
        self._host = host
        self._console = console
        self._greeting = greeting
        self._supervisor = supervisor
        self._sessions = sessions
        self._link = link
        self._codec = TelnetConnection() if telnet and not web else None
        self._web = WebTermConnection() if web else None
        self._replay_left = 0  # bytes of greeting and history before REPLAY_END (rule 6)
        self._pending_size: tuple[int, int] | None = None  # rule 3
        # Rule 2: True from a handler ends the session (the client logged out).
        self.handlers: dict[type, Callable[[object], bool]] = {
            Data: self._on_data,
            WindowSize: self._on_window_size,
            Closed: lambda event: True,  # the browser broke the protocol
        }

    async def run(self) -> None:
        """Greet, attach to the console, serve until either side ends; then let go of everything."""
        console = self._console
        reader = self.reader
        first = self._greeting(control=reader.control)
        if self._codec is not None:
            first += self._codec.initiate()
        reader.outbox.put(first, bounded=False)
        history = (console.browser_history if self._web is not None else console.history).replay()
        if history:  # counted as this client's own: clients that attach at different times hold different ones
            reader.outbox.put(TelnetConnection.encode(history) if reader.telnet else history, bounded=False)
        self._replay_left = len(first) + len(history)
        console.attach(reader)
        self._sessions.opened(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send, nursery.cancel_scope)
                await self._receive()
                nursery.cancel_scope.cancel()
        except Exception:
            logger.exception("pyprocserv: a client session failed")  # our own bug: keep serving everyone else
        finally:
            console.detach(reader)
            if reader.window_size is not None:  # the pty follows the newest client still here
                self.resize()
            self._sessions.closed(self)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(FLUSH_MAX):
                    if self._web is not None:
                        await cast(MessageTransport, self._link).aclose(going_away=self._sessions.closing)
                    else:
                        await self._link.aclose()

    async def _send(self, session: trio.CancelScope) -> None:
        outbox = self.reader.outbox
        stream = self._link
        try:
            if self._web is not None:
                await self._send_messages()
            elif isinstance(stream, trio.SocketStream):
                # Gathering writes straight from the shared chunks: no copy for this client.
                sock = stream.socket
                outbox.writev = functools.partial(os.writev, sock.fileno())
                while await outbox.wait():
                    if not outbox.flush():
                        await trio.lowlevel.wait_writable(sock)
            else:
                stream = cast(trio.abc.Stream, stream)
                while (data := await outbox.get()) is not None:
                    await stream.send_all(data)
        except _GONE:
            pass
        finally:
            outbox.writev = None  # never write to a closed (and maybe reused) descriptor
        session.cancel()

    async def _send_messages(self) -> None:
        """Binary messages of console bytes, with REPLAY_END after the greeting and history."""
        outbox = self.reader.outbox
        send = cast(MessageTransport, self._link).send_message
        left = self._replay_left
        replaying = True
        while await outbox.wait():
            if replaying and outbox.skipped:  # fell behind: the rest of the replay is gone
                replaying = False
                await send(REPLAY_END)
                continue
            data = await outbox.get(MAX_OUTPUT_MESSAGE)  # at once: wait() said something is queued
            if data is None:
                return
            if replaying:
                if len(data) < left:
                    left -= len(data)
                else:
                    replaying = False
                    head, data = data[:left], data[left:]
                    await send(head)
                    await send(REPLAY_END)
            if data:
                await send(data)

    async def _receive(self) -> None:
        try:
            if self._web is not None:
                await self._receive_messages(self._web)
            else:
                await self._receive_until_done()
        except _GONE:
            pass  # the peer went away (reset, timeout): that ends its session and nothing else

    async def _receive_messages(self, codec: WebTermConnection) -> None:
        receive = cast(MessageTransport, self._link).receive_message
        while True:
            message = await receive()
            if not self.reader.control:
                continue  # spies: input, resizes included, is read and dropped
            codec.receive_message(message)
            for turn in _in_turns(codec.events()):
                if self._dispatch(turn):
                    return
                await trio.lowlevel.checkpoint()  # rule 5: one slice of keys, then everyone else

    async def _receive_until_done(self) -> None:
        reader = self.reader
        codec = self._codec
        stream = cast(trio.abc.Stream, self._link)
        while data := await stream.receive_some(INPUT_READ_SIZE):
            if not reader.control:
                continue  # log clients: input is read and dropped, as procServ does
            if codec is None:
                if self._typed(data):
                    return
                continue
            codec.receive_data(data)
            reply = codec.data_to_send()
            if reply:
                reader.outbox.put(reply)
            if self._dispatch(codec.events()):
                return

    def _dispatch(self, events: list) -> bool:
        """Each event to its handler (rule 2); True when the session ends."""
        for event in events:
            if type(event) is not WindowSize:
                self._apply_pending_size()  # before the keys typed after it reach the child
            handler = self.handlers.get(type(event))
            if handler is not None and handler(event):
                return True
        self._apply_pending_size()
        return False

    def _on_data(self, event: object) -> bool:
        assert isinstance(event, Data)
        return self._typed(event.data)

    def _on_window_size(self, event: object) -> bool:
        assert isinstance(event, WindowSize)
        self._pending_size = (event.rows, event.columns)  # a burst costs one resize: the last size
        return False

    def _apply_pending_size(self) -> None:
        if self._pending_size is not None:
            self._console.report_window_size(self.reader, self._pending_size)
            self._pending_size = None
            self.resize()

    def resize(self) -> None:
        """Size the pty as the console says (the newest control client's report)."""
        self._supervisor.resize(self._console.newest_window_size())

    def _typed(self, data: bytes) -> bool:
        """Act on a control client's keys; True when it logged out."""
        host = self._host
        reader = self.reader
        supervisor = self._supervisor
        running = supervisor.running
        keys, to_child = host.config.keys.scan(data, running)
        logout = False
        for key in keys:
            if key is Key.START:
                host.start()
            elif key is Key.QUIT:
                host.shutdown()
            elif key is Key.LOGOUT:
                # Gone at once, as procServ closes it before anything else happens: not even
                # the echo of what it typed before the logout key reaches it.
                logout = True
                self._console.detach(reader)
            elif key is Key.TOGGLE:
                host.toggle_autorestart()
            elif key is Key.KILL and running:
                supervisor.signal(host.config.kill_signal)
        if to_child and running:
            dropped = supervisor.offer_input(to_child)
            if dropped and not reader.dropping_input:
                reader.outbox.put(messages.input_dropped(dropped))
            reader.dropping_input = bool(dropped)  # one notice per episode, not one per chunk
        return logout


def _in_turns(events: list) -> Iterator[list]:
    """Rule 5 for a message transport: a message's keys are typed ``INPUT_READ_SIZE`` bytes a
    turn, as a telnet client's reads are, however big the message was."""
    turn: list = []
    for event in events:
        if type(event) is Data and len(event.data) > INPUT_READ_SIZE:
            data = event.data
            for start in range(0, len(data), INPUT_READ_SIZE):
                yield [*turn, Data(data[start:start + INPUT_READ_SIZE])]
                turn = []
        else:
            turn.append(event)
    if turn:
        yield turn
