"""End-to-end tests in real headless Chromium, and the harness they stand on (support/browser.py).

Needs Debian's ``chromium``: ``.ci/run`` installs it. Outside CI these tests are skipped when it
is missing; in CI (``CI=true``) a missing chromium fails.

The pages are served by Python's http.server in a thread, from files the test writes and the
xterm.js files vendored in the package: what the browser loads is exactly that.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

import pyprocserv
from hypothesis import given
from hypothesis import strategies as st

from support.browser import CHROMIUM, BrowserError, open_browser, parse_devtools_active_port, processes_of
from support.ports import free_port
from support.proc import alive

IN_CI = os.environ.get("CI") == "true"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it",
)

TEXTAREA_PAGE = """<!doctype html><meta charset="utf-8"><title>keys</title>
<textarea id="t" autofocus></textarea>
<script>
window.chords = [];
document.addEventListener("keydown", e => { if (e.ctrlKey) chords.push("ctrl+" + e.key); });
</script>
"""


XTERM = Path(pyprocserv.__file__).parent / "_web" / "static" / "xterm"

# A terminal that echoes what is typed (as a console with echo on would) and records what it sends.
TERMINAL_PAGE = """<!doctype html><meta charset="utf-8"><title>terminal</title>
<link rel="stylesheet" href="xterm/xterm.css"><script src="xterm/xterm.js"></script>
<div id="terminal"></div>
<script>
window.sent = [];
window.term = new Terminal({cols: 80, rows: 24});
term.open(document.getElementById("terminal"));
term.onData(data => { sent.push(data); term.write(data === "\\r" ? "\\r\\n" : data); });
term.focus();
</script>
"""
TERMINAL_FOCUSED = "window.term && document.activeElement === term.textarea"


def line(n: int) -> str:
    """JavaScript: line ``n`` of the terminal's screen as text, trailing blanks trimmed."""
    return f"term.buffer.active.getLine({n}).translateToString(true)"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the test's output is for failures, not for requests
        pass


@contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT/ serving ``root``, from a thread, for the block's duration."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


@pytest.fixture
def site(tmp_path) -> Iterator[str]:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "keys.html").write_text(TEXTAREA_PAGE)
    (tmp_path / "site" / "terminal.html").write_text(TERMINAL_PAGE)
    (tmp_path / "site" / "xterm").symlink_to(XTERM)
    (tmp_path / "site" / "moved").mkdir()
    (tmp_path / "site" / "moved" / "index.html").write_text("<title>arrived</title>")
    with serve_directory(tmp_path / "site") as url:
        yield url


def test_ci_installs_chromium():
    if IN_CI:
        assert CHROMIUM, "CI must install chromium (apt-get install chromium)"


@needs_chromium
async def test_keys_typed_into_xterm_come_back_from_its_buffer_and_a_screenshot_is_saved(site, tmp_path):
    async with open_browser() as browser:
        page = await browser.open(site + "terminal.html")
        await page.wait_for(TERMINAL_FOCUSED)
        await page.type("hello")
        await page.wait_for(f"{line(0)} === 'hello'")

        # What a console sends for Enter and ^X (procServ's restart key): CR and 0x18.
        await page.press("Enter")
        await page.press("x", ctrl=True)
        await page.type("next")
        await page.wait_for(f"{line(1)} === 'next'")  # the echoed ^X shows nothing
        assert await page.evaluate("sent.join('')") == "hello\r\x18next"

        shot = await page.screenshot(tmp_path / "terminal.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 1000


@needs_chromium
async def test_text_typed_as_key_events_reaches_the_page_intact(site):
    async with open_browser() as browser:
        page = await browser.open(site + "keys.html")
        await page.wait_for("document.activeElement.id === 't'")
        # What the console tests will type: quotes, backslashes, non-ASCII, a line break.
        text = "hello 'q' \"d\" \\ é 中\nnext"
        await page.type(text)
        assert await page.evaluate("document.getElementById('t').value") == text


@needs_chromium
async def test_a_control_chord_reaches_the_page_as_ctrl_and_the_key(site):
    async with open_browser() as browser:
        page = await browser.open(site + "keys.html")
        await page.press("x", ctrl=True)
        assert await page.evaluate("chords") == ["ctrl+x"]
        assert await page.evaluate("document.getElementById('t').value") == ""  # a chord types nothing


@needs_chromium
async def test_errors_name_the_javascript_and_what_the_page_reported(site):
    async with open_browser() as browser:
        page = await browser.open(site + "keys.html")
        with pytest.raises(BrowserError, match="no_such_thing"):
            await page.evaluate("no_such_thing.value")

        await page.evaluate("setTimeout(() => { throw new Error('boom from the page') }, 0)")
        with pytest.raises(BrowserError) as raised:
            await page.wait_for("window.never_set", timeout=0.5)
        assert "window.never_set" in str(raised.value)
        assert "boom from the page" in str(raised.value)

        with pytest.raises(BrowserError, match="does not know the key"):
            await page.press("NoSuchKey")
        with pytest.raises(BrowserError, match="use press"):
            await page.type("a\x18b")
        assert await page.evaluate("document.getElementById('t').value") == ""  # nothing half-typed

        unserved = f"http://127.0.0.1:{free_port()}/"
        with pytest.raises(BrowserError, match=f"cannot load {unserved}: net::ERR_CONNECTION_REFUSED"):
            await page.goto(unserved)


@needs_chromium
async def test_a_page_that_redirects_is_waited_for_where_it_lands(site):
    async with open_browser() as browser:
        page = await browser.open(site + "moved")  # http.server answers 301 to moved/
        assert await page.evaluate("[document.title, location.href]") == ["arrived", site + "moved/"]


async def _processes_and_directory_of_a_browser_left_by(how: str) -> tuple[set[int], str, int]:
    """Start a browser with a page, record its processes, leave the block by ``how``."""
    seen: dict = {}

    async def use_it():
        async with open_browser() as browser:
            await browser.open("data:text/html,<p>hi</p>")
            seen["pids"] = processes_of(browser.root, browser.pid)
            seen["root"], seen["session"] = browser.root, browser.pid
            assert browser.pid in seen["pids"] and len(seen["pids"]) >= 5  # renderers, helpers, crash handlers
            if how == "error":
                raise RuntimeError("the test failed")
            if how == "timeout":
                await trio.sleep_forever()

    if how == "error":
        with pytest.raises(RuntimeError):
            await use_it()
    elif how == "timeout":
        with trio.move_on_after(1.0) as scope:
            await use_it()
        assert scope.cancelled_caught
    else:
        await use_it()
    return seen["pids"], seen["root"], seen["session"]


@needs_chromium
@pytest.mark.parametrize("how", ["normally", "error", "timeout"])
async def test_no_chromium_process_or_profile_outlives_the_block(how):
    pids, root, session = await _processes_and_directory_of_a_browser_left_by(how)
    assert not processes_of(root, session)
    assert not [pid for pid in pids if alive(pid)]
    assert not os.path.exists(root)


def test_a_missing_chromium_is_named_with_how_to_install_it(monkeypatch):
    monkeypatch.setattr("support.browser.CHROMIUM", None)

    async def start():
        async with open_browser():
            pass

    with pytest.raises(BrowserError, match="apt-get install chromium"):
        trio.run(start)


def test_devtools_active_port_is_parsed():
    assert parse_devtools_active_port("36247\n/devtools/browser/ab-12\n") == (36247, "/devtools/browser/ab-12")


@given(st.text())
def test_any_devtools_active_port_text_parses_or_is_refused_by_name(text):
    try:
        port, path = parse_devtools_active_port(text)
    except BrowserError as e:
        assert "DevToolsActivePort" in str(e)
    else:
        assert 0 < port < 65536 and path.startswith("/")
