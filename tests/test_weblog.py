"""The browser console's log (issue #12): the tail read off the event loop, and the live follow.

In this process with trio: a real server running ``/bin/cat`` with a telnet port, its web app
served by ``serve_asgi`` on loopback, raw HTTP and trio-websocket clients as the browser (the
helpers of ``test_webapp``). A log written by the test itself (a FIFO, a ``LogFile`` that
rotates, a file growing by megabytes) is put in front of the app by a ``Root`` that names it.
Last, ``pyprocserv --web`` in real headless Chromium: the log page's follow box.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import threading
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from trio_websocket import ConnectionClosed  # noqa: E402

from pyprocserv import Config, ProcessServer  # noqa: E402
from pyprocserv._shell.logfile import LogFile, LogReader  # noqa: E402
from pyprocserv._web import logview  # noqa: E402
from pyprocserv._web.app import build_app  # noqa: E402
from pyprocserv._web.auth import WebAuth  # noqa: E402
from pyprocserv._web.fleet import OneServer  # noqa: E402
from pyprocserv._web.serve import serve_asgi  # noqa: E402

from pyprocserv._core.webusers import WebUser, hash_password, serialize  # noqa: E402
from support.browser import open_browser  # noqa: E402
from support.client import Client  # noqa: E402
from support.launch import ServerProcess, serve_and_connect  # noqa: E402
from support.ports import free_port  # noqa: E402
from test_browser_console import PASSWORD, log_in, needs_chromium, wait_for_port  # noqa: E402
from test_webapp import IOC, Site, users_file  # noqa: E402
from test_websec import close_code  # noqa: E402


class LogAt:
    """The server as the web app sees it (``Root``), but with its log at ``path``."""

    def __init__(self, server: ProcessServer, path: str) -> None:
        self._server = server
        self.config = dataclasses.replace(server.config, logfile=path)

    def __getattr__(self, name: str):
        return getattr(self._server, name)


async def start(nursery: trio.Nursery, tmp_path, log: str | None = None, **auth_options):
    """A server with a telnet client past its greeting, and its web app reading ``log`` (default:
    the server's own log file)."""
    own = str(tmp_path / "ioc.log")
    config = Config(command=("/bin/cat",), control=("0",), name=IOC, logfile=own, holdoff=0.2)
    server, client = await serve_and_connect(nursery, config, extras=[])
    auth = WebAuth(users_file(tmp_path / "users"), "/", **auth_options)
    port = await nursery.start(serve_asgi, build_app(OneServer(LogAt(server, log or own)), auth), "127.0.0.1", 0)
    return Site(server, port, log or own), client


FOLLOW = f"/ws/ioc/{IOC}/log"


def follower(site: Site, start: int | str | None = None, origin: str | None = None):
    return site.socket(FOLLOW + ("" if start is None else f"?from={start}"), origin)


@dataclasses.dataclass
class Followed:
    data: bytearray = dataclasses.field(default_factory=bytearray)
    skipped: int = 0
    unknown_skips: int = 0  # {"skipped": null}: whole files rotated out unread
    new_files: int = 0

    async def until(self, ws, done) -> None:
        while not done(self):
            message = await ws.get_message()
            if isinstance(message, bytes):
                self.data += message
                continue
            event = json.loads(message)
            self.unknown_skips += "skipped" in event and event["skipped"] is None
            self.skipped += event.get("skipped") or 0
            self.new_files += event.get("file") == "new"


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# -- the tail, off the loop ---------------------------------------------------------------------

class FifoWriter:
    """Opens a FIFO for writing again and again, in a thread, once told to or after ``after``
    seconds: each open lets whoever is stuck opening it for reading go on."""

    def __init__(self, fifo: str, after: float) -> None:
        self.go, self.stop, self.opened = threading.Event(), threading.Event(), threading.Event()
        threading.Thread(target=self._run, args=(fifo, after), daemon=True).start()

    def _run(self, fifo: str, after: float) -> None:
        self.go.wait(after)
        for _ in range(600):
            if self.stop.is_set():
                return
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                self.opened.set()
            except OSError:  # nobody opening it for reading now
                pass
            self.stop.wait(0.05)


async def test_a_log_whose_open_blocks_stalls_no_console(nursery, tmp_path):
    """A log that cannot be opened yet (a FIFO without a writer; a stuck NFS server alike): the
    log page and the download wait for it in threads while a telnet client's echo goes on."""
    fifo = str(tmp_path / "stuck.log")
    os.mkfifo(fifo)
    site, client = await start(nursery, tmp_path, fifo)
    await site.login("vic")
    writer = FifoWriter(fifo, after=5)  # with the reads on the loop, the loop would wait for it
    replies = {}

    async def get(path: str) -> None:
        replies[path] = await site.get(f"/ioc/{IOC}" + path)

    try:
        async with trio.open_nursery() as requests:
            requests.start_soon(get, "/log")
            requests.start_soon(get, "/log/download")
            await trio.sleep(0.3)  # both are waiting for the FIFO now
            await client.send(b"still here\r")
            await client.expect(b"still here")
            assert not writer.opened.is_set(), "the echo waited for the log's open"
            assert not replies
            writer.go.set()
    finally:
        writer.stop.set()
    for path in ("/log", "/log/download"):
        assert replies[path].status == 404 and "not a regular file" in replies[path].text, path


# -- the page -----------------------------------------------------------------------------------

async def test_following_from_the_pages_end_misses_nothing_written_since(nursery, tmp_path):
    site, _ = await start(nursery, tmp_path)
    await site.login("vic")
    site.server.announce("before the page")
    while b"before the page" not in Path(site.log).read_bytes():
        await trio.sleep(0.02)
    page = await site.get(f"/ioc/{IOC}/log")
    assert 'id="follow"' in page.text and "before the page" in page.text
    end = int(re.search(r'data-end="(\d+)"', page.text).group(1))
    assert end == os.path.getsize(site.log)

    site.server.announce("between the page and the follow")
    async with follower(site, end) as ws:
        seen = Followed()
        with trio.fail_after(5):
            await seen.until(ws, lambda s: b"between the page and the follow" in s.data)
        assert b"before the page" not in seen.data


# -- following --------------------------------------------------------------------------------

async def test_a_viewer_follows_appended_lines_within_a_second(nursery, tmp_path):
    site, client = await start(nursery, tmp_path)
    await site.login("vic")
    async with follower(site) as ws:
        await trio.sleep(0.1)  # the follower has found the end of the file
        for n in range(3):
            await client.send(b"typed line %d\r" % n)
            seen = Followed()
            with trio.fail_after(2):  # a poll is half a second; slack for a loaded machine
                await seen.until(ws, lambda s: b"typed line %d" % n in s.data)


async def test_a_follower_reads_every_byte_across_size_rotations(nursery, tmp_path):
    path = str(tmp_path / "rotating.log")
    site, _ = await start(nursery, tmp_path, path)
    await site.login("vic")
    log = LogFile(path, max_bytes=300, backups=20)
    lines = [b"%03d: a line of the log, rotated by size\n" % n for n in range(60)]
    try:
        async with follower(site, 0) as ws:
            seen = Followed()
            for n, line in enumerate(lines):
                log.write(line)
                if n % 7 == 0:
                    await trio.sleep(0.1)  # some rotations while the follower waits, some while it reads
            with trio.fail_after(10):
                await seen.until(ws, lambda s: len(s.data) >= sum(map(len, lines)))
    finally:
        log.close()
    assert bytes(seen.data) == b"".join(lines)
    assert seen.new_files >= 7 and seen.skipped == 0


async def test_a_follower_that_never_reads_holds_one_chunk_and_is_told_what_it_missed(nursery, tmp_path):
    """Megabytes written while the browser reads nothing: the server does not keep them for it;
    when it reads again, every byte is either sent or counted as skipped."""
    path = str(tmp_path / "busy.log")
    append(path, b"")
    site, _ = await start(nursery, tmp_path, path)
    await site.login("vic")
    block = b"".join(b"%07d a busy IOC's output\n" % n for n in range(40_000))  # about 1.3 MB
    written = 0
    async with follower(site, 0) as ws:
        for _ in range(30):
            await trio.to_thread.run_sync(append, path, block)
            written += len(block)
            await trio.sleep(0.05)  # the follower sends until the socket's buffers are full
        seen = Followed()
        with trio.fail_after(20):
            await seen.until(ws, lambda s: len(s.data) + s.skipped >= written)
    assert len(seen.data) + seen.skipped == written
    assert seen.skipped > written // 2, (seen.skipped, written)  # it was not all queued for it
    assert seen.data.endswith(block[-logview.CHUNK:])  # and it ends with the newest


async def test_a_follower_more_rotations_behind_than_there_are_backups_is_told_files_were_skipped(
        nursery, tmp_path, monkeypatch):
    monkeypatch.setattr(logview, "POLL", 3.0)  # a wait long enough that a loaded machine finishes the read before it
    path = str(tmp_path / "rotating.log")
    site, _ = await start(nursery, tmp_path, path)
    await site.login("vic")
    log = LogFile(path, max_bytes=100, backups=2)
    lines = [bytes([65 + n]) * 60 + b"\n" for n in range(12)]  # a file each
    try:
        async with follower(site, 0) as ws:
            log.write(lines[0])
            seen = Followed()
            with trio.fail_after(10):
                await seen.until(ws, lambda s: lines[0] in s.data)
            await trio.sleep(1.0)  # its next read found nothing: it waits logview.POLL
            for line in lines[1:]:  # no checkpoint: the follower, waiting, reads none of them
                log.write(line)
            with trio.fail_after(10):
                await seen.until(ws, lambda s: lines[-1] in s.data)
    finally:
        log.close()
    assert seen.unknown_skips == 1 and seen.skipped == 0
    assert bytes(seen.data) == b"".join([lines[0], *lines[-3:]])  # the oldest backup on: the least lost


async def test_a_log_that_cannot_be_read_is_named_on_the_page_and_in_the_follow(nursery, tmp_path):
    (tmp_path / "a-directory").mkdir()
    site, _ = await start(nursery, tmp_path, str(tmp_path / "a-directory"))
    await site.login("vic")
    page = await site.get(f"/ioc/{IOC}/log")
    assert page.status == 404 and "cannot read the log file: Is a directory" in page.text
    async with follower(site) as ws:
        with trio.fail_after(5):
            assert json.loads(await ws.get_message()) == {"error": "cannot read the log: Is a directory"}
        assert await close_code(ws) == 1011


async def test_a_follower_gets_1001_when_the_web_server_stops(nursery, tmp_path):
    site, _ = await start(nursery, tmp_path)
    stop_web = trio.CancelScope()

    async def second_web_server(task_status=trio.TASK_STATUS_IGNORED) -> None:  # on the same IOC, stopped alone
        with stop_web:
            app = build_app(OneServer(site.server), WebAuth(users_file(tmp_path / "u2"), "/"))
            await serve_asgi(app, "127.0.0.1", 0, task_status=task_status)

    own = Site(site.server, await nursery.start(second_web_server), site.log)
    await own.login("vic")
    async with follower(own, 0) as ws:
        with trio.fail_after(5):
            await Followed().until(ws, lambda s: b"@@@" in s.data)
        stop_web.cancel()
        assert await close_code(ws) == 1001


# -- who may follow ---------------------------------------------------------------------------

@pytest.mark.parametrize("who, allowed", [(None, False), ("oth", False), ("vic", True), ("ada", True)])
async def test_a_viewer_or_an_operator_may_follow_and_nobody_else(nursery, tmp_path, who, allowed):
    site, _ = await start(nursery, tmp_path)
    if who:
        await site.login(who)
    if not allowed:
        assert await site.handshake(FOLLOW) == 403
        return
    async with follower(site, 0) as ws:
        seen = Followed()
        with trio.fail_after(5):
            await seen.until(ws, lambda s: b"@@@" in s.data)


async def test_a_follow_ends_at_the_next_check_once_its_visitor_logs_out(nursery, tmp_path):
    site, _ = await start(nursery, tmp_path, recheck_every=0.1)
    await site.login("vic")
    async with follower(site, 0) as ws:
        with trio.fail_after(5):
            await Followed().until(ws, lambda s: b"@@@" in s.data)
        assert (await site.post("/logout", {"csrf": await site.csrf()})).status == 303
        assert await close_code(ws) == 1008


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_follow_from_another_origin_is_refused(nursery, tmp_path, origin):
    site, _ = await start(nursery, tmp_path)
    await site.login("vic")
    assert await site.handshake(FOLLOW, origin) == 403


async def test_a_bad_start_offset_is_refused_naming_the_parameter(nursery, tmp_path):
    site, _ = await start(nursery, tmp_path)
    await site.login("vic")
    async with follower(site, "-1") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            with trio.fail_after(5):
                await ws.get_message()
        await ws._stream.aclose()  # trio-websocket leaves the socket of a connection the server closed
    assert closed.value.reason.code == 1008 and "from=" in closed.value.reason.reason


@given(st.text(max_size=30))
def test_any_start_offset_is_a_number_or_refused_by_name(text):
    try:
        offset = logview.start_offset(text)
    except ValueError as exc:
        assert str(exc).startswith("from=") and "decimal digits" in str(exc)
    else:
        assert text.isascii() and text.isdigit() and offset == int(text)


# -- the reader -------------------------------------------------------------------------------

def test_a_reader_whose_file_was_rotated_out_goes_on_from_the_oldest_backup_and_counts_the_loss(tmp_path):
    path = str(tmp_path / "ioc.log")
    log, reader = LogFile(path, max_bytes=100, backups=2), LogReader(path, 0)
    lines = [bytes([65 + n]) * 60 + b"\n" for n in range(12)]  # a file each
    seen = b""
    try:
        assert reader.read() == b""
        for line in lines:
            log.write(line)
        while chunk := reader.read(64):
            seen += chunk
    finally:
        reader.close()
        log.close()
    assert seen == b"".join([lines[0], *lines[-3:]]) and reader.lost == 1


def test_a_reader_starts_over_on_a_truncated_or_rotated_file_and_skips_when_asked(tmp_path):
    path = str(tmp_path / "ioc.log")
    append(path, b"0123456789")
    reader = LogReader(path, 100)  # measured before a rotation: the file now is shorter
    try:
        assert reader.read() == b"0123456789"
        os.truncate(path, 0)
        append(path, b"abc")  # copytruncate, then the IOC writes on
        assert reader.read() == b"abc" and reader.files == 2
        append(path, b"x" * 50 + b"tail")
        assert reader.unread() == 54
        reader.skip(50)
        assert reader.read(2) == b"ta" and reader.read() == b"il" and reader.read() == b""
    finally:
        reader.close()


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(1, 120), st.booleans(), st.integers(1, 200)), max_size=40))
def test_a_reader_misses_no_byte_however_writes_rotations_and_reads_interleave(steps):
    """Each step writes n bytes (rotating past 100 bytes), then maybe reads up to a limit; the
    reader has its file open from the start (before that, rule 1: it starts where it opens)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "ioc.log")
        log, reader = LogFile(path, max_bytes=100, backups=100), LogReader(path, 0)
        written, seen = bytearray(), bytearray()
        try:
            assert reader.read() == b"" and reader.files == 1
            for n, (size, read, limit) in enumerate(steps):
                data = bytes([65 + n % 26]) * size
                log.write(data)
                written += data
                if read:
                    seen += reader.read(limit)
            while chunk := reader.read(64):
                seen += chunk
        finally:
            reader.close()
            log.close()
        assert bytes(seen) == bytes(written)


# -- in a real browser ------------------------------------------------------------------------

@needs_chromium
async def test_in_chromium_the_follow_box_appends_keeps_the_bottom_in_view_and_bounds_the_text(tmp_path):
    users = tmp_path / "users"
    users.write_text(serialize([WebUser("vic", "viewer", hash_password(PASSWORD, n=16, r=1, p=1))]))
    port, telnet = free_port(), free_port()
    log = tmp_path / "log"
    args = ["-q", "--web", str(port), "--web-users", str(users), "-L", str(log), "-n", "demo",
            "-P", str(telnet), "/bin/cat"]
    async with ServerProcess(args), open_browser() as browser:
        await wait_for_port(port)
        page = await log_in(browser, f"http://127.0.0.1:{port}/", "vic", PASSWORD)
        await page.goto(f"http://127.0.0.1:{port}/ioc/demo/log")
        await page.wait_for("document.getElementById('follow') !== null")
        await page.evaluate("document.getElementById('follow').click()")
        client = await Client.connect_tcp(telnet)
        try:
            await client.send(b"typed while followed\r")
            await page.wait_for("document.getElementById('log').textContent.includes('typed while followed')")
        finally:
            await client.aclose()
        for block in range(6):  # 1.5 MB in all, more than the page keeps, in pieces it need not skip
            append(str(log), b"".join(b"%d %06d a line the page drops the oldest of\n" % (block, n)
                                      for n in range(6000)))
            text = await page.wait_for("(() => { const t = document.getElementById('log').textContent;"
                                       f" return t.includes('{block} 005999 a line') && t; }})()", timeout=15)
        assert len(text) <= 1 << 19 and "typed while followed" not in text and "skipped" not in text
        assert await page.evaluate("(() => { const l = document.getElementById('log');"
                                   " return l.scrollTop + l.clientHeight >= l.scrollHeight - 2; })()")
