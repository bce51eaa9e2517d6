"""End to end in real headless Chromium: ``pyprocserv --web`` as a person uses it (issue #12).

The program runs ``/bin/cat`` with a credentials file; the browser logs in, reads the status
table, presses restart and sees the pid change, then types into the xterm.js console and reads
the echo from the terminal's buffer. Screenshots go to the test's temporary directory;
``PYPROCSERV_SCREENSHOTS=DIR`` saves them there instead (docs/screenshots/ is refreshed by hand,
only when the pages change meaningfully).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from support.browser import CHROMIUM, open_browser  # noqa: E402
from support.launch import ServerProcess  # noqa: E402
from support.ports import free_port  # noqa: E402

from pyprocserv._core.webusers import WebUser, hash_password, serialize  # noqa: E402

IN_CI = os.environ.get("CI") == "true"
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it",
)
PASSWORD = "correct horse"


def text_of(key: str, ioc: str = "demo") -> str:
    """JavaScript: the text of column ``key`` in the status table's row of ``ioc``."""
    return f"(document.querySelector('tr[data-ioc=\"{ioc}\"] [data-key=\"{key}\"]') || {{}}).textContent"


def terminal_text() -> str:
    """JavaScript: the whole terminal buffer as text, one line each."""
    return ("(() => { const b = window.term && term.buffer.active; if (!b) return '';"
            " const lines = []; for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));"
            " return lines.join('\\n'); })()")


async def wait_for_port(port: int) -> None:
    with trio.fail_after(15):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def log_in(browser, base: str, user: str, password: str):
    """A page of ``base`` where ``user`` has logged in as a person does: typing into the form."""
    page = await browser.open(base)  # not logged in: the login page
    await page.wait_for("document.activeElement && document.activeElement.id === 'user'")
    await page.type(user)
    await page.evaluate("document.getElementById('password').focus()")
    await page.type(password)
    await page.evaluate("window.__ppsLeft = true; document.getElementById('login').click()")
    await page.wait_for("document.readyState === 'complete' && !window.__ppsLeft && location.pathname === '/'")
    return page


@needs_chromium
async def test_log_in_read_the_status_restart_and_type_into_the_console(tmp_path):
    shots = Path(os.environ.get("PYPROCSERV_SCREENSHOTS") or tmp_path)
    users = tmp_path / "users"
    users.write_text(serialize([WebUser("ada", "operator", hash_password(PASSWORD, n=16, r=1, p=1))]))
    port = free_port()
    args = ["-q", "--web", str(port), "--web-users", str(users), "-L", str(tmp_path / "log"),
            "-n", "demo", "--holdoff", "0.2", "--history", "50", "-P", str(free_port()), "/bin/cat"]
    async with ServerProcess(args), open_browser() as browser:
        await wait_for_port(port)
        base = f"http://127.0.0.1:{port}/"
        page = await log_in(browser, base, "ada", PASSWORD)

        pid = await page.wait_for(f"/^[0-9]+$/.test({text_of('pid')}) && {text_of('pid')}")
        assert await page.evaluate(text_of("state")) == "running"
        await page.screenshot(shots / "web-status.png")

        await page.evaluate("document.querySelector('tr[data-ioc=\"demo\"] button[data-action=\"restart\"]').click()")
        new_pid = await page.wait_for(
            f"/^[0-9]+$/.test({text_of('pid')}) && {text_of('pid')} !== {pid!r} && {text_of('pid')}", timeout=15)
        assert new_pid != pid
        assert await page.evaluate(text_of("restarts")) == "1"

        await page.goto(base + "ioc/demo/console")
        await page.wait_for("window.consoleReady === true")
        await page.wait_for("document.activeElement === term.textarea")
        await page.type("hello from chromium\n")
        screen = await page.wait_for(
            f"{terminal_text()}.split('hello from chromium').length >= 3 && {terminal_text()}")
        assert "@@@ web: restart by ada from 127.0.0.1" in screen  # replayed (--history)
        await page.screenshot(shots / "web-console.png")
    log = (tmp_path / "log").read_text()
    assert "hello from chromium" in log and "ada from 127.0.0.1 attached read-write in a browser" in log
