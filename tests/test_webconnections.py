"""The web server's connections: HTTP/1.1 only, and clients that never read lose their place.

* HTTP/2 is not served: a connection that sends the HTTP/2 preface (prior knowledge, in one
  piece or several, first or after an HTTP/1.1 request) or asks to upgrade to h2c ends at once,
  with nothing sent back (no ``101``) and nothing left open; anycorn's HTTP/2 streams would
  otherwise wait forever for a window the client never gives (memory and descriptors, for good).
* Pages, static files and the browser console are served as before.
* With every connection taken and answered, a newcomer ends the one whose send has been blocked
  longest (a client that asked and never reads), else the keep-alive connection idle longest, not
  a console that reads.
* Connections that send nothing never hold more descriptors than the cap, however many come; a
  keep-alive connection its client closed lets go of its socket at once.
* Once a WebSocket's 101 is sent, its frames are not taken for the HTTP/2 request line.
"""

from __future__ import annotations

import os
import socket

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("anycorn")  # in the test extra: CI always has it
import anyio  # noqa: E402

from pyprocserv._web import connections  # noqa: E402
from pyprocserv._web import serve as web  # noqa: E402
from pyprocserv._web.app import STATIC  # noqa: E402

from test_webstop import BINARY, READY, TEXT, RawConsole, http_get, start_console_site  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2c_upgrade(port: int) -> bytes:
    return (f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n").encode()


@pytest.fixture
def opened(monkeypatch) -> list[connections.Connections]:
    """The servers' Connections, as the tests' servers make them."""
    made: list[connections.Connections] = []

    class Recorded(connections.Connections):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(web, "Connections", Recorded)
    return made


async def everything_until_closed(stream: trio.SocketStream) -> bytes:
    """What the server sends before it ends the connection, which it must do within 5 s."""
    reply = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                reply += chunk
        except trio.BrokenResourceError:
            pass  # reset
    return reply


async def until_none_open(server_connections: connections.Connections) -> None:
    with trio.fail_after(5):
        while server_connections._open:
            await trio.sleep(0.02)


@pytest.mark.parametrize("pieces", [[PREFACE], [b"PRI * HT", PREFACE[8:]], [bytes([b]) for b in PREFACE]],
                         ids=["whole", "split", "bytewise"])
async def test_the_http2_preface_ends_its_connection_at_once_with_nothing_left(nursery, opened, pieces):
    _, port = await start_console_site(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    for piece in pieces:
        try:
            await stream.send_all(piece)
        except trio.BrokenResourceError:
            break  # the server saw enough
        await trio.sleep(0.01)
    assert await everything_until_closed(stream) == b""  # anycorn's HTTP/2 would send SETTINGS
    await stream.aclose()
    await until_none_open(opened[0])
    assert (await http_get(port, "/ioc/cat/console")).startswith(b"HTTP/1.1 200")


async def test_the_http2_preface_after_an_http11_request_ends_the_connection_too(nursery, opened):
    _, port = await start_console_site(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    assert (await ask(stream, port, "/static/xterm/addon-fit.js")).startswith(b"HTTP/1.1 200")
    await stream.send_all(PREFACE)  # the next request on this keep-alive connection
    assert await everything_until_closed(stream) == b""
    await stream.aclose()
    await until_none_open(opened[0])


async def test_an_upgrade_to_h2c_ends_its_connection_at_once_without_its_101(nursery, opened):
    _, port = await start_console_site(nursery)
    for _ in range(3):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(h2c_upgrade(port))
        assert await everything_until_closed(stream) == b""  # no "101 Switching Protocols"
        await stream.aclose()
    await until_none_open(opened[0])  # nor the upgraded request's stream, waiting on its window
    page = await http_get(port, "/ioc/cat/console")
    assert page.startswith(b"HTTP/1.1 200") and b"xterm" in page


async def test_pages_static_files_and_the_console_are_served_as_before(nursery):
    _, port = await start_console_site(nursery)
    script = await http_get(port, "/static/xterm/xterm.js")
    head, _, body = script.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == (STATIC / "xterm" / "xterm.js").read_bytes()
    console = await RawConsole.open(port)
    await console.read_until(b"connected (plus you)")
    await console.send(TEXT, READY)
    await console.send(BINARY, b"PRI * HTTP/2.0\r\n")  # masked on the wire: a console may type it
    await console.read_until(b"PRI * HTTP/2.0")
    await console.stream.aclose()


class _Chunks(anyio.abc.ByteStream):
    """A stream that receives the given chunks, then ends."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)

    async def send(self, item: bytes) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=200, deadline=None)
@given(before=st.binary(max_size=64).filter(lambda b: connections.H2_REQUEST_LINE not in b),
       cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_anycorn_never_receives_the_whole_http2_request_line_however_it_is_split(before, cuts):
    chunks = _split(before + PREFACE, cuts)

    async def main() -> tuple[bytes, bool]:
        with socket.socket() as sock, anyio.CancelScope() as scope:
            stream = connections._Answering(_Chunks(list(chunks)), connections._Connection(sock), sock, scope)
            received = b""
            try:
                while True:
                    received += await stream.receive()
            except anyio.BrokenResourceError:
                return received, scope.cancel_called
            except anyio.EndOfStream:
                return received, False
    received, cut = trio.run(main)
    assert cut and connections.H2_REQUEST_LINE not in received


def test_a_websockets_frames_are_not_looked_at_for_the_http2_request_line():
    async def main() -> bool:
        with socket.socket() as sock, anyio.CancelScope() as scope:
            stream = connections._Answering(_Chunks([PREFACE, PREFACE]), connections._Connection(sock), sock, scope)
            await stream.send(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n")
            assert await stream.receive() + await stream.receive() == PREFACE * 2  # frames, past the 101
            return scope.cancel_called
    assert not trio.run(main)


# -- clients that never read ------------------------------------------------------------------------

async def never_reading(port: int) -> trio.SocketStream:
    """A client that asks for a big file twenty times over and reads none of it."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET /static/xterm/xterm.js HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode() * 20)
    return stream


async def test_at_the_cap_a_newcomer_ends_a_client_that_never_reads_not_a_console(monkeypatch, nursery, opened):
    monkeypatch.setattr(connections, "MAX_CONNECTIONS", 6)
    monkeypatch.setattr(connections, "BLOCKED", 0.5)
    _, port = await start_console_site(nursery)
    console = await RawConsole.open(port)
    await console.read_until(b"connected (plus you)")
    await console.send(TEXT, READY)
    idle = await RawConsole.open(port)
    await idle.read_until(b"connected (plus you)")
    readers = [await never_reading(port) for _ in range(4)]
    try:
        with trio.fail_after(10):  # all six answered
            while sum(c.answered for c in opened[0]._open.values()) < 6:
                await trio.sleep(0.05)
        await trio.sleep(1.5)  # the four readers' sends blocked for longer than BLOCKED
        for _ in range(3):
            page = await http_get(port, "/ioc/cat/console")  # main closed every newcomer at once
            assert page.startswith(b"HTTP/1.1 200") and b"xterm" in page
        await console.send(BINARY, b"still here\r")  # the consoles were not the ones to go
        await console.read_until(b"still here")
        await idle.read_until(b"still here")
    finally:
        for stream in (console.stream, idle.stream, *readers):
            await stream.aclose()


# -- descriptors held past the cap, idle keep-alive connections --------------------------------------

def server_fds(held: int) -> int:
    """The process's open descriptors less the ``held`` client sockets the test itself keeps."""
    return len(os.listdir("/proc/self/fd")) - held


async def ask(stream: trio.SocketStream, port: int, path: str = "/ioc/cat/console") -> bytes:
    """One request on a keep-alive connection, and its whole answer's head."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    reply = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in reply:
            reply += await stream.receive_some(65536)
        head, _, body = reply.partition(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
        while len(body) < length:
            body += await stream.receive_some(65536)
    return head


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_connections_that_send_nothing_never_hold_more_descriptors_than_the_cap(monkeypatch, nursery, opened):
    monkeypatch.setattr(connections, "MAX_CONNECTIONS", 10)
    _, port = await start_console_site(nursery)
    await trio.sleep(0.2)
    before = server_fds(0)
    silent = []
    try:
        for _ in range(60):  # each newcomer ends the oldest of them: it must let go of its socket too
            silent.append(await trio.open_tcp_stream("127.0.0.1", port))
            await trio.sleep(0.01)
        await trio.sleep(0.3)
        assert server_fds(len(silent)) - before <= 10 + 3  # main: about 60, held until anycorn's idle timer
        assert (await http_get(port, "/ioc/cat/console")).startswith(b"HTTP/1.1 200")
    finally:
        for stream in silent:
            await stream.aclose()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_a_keep_alive_connection_its_client_closed_lets_go_of_its_socket_at_once(nursery, opened):
    _, port = await start_console_site(nursery)
    await trio.sleep(0.2)
    before = server_fds(0)
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
    for stream in streams:
        assert (await ask(stream, port)).startswith(b"HTTP/1.1 200")
    for stream in streams:
        await stream.aclose()
    await trio.sleep(0.3)  # main: CLOSE-WAIT until anycorn's keep-alive timeout
    assert server_fds(0) <= before and not opened[0]._open


async def test_at_the_cap_a_newcomer_ends_the_longest_idle_keep_alive_connection_not_a_console(
        monkeypatch, nursery, opened):
    monkeypatch.setattr(connections, "MAX_CONNECTIONS", 6)
    monkeypatch.setattr(connections, "IDLE", 0.3, raising=False)
    _, port = await start_console_site(nursery)
    console = await RawConsole.open(port)
    await console.read_until(b"connected (plus you)")
    await console.send(TEXT, READY)
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
    try:
        for stream in idle:
            assert (await ask(stream, port)).startswith(b"HTTP/1.1 200")
        await trio.sleep(0.6)  # all six taken: five idle keep-alive connections and a console
        for _ in range(3):
            page = await http_get(port, "/ioc/cat/console")  # main closed every newcomer at once
            assert page.startswith(b"HTTP/1.1 200") and b"xterm" in page
        assert await everything_until_closed(idle[0]) == b""  # the longest idle went first
        await console.send(BINARY, b"still here\r")  # the console was not one to go
        await console.read_until(b"still here")
    finally:
        for stream in (console.stream, *idle):
            await stream.aclose()


def test_one_login_holds_at_most_an_eighth_of_the_connections():
    # WebSockets that read are the connections a newcomer at the cap cannot end (rule 3)
    from pyprocserv._web.app import MAX_SOCKETS_PER_USER
    assert MAX_SOCKETS_PER_USER * 8 <= connections.MAX_CONNECTIONS
