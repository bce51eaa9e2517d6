"""The console client of every test and scenario: records every byte, waits for patterns.

It never answers telnet negotiation (like ``socat``). ``received`` is everything that arrived
(for transcripts); ``pos`` is the cursor that ``expect`` and ``quiet`` consume from.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable

import trio
import trio.testing

from pyprocserv._core.messages import TELNET_OFFER

# What procServ (and pyprocserv) sends after every greeting: IAC WILL ECHO, IAC DO LINEMODE.
OFFER = TELNET_OFFER

DEFAULT_TIMEOUT = 15.0  # generous: a loaded 2-core CI machine, and procServ waits for idle ticks
QUIET = 0.3  # seconds of silence that end a capture


class ExpectTimeout(AssertionError):
    """``Client.expect`` did not see its pattern in time (or saw EOF)."""


class Client:
    """A raw stream client that records every byte it receives."""

    def __init__(self, stream: trio.abc.Stream, name: str = "client") -> None:
        self.stream = stream
        self.name = name
        self.received = bytearray()  # everything, for transcripts
        self.pos = 0  # start of what expect() has not consumed yet
        self.eof = False
        self.closed = False
        # per chunk: length of ``received`` after it, and its trio arrival time (for timings)
        self._arrival_ends: list[int] = []
        self._arrival_times: list[float] = []
        self.last_match_time = 0.0

    @classmethod
    async def connect_tcp(cls, port: int, name: str = "client") -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port), name)

    @classmethod
    async def connect_unix(cls, path: str, name: str = "client") -> Client:
        return cls(await trio.open_unix_socket(path), name)

    async def _receive(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return
        self.received += data
        self._arrival_ends.append(len(self.received))
        self._arrival_times.append(trio.current_time())

    def arrival_time(self, offset: int) -> float:
        """trio time at which the byte just before ``offset`` arrived."""
        i = bisect.bisect_left(self._arrival_ends, offset)
        if i == len(self._arrival_ends):
            raise ValueError(offset)
        return self._arrival_times[i]

    async def wait_until(self, done: Callable[[], bool], timeout: float, what: object) -> None:
        """Receive until ``done()`` is true; ExpectTimeout on timeout or EOF."""
        try:
            with trio.fail_after(timeout):
                while not done():
                    if self.eof:
                        raise ExpectTimeout(self._failure(what, "EOF"))
                    await self._receive()
        except trio.TooSlowError:
            raise ExpectTimeout(self._failure(what, f"{timeout} s")) from None

    def _search(self, pattern: bytes | re.Pattern[bytes], start: int) -> int | None:
        """End offset of the first match at or after ``start``, or None."""
        if isinstance(pattern, bytes):
            i = self.received.find(pattern, start)
            return None if i < 0 else i + len(pattern)
        m = pattern.search(self.received, start)
        return None if m is None else m.end()

    async def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Everything from the cursor up to and including the first match; the rest stays unread."""
        await self.wait_until(lambda: self._search(pattern, self.pos) is not None, timeout, pattern)
        end = self._search(pattern, self.pos)
        assert end is not None
        return self._consume(end)

    def _consume(self, end: int) -> bytes:
        out = bytes(self.received[self.pos : end])
        self.pos = end
        if end:
            self.last_match_time = self.arrival_time(end)
        return out

    def _failure(self, pattern: object, why: str) -> str:
        return (
            f"{self.name}: no {pattern!r} after {why}; "
            f"unconsumed: {bytes(self.received[self.pos:])[-500:]!r}; all: {bytes(self.received)[-2000:]!r}"
        )

    async def quiet(self, seconds: float = QUIET, max_time: float = DEFAULT_TIMEOUT) -> bytes:
        """Everything that arrives until nothing has come for ``seconds`` (or EOF, or ``max_time``)."""
        with trio.move_on_after(max_time):
            while not self.eof:
                with trio.move_on_after(seconds) as scope:
                    await self._receive()
                if scope.cancelled_caught:
                    break
        return self._consume(len(self.received))

    async def expect_eof(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Wait until the server closes the connection; return the rest."""
        try:
            with trio.fail_after(timeout):
                while not self.eof:
                    await self._receive()
        except trio.TooSlowError:
            raise ExpectTimeout(self._failure("EOF", f"{timeout} s")) from None
        return self._consume(len(self.received))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def transcript(self) -> bytes:
        return bytes(self.received)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            with trio.CancelScope(shield=True):
                await self.stream.aclose()


def tcp_address(endpoint: str) -> tuple[str, int]:
    """(host, port) of an endpoint as the info file names it: tcp:HOST:PORT, tcp:[V6]:PORT."""
    host, _, port = endpoint[4:].rpartition(":")
    return host.strip("[]"), int(port)


async def connect(address: str, name: str = "client") -> Client:
    """Connect to an endpoint as the info file names it: tcp:HOST:PORT or unix:PATH (@ abstract)."""
    if address.startswith("tcp:"):
        stream = await trio.open_tcp_stream(*tcp_address(address))
    else:
        path = address[5:]
        stream = await trio.open_unix_socket("\0" + path[1:] if path.startswith("@") else path)
    return Client(stream, name)


def attach(nursery: trio.Nursery, server, *, control: bool = True, telnet: bool = True) -> Client:
    """A client on an in-memory stream straight into ``server`` (no socket)."""
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: server.serve_stream(server_side, control=control, telnet=telnet))
    return Client(client_side)


def close_at_end(nursery: trio.Nursery, *clients: Client) -> None:
    """Close the clients when the test's nursery is cancelled (no ResourceWarning)."""

    async def closer() -> None:
        try:
            await trio.sleep_forever()
        finally:
            for client in clients:
                await client.aclose()

    nursery.start_soon(closer)
