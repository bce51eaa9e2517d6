"""Headless Chromium for end-to-end tests, driven over the DevTools protocol from trio.

``async with open_browser() as browser: page = await browser.open(url)``, then
``page.wait_for(js)``, ``page.evaluate(js)``, ``page.type(text)``, ``page.press(key)`` and
``page.screenshot(path)``.

Rules:
* Debian's ``chromium`` (``CHROMIUM``; None when it is not installed: tests skip locally and
  fail in CI, which installs it). Headless, ``--no-sandbox`` (CI runs as root), a private
  profile in a fresh temporary directory, and port 0 for DevTools: Chromium picks a free port
  and writes it to ``DevToolsActivePort`` in the profile, so no port is ever guessed.
* Chromium runs in a session of its own, with its config and cache (crash reports too) in
  the same temporary directory, and a mark in its environment that every process it starts
  inherits. On leaving ``open_browser`` (normally, on an error, on a cancel or timeout) its
  session is killed, and so is every process carrying the mark (Debian's wrapper turns the
  crash handlers on, and they start sessions of their own); then the temporary directory is
  removed. Nothing outlives the block, and nothing is written outside it.
* One WebSocket to the browser; each page is a target attached in flat mode (its commands carry
  a session id). A command that fails raises ``BrowserError`` naming the method and Chromium's
  message; a JavaScript exception raises it with the exception's text.
* Waits poll a JavaScript condition and fail with ``BrowserError`` after ``timeout`` seconds,
  naming the condition, its last value and the page's console errors so far.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from .proc import all_pids, stat_fields

CHROMIUM = shutil.which("chromium")
_MARK = "PYPROCSERV_TEST_BROWSER"  # in the environment of every process a browser here starts
WINDOW = (1024, 768)
START_TIMEOUT = 20.0  # seconds; a cold start on a loaded 2-core CI machine takes a few

_FLAGS = (
    "--headless", "--no-sandbox", "--remote-debugging-port=0",
    "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-crash-reporter", "--disable-breakpad", "--mute-audio", "--password-store=basic",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)

# Keys ``press`` knows: DevTools key name -> (code, Windows virtual key code, text it types).
_KEYS: dict[str, tuple[str, int, str]] = {
    "Enter": ("Enter", 13, "\r"),
    "Tab": ("Tab", 9, "\t"),
    "Backspace": ("Backspace", 8, ""),
    "Escape": ("Escape", 27, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "ArrowDown": ("ArrowDown", 40, ""),
    "ArrowLeft": ("ArrowLeft", 37, ""),
    "ArrowRight": ("ArrowRight", 39, ""),
}
_ALT, _CTRL, _META, _SHIFT = 1, 2, 4, 8  # DevTools' modifier bits


class BrowserError(Exception):
    """Chromium did not start, a DevTools command failed, or a wait timed out."""


def parse_devtools_active_port(text: str) -> tuple[int, str]:
    """The port and browser WebSocket path from a ``DevToolsActivePort`` file's text.

    The file holds two lines: the port, then a path such as ``/devtools/browser/<id>``.
    """
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].isascii() or not lines[0].isdigit() or not lines[1].startswith("/"):
        raise BrowserError(f"DevToolsActivePort is not a port and a path: {text[:200]!r}")
    port = int(lines[0])
    if not 0 < port < 65536:
        raise BrowserError(f"DevToolsActivePort names port {port}, outside 1..65535")
    return port, lines[1]


def processes_of(root: str, session: int) -> set[int]:
    """Living processes of the browser in ``root`` whose first process is ``session``.

    Those in its session, and those that left it (the crash handlers) found by the mark in
    their environment. Either test alone misses some: Chromium's zygote children overwrite
    their environment with their titles.
    """
    mark = f"\0{_MARK}={root}\0".encode()
    found = set()
    for pid in all_pids():
        try:
            fields = stat_fields(pid)
            if fields[0] in ("Z", "X"):
                continue
            if int(fields[3]) == session:
                found.add(pid)
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark in b"\0" + f.read() + b"\0":
                    found.add(pid)
        except (OSError, IndexError, ValueError):
            continue
    return found


class Page:
    """One tab: a DevTools target attached in flat mode."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    async def send(self, method: str, **params: Any) -> dict:
        return await self._browser.send(method, _session=self._session, **params)

    async def goto(self, url: str, *, timeout: float = 10.0) -> None:
        """Load ``url`` and wait until its document (and what it loads) is complete.

        The old document is marked first, so a redirect or a normalised URL still counts as
        arrived, and the old page's readyState never does.
        """
        await self.evaluate("window.__ppsLeft = true")
        reply = await self.send("Page.navigate", url=url)
        if reply.get("errorText"):
            raise BrowserError(f"cannot load {url}: {reply['errorText']}")
        await self.wait_for("document.readyState === 'complete' && !window.__ppsLeft", timeout=timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise), as JSON would carry it."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                awaitPromise=True)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript {expression!r} threw: {text}")
        return reply["result"].get("value")

    async def wait_for(self, condition: str, *, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll the JavaScript ``condition`` until it is truthy; return its value."""
        value = None
        with trio.move_on_after(timeout):
            while True:
                value = await self.evaluate(condition)
                if value:
                    return value
                await trio.sleep(interval)
        raise BrowserError(f"after {timeout} s, {condition!r} is still {value!r}; "
                           f"console errors: {self._browser.console_errors or 'none'}")

    async def type(self, text: str) -> None:
        """Type ``text`` into the focused element, one key event per character (``\\n`` is Enter).

        Other control characters are refused: a chord such as ^X is ``press("x", ctrl=True)``.
        """
        for char in text:
            if char not in "\n\t" and unicodedata.category(char) == "Cc":
                raise BrowserError(f"type() cannot type {char!r}: use press() for control keys, "
                                   "e.g. press('x', ctrl=True) for ^X")
        for char in text:
            if char == "\n":
                await self.press("Enter")
            elif char == "\t":
                await self.press("Tab")
            else:
                await self.send("Input.dispatchKeyEvent", type="keyDown", key=char, text=char,
                                unmodifiedText=char)
                await self.send("Input.dispatchKeyEvent", type="keyUp", key=char)

    async def press(self, key: str, *, ctrl: bool = False, alt: bool = False, shift: bool = False,
                    meta: bool = False) -> None:
        """Press and release one key: a name from ``_KEYS`` or a single letter or digit.

        With ``ctrl`` and a letter, the page sees e.g. Ctrl+X (a terminal sends 0x18).
        """
        modifiers = _ALT * alt | _CTRL * ctrl | _META * meta | _SHIFT * shift
        if key in _KEYS:
            code, vk, text = _KEYS[key]
        elif len(key) == 1 and key.isascii() and key.isalnum():
            code = f"Key{key.upper()}" if key.isalpha() else f"Digit{key}"
            vk, text = ord(key.upper()), key
        else:
            raise BrowserError(f"press() does not know the key {key!r}; use one of {sorted(_KEYS)}, "
                               "a letter or a digit, or type() for text")
        if modifiers & (_CTRL | _ALT | _META):
            text = ""  # a chord types no character of its own
        down = {"type": "keyDown" if text else "rawKeyDown", "key": key, "code": code,
                "windowsVirtualKeyCode": vk, "modifiers": modifiers}
        if text:
            down |= {"text": text, "unmodifiedText": text}
        await self.send("Input.dispatchKeyEvent", **down)
        await self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code,
                        windowsVirtualKeyCode=vk, modifiers=modifiers)

    async def screenshot(self, path: str | os.PathLike) -> Path:
        """Save a PNG of the page's viewport to ``path`` and return it."""
        reply = await self.send("Page.captureScreenshot", format="png")
        path = Path(path)
        path.write_bytes(base64.b64decode(reply["data"]))
        return path


class Browser:
    """One WebSocket to Chromium's browser target.

    One command at a time (a lock): the caller sends, then reads messages until its reply comes,
    noting the events that arrive meanwhile. No background task, so an error in the test's block
    leaves ``open_browser`` as itself, not wrapped in an exception group.
    """

    def __init__(self, ws, pid: int, root: str) -> None:
        self._ws = ws
        self.pid = pid
        self.root = root  # the temporary directory: profile, log, Chromium's config and cache
        self._next_id = 0
        self._lock = trio.Lock()
        self.console_errors: list[str] = []

    async def send(self, method: str, _session: str | None = None, **params: Any) -> dict:
        async with self._lock:
            self._next_id += 1
            message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
            if _session is not None:
                message["sessionId"] = _session
            try:
                await self._ws.send_message(json.dumps(message))
                while True:
                    reply = json.loads(await self._ws.get_message())
                    if reply.get("id") == message["id"]:
                        break
                    self._note_event(reply)
            except ConnectionClosed:
                raise BrowserError(f"{method}: Chromium closed the DevTools connection") from None
        if "error" in reply:
            error = reply["error"]
            raise BrowserError(f"{method} failed: {error.get('message')} {error.get('data', '')}".rstrip())
        return reply.get("result", {})

    def _note_event(self, message: dict) -> None:
        params = message.get("params", {})
        if message.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console_errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        elif message.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))

    async def open(self, url: str = "about:blank", *, timeout: float = 10.0) -> Page:
        """A new tab showing ``url``, loaded (``Page.goto``)."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        if url != "about:blank":
            await page.goto(url, timeout=timeout)
        return page


async def _devtools_url(process: trio.Process, profile: str, log: Path) -> str:
    port_file = Path(profile, "DevToolsActivePort")
    with trio.move_on_after(START_TIMEOUT):
        while True:
            if process.poll() is not None:
                raise BrowserError(f"chromium exited with status {process.returncode} before DevTools "
                                   f"was up; its log ends: {log.read_text(errors='replace')[-2000:]}")
            try:
                text = port_file.read_text()
            except FileNotFoundError:
                text = ""
            if len(text.splitlines()) >= 2:  # Chromium writes it whole (a rename): port, then path
                port, path = parse_devtools_active_port(text)
                return f"ws://127.0.0.1:{port}{path}"
            await trio.sleep(0.02)
    raise BrowserError(f"chromium wrote no DevToolsActivePort within {START_TIMEOUT} s; "
                       f"its log ends: {log.read_text(errors='replace')[-2000:]}")


def _kill_everything(process: trio.Process, root: str) -> None:
    """SIGKILL the browser's session at once, then whatever else ``processes_of`` finds."""
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its group is its session: it never makes groups
    except ProcessLookupError:
        pass
    for pid in processes_of(root, process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    """Headless Chromium with a private profile, killed with all it started when the block ends."""
    if CHROMIUM is None:
        raise BrowserError("chromium is not installed (apt-get install chromium)")
    root = tempfile.mkdtemp(prefix="pps-chromium-")
    profile = os.path.join(root, "profile")
    log = Path(root, "chromium.log")
    process = None
    try:
        with open(log, "wb") as log_file:
            process = await trio.lowlevel.open_process(
                [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
                env={**os.environ, "XDG_CONFIG_HOME": root, "XDG_CACHE_HOME": root, _MARK: root})
        url = await _devtools_url(process, profile, log)
        async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
            yield Browser(ws, process.pid, root)
    finally:
        with trio.CancelScope(shield=True):
            if process is not None:
                _kill_everything(process, root)
                await process.wait()
                with trio.move_on_after(5):
                    while processes_of(root, process.pid):
                        _kill_everything(process, root)
                        await trio.sleep(0.02)
            shutil.rmtree(root, ignore_errors=True)
