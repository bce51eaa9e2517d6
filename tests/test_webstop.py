"""The web server's stop and its limits (issue #12): orderly shutdown, lifespan, slow clients.

* At an orderly stop (SIGTERM, ^Q, ``shutdown()``) every browser console closes once, with 1001
  (going away); a console that ends for another reason (a logout) closes with 1000, as before.
* The real ``pyprocserv -f --web`` exits 0 on SIGTERM beside an open console, the pushed status
  and a keep-alive connection, both WebSockets closed with 1001, with nothing on stderr.
* The ASGI lifespan is the guard's: an application that does not speak it costs no warning.
* Slowloris: a request's head has a deadline, and the number of open connections a cap; slow
  clients beyond it do not keep a normal client from the page, the console or the IOC's telnet.
"""

from __future__ import annotations

import json
import logging
import signal
from functools import partial

import pytest
import trio

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from trio_websocket import ConnectionClosed, open_websocket  # noqa: E402

from pyprocserv import Config, KeyMap, ProcessServer  # noqa: E402
from pyprocserv._web import connections  # noqa: E402
from pyprocserv._web import serve as web  # noqa: E402
from pyprocserv._web.app import build_app  # noqa: E402
from pyprocserv._web.auth import WebAuth  # noqa: E402
from pyprocserv._web.fleet import OneServer  # noqa: E402
from pyprocserv._web.serve import serve_asgi  # noqa: E402

from support.client import connect  # noqa: E402
from support.launch import ServerProcess  # noqa: E402
from support.ports import free_port  # noqa: E402
from test_webserve import wait_listening  # noqa: E402

GOING_AWAY, NORMAL_CLOSURE = 1001, 1000
CLOSE, TEXT, BINARY = 0x8, 0x1, 0x2
READY = json.dumps({"ready": True}).encode()
GREETING = b"@@@ Welcome to procServ"


# -- a browser console of raw frames, to count close frames --------------------------------------

def handshake(port: int, path: str = "/ws/ioc/cat/console") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n").encode()


def masked(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawConsole:
    """A browser console on a bare socket: the frames the server sends, exactly."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    @classmethod
    async def open(cls, port: int) -> RawConsole:
        console = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await console.stream.send_all(handshake(port))
        while b"\r\n\r\n" not in console.buffer:
            assert await console._more(), console.buffer
        head, _, console.buffer = console.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return console

    async def _more(self) -> bool:
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            chunk = b""
        self.buffer += chunk
        self.eof = not chunk
        return bool(chunk)

    def _frame(self) -> tuple[int, bytes] | None:
        """The first whole (unmasked, unfragmented) frame in the buffer, taken out of it."""
        data = self.buffer
        if len(data) < 2:
            return None
        length, at = data[1] & 0x7F, 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(data) < 2 + size:
                return None
            length, at = int.from_bytes(data[2:2 + size], "big"), 2 + size
        if len(data) < at + length:
            return None
        self.buffer = data[at + length:]
        return data[0] & 0x0F, data[at:at + length]

    async def frames(self, quiet: float = 0.5) -> list[tuple[int, bytes]]:
        """Every frame until the connection ends or stays quiet for ``quiet`` seconds after a close."""
        frames: list[tuple[int, bytes]] = []
        with trio.fail_after(15):
            while True:
                while (frame := self._frame()) is not None:
                    frames.append(frame)
                if self.eof:
                    return frames
                if any(opcode == CLOSE for opcode, _ in frames):
                    with trio.move_on_after(quiet):
                        await self._more()
                        continue
                    return frames
                await self._more()

    async def read_until(self, needle: bytes) -> None:
        seen = b""
        with trio.fail_after(15):
            while needle not in seen:
                frame = self._frame()
                if frame is None:
                    assert await self._more(), f"closed before {needle!r}: {seen!r}"
                    continue
                seen += frame[1]

    async def send(self, opcode: int, payload: bytes) -> None:
        await self.stream.send_all(masked(opcode, payload))


def close_codes(frames: list[tuple[int, bytes]]) -> list[int]:
    return [int.from_bytes(payload[:2], "big") for opcode, payload in frames if opcode == CLOSE]


async def start_console_site(nursery: trio.Nursery, **config) -> tuple[ProcessServer, int]:
    """(server, web port): ``/bin/cat`` served by an in-process server with a telnet port and its
    browser console (no users: loopback is an operator), the web server beside it."""
    server = ProcessServer(Config(command=("/bin/cat",), name="cat", control=("0",), holdoff=0.2, **config),
                           extras=[])
    await nursery.start(server.run)
    port = await nursery.start(serve_asgi, build_app(OneServer(server), WebAuth(None, "/")), "127.0.0.1", 0)
    with trio.fail_after(10):
        while not (server.status.running or config.get("wait")):
            await trio.sleep(0.02)
    return server, port


async def http_get(port: int, path: str = "/") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                reply += chunk
    return reply


# -- one close, 1001, at an orderly stop ----------------------------------------------------------

@pytest.mark.parametrize("stop", ["shutdown()", "^Q"])
async def test_an_orderly_stop_closes_every_console_once_with_1001(nursery, stop):
    server, port = await start_console_site(nursery, wait=stop == "^Q")  # ^Q quits while no child runs
    consoles = [await RawConsole.open(port) for _ in range(3)]
    for console in consoles:
        await console.read_until(b"connected (plus you)")
    if stop == "^Q":
        await consoles[0].send(TEXT, READY)
        await consoles[0].send(BINARY, b"\x11")
    else:
        server.shutdown()
    for console in consoles:
        assert close_codes(await console.frames()) == [GOING_AWAY]
        await console.stream.aclose()


async def test_a_console_that_logs_out_closes_with_1000_as_before(nursery):
    server, port = await start_console_site(nursery, keys=KeyMap(logout=4))
    console = await RawConsole.open(port)
    await console.read_until(b"connected (plus you)")
    await console.send(TEXT, READY)
    await console.send(BINARY, b"\x04")
    assert close_codes(await console.frames()) == [NORMAL_CLOSURE]
    await console.stream.aclose()
    assert server.status.running


class RecordingTransport:
    """A message transport that records how the session closed it."""

    def __init__(self) -> None:
        self.closes: list[bool] = []

    async def send_message(self, message: bytes | str) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_message(self) -> bytes | str:
        await trio.sleep_forever()

    async def aclose(self, *, going_away: bool = False) -> None:
        self.closes.append(going_away)


async def test_the_shell_tells_a_message_transport_the_server_goes_away(nursery):
    """The shell's side of it, without a web server: only the stop's close says going away."""
    server = ProcessServer(Config(command=("/bin/cat",), name="cat", holdoff=0.2), extras=[])
    await nursery.start(server.run)
    transport = RecordingTransport()
    async with trio.open_nursery() as sessions:
        sessions.start_soon(partial(server.serve_console, transport, role="spy"))
        await trio.sleep(0.1)
        server.shutdown()
    assert transport.closes == [True]


# -- the real program, SIGTERM ---------------------------------------------------------------------

async def closed_with(ws) -> int:
    """The close code ``ws`` ends with (its messages until then are read and dropped)."""
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
        while True:
            await ws.get_message()
    await ws._stream.aclose()  # trio-websocket leaves the socket of a connection the server closed
    return closed.value.reason.code


async def test_sigterm_closes_every_websocket_with_1001_and_pyprocserv_exits_0_quietly():
    """A console and the pushed status table open, and a keep-alive connection idle."""
    port = free_port()
    async with ServerProcess(["--web", str(port), "-n", "cat", "-P", str(free_port()), "/bin/cat"]) as server:
        await wait_listening(port)
        keep_alive = await trio.open_tcp_stream("127.0.0.1", port)
        await keep_alive.send_all(f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        reply = b""
        with trio.fail_after(10):
            while b'"extras"' not in reply:
                reply += await keep_alive.receive_some(65536)
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" not in reply.lower()
        origin = [(b"origin", f"http://127.0.0.1:{port}".encode())]
        async with open_websocket("127.0.0.1", port, "/ws/ioc/cat/console", use_ssl=False,
                                  extra_headers=origin) as console, \
                open_websocket("127.0.0.1", port, "/ws/status", use_ssl=False, extra_headers=origin) as status:
            with trio.fail_after(10):
                assert GREETING in await console.get_message()
                assert "cat" in await status.get_message()
            server.process.send_signal(signal.SIGTERM)
            assert await closed_with(console) == GOING_AWAY
            assert await closed_with(status) == GOING_AWAY
            assert await server.wait(timeout=10) == 0
        with trio.fail_after(5):
            assert await keep_alive.receive_some(65536) == b""  # the server's end of it closed
        await keep_alive.aclose()
    assert server.read_stderr() == ""  # no traceback, no warning, at start or stop


# -- lifespan ---------------------------------------------------------------------------------------

async def test_the_server_answers_lifespan_itself_so_an_app_without_it_costs_no_warning(caplog):
    """anycorn warns on stderr when an application fails lifespan; the guard never asks it."""
    scopes: list[str] = []

    async def http_only(scope, receive, send):
        scopes.append(scope["type"])
        if scope["type"] != "http":
            raise RuntimeError(f"no {scope['type']} here")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    caplog.set_level(logging.DEBUG, logger="pyprocserv")
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status):
            with scope:
                await serve_asgi(http_only, task_status=task_status)

        port = await nursery.start(run)
        assert (await http_get(port)).endswith(b"ok")
        scope.cancel()
    assert scopes == ["http"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- slow clients ----------------------------------------------------------------------------------

SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def still_open(stream: trio.SocketStream, wait: float = 0.5) -> bool:
    """Whether the server still holds ``stream``'s connection (nothing comes in ``wait`` seconds)."""
    try:
        with trio.move_on_after(wait):
            await stream.receive_some(65536)
            return False
        return True
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False


async def dribble(streams: list[trio.SocketStream], every: float) -> None:
    """Slowloris: one more byte of a head that never ends, on each stream, every ``every`` s."""
    for stream in streams:
        try:
            await stream.send_all(SLOW_HEAD)
        except trio.BrokenResourceError:
            pass
    while True:
        await trio.sleep(every)
        for stream in streams:
            try:
                await stream.send_all(b"a")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the server ended it


async def open_all(port: int, count: int) -> list[trio.SocketStream]:
    return [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(count)]


async def count_open(streams: list[trio.SocketStream], wait: float = 0.5) -> int:
    results: list[bool] = []

    async def probe(stream):
        results.append(await still_open(stream, wait))

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(probe, stream)
    return sum(results)


async def until_at_most_open(streams: list[trio.SocketStream], most: int, within: float = 10) -> None:
    """Until the server holds at most ``most`` of ``streams`` (it may still be accepting them)."""
    with trio.fail_after(within):
        while await count_open(streams) > most:
            pass


async def close_all(streams: list[trio.SocketStream]) -> None:
    for stream in streams:
        await stream.aclose()


async def test_a_request_head_that_never_ends_loses_its_connection_at_the_deadline(monkeypatch, nursery):
    monkeypatch.setattr(web, "HEAD_DEADLINE", 1.5)
    _, port = await start_console_site(nursery)
    slow = await open_all(port, 3)
    nursery.start_soon(dribble, slow, 0.2)
    assert await count_open(slow, wait=0.3) == 3  # still sending, within the deadline
    await until_at_most_open(slow, 0, within=3.0)  # anycorn's default (5 s) would still hold them
    assert (await http_get(port)).startswith(b"HTTP/1.1 200")
    await close_all(slow)


async def test_slow_clients_beyond_the_cap_do_not_keep_others_from_the_page_console_or_telnet(monkeypatch, nursery):
    """With the cap full of heads that never end, a newcomer ends the oldest of them."""
    monkeypatch.setattr(connections, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(web, "HEAD_DEADLINE", 3600.0)  # only the cap ends them here
    server, port = await start_console_site(nursery)
    slow = await open_all(port, 30)
    nursery.start_soon(dribble, slow, 1.0)
    await until_at_most_open(slow, 8)  # the rest were closed as they came, not queued
    page = await http_get(port, "/ioc/cat/console")
    assert page.startswith(b"HTTP/1.1 200") and b"xterm" in page
    console = await RawConsole.open(port)
    await console.read_until(b"connected (plus you)")
    telnet = await connect(server.endpoints[0])
    await telnet.expect(b"@@@ Welcome to procServ")
    await telnet.aclose()
    await until_at_most_open(slow, 7)  # the console is one of the 8
    await console.send(TEXT, READY)
    await console.send(BINARY, b"echo\r")
    await console.read_until(b"echo")  # the console lives on
    await console.stream.aclose()
    await close_all(slow)


async def test_when_every_open_connection_is_answered_a_newcomer_is_closed_at_once(monkeypatch, nursery):
    monkeypatch.setattr(connections, "MAX_CONNECTIONS", 4)
    _, port = await start_console_site(nursery)
    consoles = [await RawConsole.open(port) for _ in range(4)]
    for console in consoles:
        await console.read_until(b"connected (plus you)")
    newcomer = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        try:
            assert await newcomer.receive_some(65536) == b""
        except trio.BrokenResourceError:
            pass  # reset: refused as well
    await newcomer.aclose()
    for console in consoles:  # the consoles were not touched
        await console.send(TEXT, READY)
    await consoles[0].send(BINARY, b"still here\r")
    for console in consoles:
        await console.read_until(b"still here")
        await console.stream.aclose()


async def test_hundreds_of_slow_clients_leave_the_real_programs_console_and_telnet_alone(tmp_path):
    """pyprocserv -f --web with its own cap (256): 300 slowloris connections, then a browser and a
    telnet client come as usual."""
    port = free_port()
    async with ServerProcess(["--web", str(port), "-n", "cat", "-P", str(free_port()), "/bin/cat"]) as server:
        await wait_listening(port)
        slow = await open_all(port, 300)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble, slow, 2.0)
                await trio.sleep(0.5)
                page = await http_get(port, "/ioc/cat/console")
                assert page.startswith(b"HTTP/1.1 200") and b"xterm" in page
                origin = [(b"origin", f"http://127.0.0.1:{port}".encode())]
                async with open_websocket("127.0.0.1", port, "/ws/ioc/cat/console", use_ssl=False,
                                          extra_headers=origin) as ws:
                    with trio.fail_after(10):
                        assert GREETING in await ws.get_message()
                telnet = await connect(server.control())
                await telnet.expect(b"@@@ Welcome to procServ")
                await telnet.aclose()
                await until_at_most_open(slow, connections.MAX_CONNECTIONS)
                nursery.cancel_scope.cancel()
        finally:
            await close_all(slow)
    assert server.returncode == 0
    assert server.read_stderr() == ""

