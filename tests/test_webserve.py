"""The web server is contained (issue #12, item 3): nothing a client sends ends the trio run.

A Starlette app served by ``serve_asgi`` in the test's own trio run, beside a task that keeps
counting: after each hostile input the run, the counting task and the server are all still
there and a good request is answered. Cancelling the server closes its WebSockets with 1001.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import random
import signal
import socket
import ssl
import sys
import tarfile
import threading
import tomllib
from functools import partial
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import FileResponse, PlainTextResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402

from pyprocserv._shell.extras import Supervisor  # noqa: E402
from pyprocserv._web import serve as web  # noqa: E402
from pyprocserv._web.serve import WebServerError, serve_asgi  # noqa: E402

from support.launch import ServerProcess  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.tls import self_signed  # noqa: E402
from test_layers import ALL, imports, layer_of  # noqa: E402

KEY = base64.b64encode(b"0123456789abcdef").decode()
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())


def upgrade(key: str = KEY, version: str = "13", path: str = "/ws") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode()


# hypercorn #225: a valid upgrade with one more byte in the same packet ended hypercorn 0.18's run.
ISSUE_225 = upgrade() + b"x"
MALFORMED = {
    "issue225": ISSUE_225,
    "garbage": random.Random(225).randbytes(4096),
    "truncated request line": b"GET /",
    "huge header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
    "bad Sec-WebSocket-Key": upgrade(key="not-a-key"),
    "bad Sec-WebSocket-Version": upgrade(version="99"),
    "upgrade then garbage frames": upgrade() + random.Random(1).randbytes(2048),
}


async def count(request):
    return PlainTextResponse("ok")


async def leave(request):
    sys.exit(3)


async def echo(websocket):
    await websocket.accept()
    while True:
        await websocket.send_text(await websocket.receive_text())


BIG = b"x" * (1 << 20)
XTERM_JS = Path(web.__file__).parent / "static" / "xterm" / "xterm.js"


async def big(request):
    return PlainTextResponse(BIG)


async def xterm(request):
    return FileResponse(XTERM_JS)


async def flood(websocket):
    await websocket.accept()
    while True:
        await websocket.send_bytes(BIG)


APP = Starlette(routes=[Route("/", count), Route("/exit", leave), Route("/big", big), Route("/xterm.js", xterm),
                        WebSocketRoute("/ws", echo), WebSocketRoute("/flood", flood)])


# -- a client of raw bytes ---------------------------------------------------------------------

async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, end our side, and read what comes back until the server closes (or 0.5 s:
    a server may wait for more from a half-closed connection)."""
    reply = b""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()
            with trio.move_on_after(0.5):
                while chunk := await stream.receive_some(65536):
                    reply += chunk
        except trio.BrokenResourceError:
            pass  # the server hung up first: fine
    return reply


async def get(port: int, path: str = "/") -> tuple[int, bytes]:
    reply = await exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def masked_text(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"the server closed after {data!r}"
        data += chunk
    return data


async def open_websocket(port: int) -> trio.SocketStream:
    """A WebSocket on ``/ws``, handshake checked and one echo read back."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(upgrade())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101") and ACCEPT in head, head
    await stream.send_all(masked_text(b"hello"))
    assert await receive_exactly(stream, 7) == b"\x81\x05hello"
    return stream


async def read_frame(stream: trio.SocketStream) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame with a short payload."""
    first, length = await receive_exactly(stream, 2)
    return first & 0x0F, await receive_exactly(stream, length & 0x7F)


class Ticker:
    """The trio task beside the server: it counts while the run is alive."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await trio.sleep(0.001)
            self.ticks += 1

    async def still_counting(self) -> bool:
        before = self.ticks
        await trio.sleep(0.02)
        return self.ticks > before


@pytest.fixture
async def served(nursery):
    """(port, ticker) of the test app served beside a counting task, for this test."""
    ticker = Ticker()
    nursery.start_soon(ticker.run)
    port = await nursery.start(serve_asgi, APP)
    return port, ticker


# -- survival ----------------------------------------------------------------------------------

async def test_issue_225s_request_leaves_the_run_and_the_server_alive(served):
    """Regression: hypercorn 0.18 on trio ended the whole process on this one request."""
    port, ticker = served
    await exchange(port, ISSUE_225)
    assert await ticker.still_counting()
    assert await get(port) == (200, b"ok")


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_ends_only_its_connection(served, data):
    port, ticker = served
    await exchange(port, data)
    assert await ticker.still_counting()
    assert await get(port) == (200, b"ok")


async def test_slow_clients_dribbling_headers_do_not_stop_others(served):
    port, ticker = served
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(20)]
    try:
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa":
            for stream in streams:
                await stream.send_all(bytes([byte]))
        assert await get(port) == (200, b"ok")
        assert await ticker.still_counting()
    finally:
        for stream in streams:
            await stream.aclose()


async def test_sys_exit_in_the_application_ends_only_its_request(served, caplog):
    port, ticker = served
    status, _ = await get(port, "/exit")
    assert status == 500
    assert "sys.exit(3)" in caplog.text
    assert await ticker.still_counting()
    assert await get(port) == (200, b"ok")


async def test_sys_exit_inside_the_server_is_a_web_server_error_for_the_supervisor(monkeypatch):
    """What escapes the server (here SystemExit from anycorn itself) ends serve_asgi only."""
    async def exiting_serve(app, config, *, shutdown_trigger, task_status):
        task_status.started(["http://127.0.0.1:1"])
        await trio.sleep(0)
        sys.exit(2)

    monkeypatch.setattr(web.anycorn, "serve", exiting_serve)
    with pytest.raises(WebServerError, match="SystemExit"):
        await serve_asgi(APP)


async def test_the_supervisor_restarts_a_web_server_that_exited(monkeypatch, nursery):
    """Run as an extra: the server's sys.exit() is reported and the server started again."""
    real_serve, calls = web.anycorn.serve, []

    async def exiting_once(app, config, **kwargs):
        calls.append(config)
        if len(calls) == 1:
            kwargs["task_status"].started(["http://127.0.0.1:1"])
            sys.exit(2)
        await real_serve(app, config, **kwargs)

    monkeypatch.setattr(web.anycorn, "serve", exiting_once)
    announced: list[str] = []
    supervisor = Supervisor(announced.append, first=0.01)
    port = free_port()
    await nursery.start(supervisor.run, "web", partial(serve_asgi, APP, "127.0.0.1", port))
    while len(calls) < 2 or supervisor.states.get("web") != "running":
        await trio.sleep(0.01)
    assert "SystemExit" in announced[0]
    assert await get(port) == (200, b"ok")


async def test_an_address_that_cannot_be_bound_is_an_os_error_naming_it(served):
    port, _ = served
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port} for the web console"):
        await serve_asgi(APP, "127.0.0.1", port)


async def test_the_server_binds_the_address_it_is_given_only(nursery):
    """Loopback by default: the listening socket is 127.0.0.1's, not the wildcard's."""
    port = free_port()
    await nursery.start(serve_asgi, APP, "127.0.0.1", port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", port))  # free: nothing listens on every address
    assert await get(port) == (200, b"ok")


@pytest.fixture
def tls_contexts(tmp_path):
    """(server context, client context) for a self-signed certificate of 127.0.0.1."""
    cert, key = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_with_a_tls_context_the_server_speaks_https_only_and_survives_plain_http(nursery, tls_contexts):
    server_context, client_context = tls_contexts
    port = await nursery.start(partial(serve_asgi, APP, ssl_context=server_context))
    plain = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port
    assert not plain.startswith(b"HTTP/1.1 200")
    await exchange(port, ISSUE_225)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    async with trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1") as stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")


# -- orderly shutdown --------------------------------------------------------------------------

async def start_stoppable(nursery: trio.Nursery) -> tuple[int, trio.CancelScope]:
    """(port, scope): the test app served in ``nursery``; cancelling ``scope`` stops it alone."""
    scope = trio.CancelScope()

    async def run_server(task_status):
        with scope:
            await serve_asgi(APP, task_status=task_status)

    return await nursery.start(run_server), scope


async def test_cancelling_the_server_closes_its_websockets_with_1001():
    async with trio.open_nursery() as nursery:
        port, scope = await start_stoppable(nursery)
        streams = [await open_websocket(port) for _ in range(3)]
        scope.cancel()
        for stream in streams:
            opcode, payload = await read_frame(stream)
            assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1001
            await stream.aclose()
    assert scope.cancelled_caught


# -- clients that never read ---------------------------------------------------------------------

def pipelined(path: str, times: int = 40) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * times


NEVER_READ = {"body": pipelined("/big"), "file": pipelined("/xterm.js"), "websocket": upgrade(path="/flood")}
GIVE_UP = 15.0  # the client's patience, seconds: a stop that lasts it was held up by the client


async def never_reading_client(port: int, request: bytes) -> trio.socket.SocketType:
    """A client with a 4 KiB receive buffer that sends ``request`` and never reads; back once the
    server has had time to fill its window and block in a send."""
    client = trio.socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await client.connect(("127.0.0.1", port))
    await client.send(request)
    await trio.sleep(0.5)
    return client


@pytest.mark.parametrize("request_", NEVER_READ.values(), ids=NEVER_READ.keys())
async def test_a_client_that_never_reads_does_not_hold_up_the_servers_stop(monkeypatch, request_):
    """Regression: anycorn's shielded sends kept a stopping server until such a client left, and
    then reported the stop as a WebServerError."""
    monkeypatch.setattr(web, "STALL", 3600.0)  # the stop itself, not the kernel's timeout, ends it
    gave_up = False
    async with trio.open_nursery() as outer:
        patience = trio.CancelScope()

        async def give_up(client):
            nonlocal gave_up
            with patience:
                await trio.sleep(GIVE_UP)
                gave_up = True
                client.close()

        async with trio.open_nursery() as nursery:
            port, scope = await start_stoppable(nursery)
            client = await never_reading_client(port, request_)
            outer.start_soon(give_up, client)
            scope.cancel()
        patience.cancel()
    client.close()
    assert scope.cancelled_caught  # an orderly stop, no WebServerError
    assert not gave_up, "the server's stop waited for the client to leave"


async def test_a_connection_whose_peer_stopped_reading_ends_while_the_server_runs(monkeypatch, nursery):
    """The kernel ends it after STALL seconds without progress, so no send waits forever."""
    monkeypatch.setattr(web, "STALL", 1.0)
    port = await nursery.start(serve_asgi, APP)
    client = await never_reading_client(port, NEVER_READ["body"])
    await trio.sleep(5 * web.STALL)  # the kernel probes the zero window at doubling intervals
    received = 0
    try:
        with trio.move_on_after(2):
            while chunk := await client.recv(1 << 16):
                received += len(chunk)
        ended = False
    except OSError:
        ended = True
    client.close()
    assert ended or received < len(BIG) * 40, f"the connection was kept: {received} bytes came"
    assert await get(port) == (200, b"ok")


async def wait_listening(port: int) -> None:
    """Until a server process listens on ``port`` (15 s at most)."""
    with trio.fail_after(15):
        while True:
            try:
                await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                return
            except OSError:
                await trio.sleep(0.05)


async def test_pyprocserv_exits_on_sigterm_beside_a_client_that_never_reads():
    """End to end, the reported case: 40 pipelined requests for the vendored xterm.js, never read."""
    port = free_port()
    async with ServerProcess(["-q", "--web", str(port), "-P", str(free_port()), "/bin/cat"]) as server:
        await wait_listening(port)
        client = await never_reading_client(port, pipelined("/static/xterm/xterm.js"))
        try:
            server.process.send_signal(signal.SIGTERM)
            await server.wait(timeout=GIVE_UP)
        finally:
            client.close()
    assert "WebServerError" not in server.read_stderr()


# -- hostile bytes, generated ------------------------------------------------------------------

@pytest.fixture(scope="module")
def threaded_server():
    """The app served in a trio run of its own thread, for hypothesis' many examples."""
    ready: list[int] = []
    started = threading.Event()
    holder: dict[str, object] = {}

    async def main():
        with trio.CancelScope() as scope:
            holder["scope"], holder["token"] = scope, trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                ready.append(await nursery.start(serve_asgi, APP))
                started.set()
        started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    started.wait(30)
    yield ready[0], thread
    holder["token"].run_sync_soon(holder["scope"].cancel)
    thread.join(30)


def blocking_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from([b"", b"GET / HTTP/1.1\r\n", upgrade()[:-2]]), junk=st.binary(max_size=600))
def test_arbitrary_bytes_never_stop_the_server(threaded_server, prefix, junk):
    port, thread = threaded_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(prefix + junk)
        except OSError:
            pass  # the server may hang up on the first bytes: fine
    assert thread.is_alive()
    assert blocking_get(port).endswith(b"\r\n\r\nok")


# -- the layer ---------------------------------------------------------------------------------

def test_the_web_layer_uses_no_channel_access_and_no_program():
    for name in (m for m in ALL if layer_of(m) == "_web"):
        inside, outside = imports(name, ALL[name])
        assert {layer_of(m) for m in inside} <= {"_core", "_shell", "_web"}, (name, sorted(inside))
        assert "caproto" not in outside, name


# -- xterm.js, vendored ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
XTERM = ROOT / "pyprocserv" / "_web" / "static" / "xterm"


def refresh_tool():
    spec = importlib.util.spec_from_file_location("refresh_xterm", ROOT / "tools" / "refresh_xterm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_vendored_xterm_file_matches_the_checksum_versions_gives():
    rows = refresh_tool().parse_versions((XTERM / "VERSIONS").read_text())
    on_disk = {p.name for p in XTERM.iterdir()} - {"VERSIONS"}
    assert set(rows) == on_disk, "VERSIONS and the folder list different files"
    for name, (sha256, package, version, tarball) in rows.items():
        assert hashlib.sha256((XTERM / name).read_bytes()).hexdigest() == sha256, name
        assert tarball.startswith("https://registry.npmjs.org/") and version in tarball, (name, tarball)
    packages = {package: version for _, package, version, _ in rows.values()}
    assert packages["@xterm/xterm"].startswith("6."), packages
    assert {"xterm.js", "xterm.css", "addon-fit.js", "LICENSE.xterm", "LICENSE.addon-fit"} <= on_disk


def test_the_checksum_test_can_fail(tmp_path):
    tool = refresh_tool()
    text = (XTERM / "VERSIONS").read_text().replace("xterm.css ", "xterm.css 00", 1)
    with pytest.raises(tool.RefreshError, match="expected 5 fields"):
        tool.parse_versions(text.replace("xterm.css 00", "xterm.css 00 extra", 1))
    rows = tool.parse_versions(text)
    assert rows["xterm.css"][0] != hashlib.sha256((XTERM / "xterm.css").read_bytes()).hexdigest()


def test_the_wheel_ships_the_vendored_files():
    """pyproject's package-data for _web covers every vendored file (setuptools ships those)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "pyprocserv._web" in data["packages"]
    patterns = data["package-data"]["pyprocserv._web"]
    web = ROOT / "pyprocserv" / "_web"
    shipped = {p for pattern in patterns for p in web.glob(pattern) if p.is_file()}
    assert shipped == {p for p in XTERM.iterdir()}


def tarball_of(files: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def test_the_refresh_tool_refuses_a_tarball_the_registry_did_not_describe():
    tool = refresh_tool()
    good = tarball_of({"package/lib/xterm.js": b"js"})
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(good).digest()).decode()
    tool.check_integrity(good, integrity, "x")
    with pytest.raises(tool.RefreshError, match="SHA-512"):
        tool.check_integrity(good + b"\0", integrity, "x")
    with pytest.raises(tool.RefreshError, match="no sha512"):
        tool.check_integrity(good, "sha1-abc", "x")


def test_the_refresh_tool_reads_only_regular_files_it_names():
    tool = refresh_tool()
    tarball = tarball_of({"package/lib/xterm.js": b"js"}, symlink="package/LICENSE")
    assert tool.files_of(tarball, {"package/lib/xterm.js": "xterm.js"}, "x") == {"xterm.js": b"js"}
    with pytest.raises(tool.RefreshError, match="not a regular file"):
        tool.files_of(tarball, {"package/LICENSE": "LICENSE"}, "x")
    with pytest.raises(tool.RefreshError, match="has no package/css/xterm.css"):
        tool.files_of(tarball, {"package/css/xterm.css": "xterm.css"}, "x")


def test_the_refresh_tool_takes_the_newest_stable_release_of_the_major():
    tool = refresh_tool()
    versions = ["5.5.0", "6.0.0", "6.1.0-beta.337", "6.0.1", "7.0.0"]
    assert tool.newest(versions, 6) == "6.0.1"
    assert tool.newest(versions) == "7.0.0"
    with pytest.raises(tool.RefreshError, match="major version 8"):
        tool.newest(versions, 8)
