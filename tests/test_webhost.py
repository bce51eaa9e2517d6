"""Host mode's browser console (issue #12): ``pyprocserv-manage run --web`` as an operator uses it.

The real program serves two instances running ``/bin/cat`` from a ``--conf-dir``; a raw HTTP
and WebSocket client (``support.webclient``) logs in, reads the table, restarts one instance
and sees the new pid pushed on ``ws/status``, types into a console, and watches a reload take
an instance (and its open console) away. The options are pyprocserv's, with its checks and
words, and a web console that cannot start leaves every instance running. The same, in real
headless Chromium, saves ``docs/screenshots/web-host.png`` when ``PYPROCSERV_SCREENSHOTS`` names
a directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
from pathlib import Path

import pytest
import trio

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from trio_websocket import ConnectionClosed  # noqa: E402

from pyprocserv._apps import wiring  # noqa: E402
from pyprocserv._core.cli import parse_args  # noqa: E402
from pyprocserv._core.webusers import WebUser, hash_password, serialize  # noqa: E402

from support.browser import open_browser  # noqa: E402
from support.launch import short_tmpdir  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.webclient import WebClient, attach, read_until  # noqa: E402
from test_browser_console import log_in, needs_chromium, terminal_text, wait_for_port  # noqa: E402
from test_manage import HostProcess, manage, write_conf  # noqa: E402

PASSWORD = {"ada": "operator's secret", "vic": "viewer's secret"}
TWO = """\
    [alpha]
    command = /bin/cat
    holdoff = 0.2
    [beta]
    command = /bin/cat
    holdoff = 0.2
"""


def users_file(conf: str) -> str:
    path = Path(conf) / "web-users"
    path.write_text(serialize([WebUser(name, role, hash_password(PASSWORD[name], n=16, r=1, p=1))
                               for name, role in (("ada", "operator"), ("vic", "viewer"))]))
    return str(path)


class Host(HostProcess):
    """``pyprocserv-manage --conf-dir CONF run ARGS`` in the background, and its instances' logs."""

    def log(self, name: str) -> str:
        path = Path(self.conf) / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_for_log(self, name: str, needle: str) -> None:
        with trio.fail_after(10):
            while needle not in self.log(name):
                await trio.sleep(0.05)


async def next_snapshot(ws, wanted) -> dict[str, dict]:
    """The first status message pushed on ``ws`` for which ``wanted(by name)`` holds."""
    with trio.fail_after(15):
        while True:
            by_name = {entry["name"]: entry for entry in json.loads(await ws.get_message())}
            if wanted(by_name):
                return by_name


def all_running(*names: str):
    return lambda s: set(s) == set(names) and all(s[n].get("running") for n in names)


async def test_host_mode_serves_one_console_for_every_instance(nursery):
    conf = short_tmpdir()
    write_conf(conf, TWO)
    port = free_port()
    async with Host(conf, "--web", str(port), "--web-users", users_file(conf)) as host:
        await wait_for_port(port)
        ada = WebClient(port)
        assert (await ada.get("/")).header("location") == "/login"
        assert (await ada.login("ada", PASSWORD["ada"])).status == 303

        async with ada.socket("/ws/status") as status:
            first = await next_snapshot(status, all_running("alpha", "beta"))
            listed = json.loads((await ada.get("/api/status")).body)
            assert [entry["name"] for entry in listed] == ["alpha", "beta"]

            assert (await ada.act("restart", await ada.csrf(), "alpha")).status == 200
            after = await next_snapshot(status, lambda s: s["alpha"].get("running")
                                        and s["alpha"]["pid"] != first["alpha"]["pid"])
            assert after["beta"]["pid"] == first["beta"]["pid"] and after["beta"]["start_count"] == 1
            await host.wait_for_log("alpha", "@@@ web: restart by ada from 127.0.0.1")
            assert "restart by" not in host.log("beta")

            async with ada.console("alpha") as console:
                await attach(console)
                await console.send_message(b"hello host mode\r")
                await read_until(console, b"hello host mode\r\n")
            async with ada.console("alpha") as again:  # a reload of the page: the recent screen comes back
                assert b"hello host mode\r\n" in await attach(again)
            await host.wait_for_log("alpha", "ada from 127.0.0.1 attached read-write in a browser")
            assert "attached read-write" not in host.log("beta")

            async with ada.console("beta", spy=True) as spy:
                await attach(spy)
                write_conf(conf, TWO.split("    [beta]")[0])  # beta removed
                assert host.process is not None
                host.process.send_signal(signal.SIGHUP)
                with pytest.raises(ConnectionClosed):  # its console closes with its server
                    with trio.fail_after(15):
                        while True:
                            await spy.get_message()
                await spy._stream.aclose()  # trio-websocket leaves the socket of a connection the server closed
            await next_snapshot(status, lambda s: list(s) == ["alpha"])  # the table follows
        assert (await ada.get("/ioc/beta/console")).status == 404


def test_host_mode_takes_pyprocservs_web_options_with_its_rules_and_words(tmp_path):
    conf = short_tmpdir()
    write_conf(conf, TWO)
    refused = manage(conf, "run", "--web", "0.0.0.0:8080", "--web-users", users_file(conf), check=False)
    assert refused.returncode == 1
    assert refused.stderr == ("pyprocserv-manage: --web 0.0.0.0:8080 needs --web-cert/--web-key and --web-users: "
                              "a browser console beyond loopback must use https and log its users in (missing: "
                              "--web-cert, --web-key); or serve on loopback: --web 8080\n")
    assert "--web-users needs --web" in manage(conf, "run", "--web-users", "x", check=False).stderr
    missing = manage(conf, "run", "--web", "8080", "--web-users", str(tmp_path / "nobody"), check=False)
    assert missing.returncode == 1 and "--web-users" in missing.stderr and "No such file" in missing.stderr
    assert not (Path(conf) / "log").exists()  # refused before anything started
    helped = manage(conf, "run", "--help").stdout
    for option in ("--web [ADDR:]PORT", "--web-users FILE", "--web-cert FILE", "--web-key FILE", "--web-base PATH",
                   "--web-proxy ADDR[,ADDR...]", "--web-proxy-user HEADER", "--web-origin URL"):
        assert option in helped
    proxied = manage(conf, "run", "--web", "8080", "--web-proxy", "127.0.0.1", check=False)
    assert proxied.returncode == 1 and "--web-proxy" in proxied.stderr and "--web-users" in proxied.stderr
    bad_origin = manage(conf, "run", "--web", "8080", "--web-origin", "iocs.example.org", check=False)
    assert bad_origin.returncode == 1 and "--web-origin" in bad_origin.stderr
    assert not (Path(conf) / "log").exists()


def test_host_modes_proxy_options_reach_the_console_as_pyprocservs_do(tmp_path):
    args = argparse.Namespace(web="8080", web_users=str(tmp_path / "users"), web_cert=None, web_key=None,
                              web_base="/iocs/", web_proxy="10.0.0.5,10.1.0.0/24", web_proxy_user="X-Remote-User",
                              web_origin="https://iocs.example.org")
    settings = wiring.host_web(args, "pyprocserv-manage")
    single = parse_args(["pyprocserv", "--web", "8080", "--web-users", args.web_users, "--web-base", "/iocs/", "--web-proxy",
                         args.web_proxy, "--web-proxy-user", args.web_proxy_user, "--web-origin", args.web_origin,
                         "20000", "cat"]).config
    for name in ("web", "web_users", "web_base", "web_proxies", "web_proxy_user", "web_origin"):
        assert getattr(settings, name) == getattr(single, name), name


async def test_a_web_console_that_cannot_start_leaves_every_instance_running(nursery):
    conf = short_tmpdir()
    write_conf(conf, TWO)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with Host(conf, "--web", str(port)) as host:
            with trio.fail_after(20):
                while not all((Path(conf) / "run" / f"procserv-{n}" / "status").exists() for n in ("alpha", "beta")):
                    await trio.sleep(0.05)
                while "web console failed" not in host.log("alpha"):
                    await trio.sleep(0.05)
            for name in ("alpha", "beta"):
                status = json.loads((Path(conf) / "run" / f"procserv-{name}" / "status").read_text())
                assert status["running"], name
            assert host.process is not None and host.process.returncode is None


def text_of(name: str, key: str) -> str:
    return f"(document.querySelector('tr[data-ioc=\"{name}\"] [data-key=\"{key}\"]') || {{}}).textContent"


@needs_chromium
async def test_in_chromium_log_in_restart_one_ioc_type_into_its_console_and_spy(tmp_path):
    shots = Path(os.environ.get("PYPROCSERV_SCREENSHOTS") or tmp_path)
    conf = short_tmpdir()
    write_conf(conf, TWO)
    port = free_port()
    async with Host(conf, "--web", str(port), "--web-users", users_file(conf)) as host, \
            open_browser() as browser:
        await wait_for_port(port)
        base = f"http://127.0.0.1:{port}/"
        page = await log_in(browser, base, "ada", PASSWORD["ada"])

        pids = {}
        for name in ("alpha", "beta"):
            pid_js = text_of(name, "pid")
            pids[name] = await page.wait_for(f"/^[0-9]+$/.test({pid_js}) && {pid_js}", timeout=15)
            assert await page.evaluate(text_of(name, "state")) == "running"
        messages = await page.evaluate("window.statusMessages")

        await page.evaluate("document.querySelector('tr[data-ioc=\"beta\"] button[data-action=\"restart\"]').click()")
        beta_pid = text_of("beta", "pid")
        new_pid = await page.wait_for(f"/^[0-9]+$/.test({beta_pid}) && {beta_pid} !== {pids['beta']!r} && {beta_pid}",
                                      timeout=15)
        assert new_pid != pids["beta"] and await page.evaluate(text_of("beta", "restarts")) == "1"
        assert await page.evaluate(text_of("alpha", "pid")) == pids["alpha"]
        assert await page.evaluate("window.statusMessages") > messages  # pushed: the page was not reloaded
        await page.screenshot(shots / "web-host.png")

        await page.evaluate("window.__ppsLeft = true; "
                            "document.querySelector('tr[data-ioc=\"beta\"] a[data-link=\"console\"]').click()")
        await page.wait_for("!window.__ppsLeft && window.consoleReady === true", timeout=15)
        await page.wait_for("document.activeElement === term.textarea")
        await page.type("hello from the host page\n")
        await page.wait_for(f"{terminal_text()}.split('hello from the host page').length >= 3")

        await page.goto(base + "ioc/beta/console?spy=1")
        await page.wait_for("window.consoleReady === true", timeout=15)
        await page.evaluate("term.focus()")
        await page.type("typed by a spy\n")
        ada = WebClient(port)
        assert (await ada.login("ada", PASSWORD["ada"])).status == 303
        async with ada.console("beta") as operator:  # what the spy typed would have come before this
            await attach(operator)
            await operator.send_message(b"typed after the spy\r")
            screen = await page.wait_for(f"{terminal_text()}.includes('typed after the spy') && {terminal_text()}")
        assert "typed by a spy" not in screen
        assert "hello from the host page" in screen  # replayed: it is beta's console
    assert "hello from the host page" in host.log("beta") and "typed by a spy" not in host.log("beta")
    assert "ada from 127.0.0.1 attached read-write in a browser" in host.log("beta")


@needs_chromium
async def test_in_chromium_the_table_says_reconnecting_while_the_host_is_away_and_comes_back(tmp_path):
    conf = short_tmpdir()
    write_conf(conf, TWO)
    port = free_port()
    async with open_browser() as browser:
        async with Host(conf, "--web", str(port)) as host:  # loopback without users: no login
            await wait_for_port(port)
            page = await browser.open(f"http://127.0.0.1:{port}/")
            pid_js = text_of("alpha", "pid")
            old = await page.wait_for(f"/^[0-9]+$/.test({pid_js}) && {pid_js}", timeout=15)
            assert await page.evaluate("document.getElementById('link').textContent") == ""
            assert host.process is not None
            host.process.send_signal(signal.SIGTERM)
            await host.process.wait()
            await page.wait_for("document.getElementById('link').textContent.startsWith('reconnecting')")
        async with Host(conf, "--web", str(port)):  # the same page, no reload
            await page.wait_for(f"/^[0-9]+$/.test({pid_js}) && {pid_js} !== {old!r}"
                                " && document.getElementById('link').textContent === ''", timeout=20)
