"""The browser console's security should-fixes (issue #12): rights that end, logouts that revoke,
a login limit no guesser can turn against a user, and a trusted reverse proxy.

These tests prove that an open console closes with 1008, and types nothing more, once its
visitor is removed, demoted, logged out or expired (checked on every message and every 30 s:
the latter on a virtual clock); that a logged-out cookie is refused; that a guesser from one
address leaves the user free to log in from another; that only a configured proxy is believed
about the browser's scheme, host, address and user, and that ``--web-origin`` is accepted and
makes the cookie Secure; that the users file is read off the event loop and a bad one logged
once per change. In this process with trio: a real server running ``/bin/cat`` in a pty, its web
app served on a loopback port, raw HTTP requests and trio-websocket clients as the browser.
"""

from __future__ import annotations

import dataclasses
import functools
import http.cookiejar
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
import trio.testing

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from trio_websocket import ConnectionClosed  # noqa: E402

from pyprocserv import Config, ProcessServer  # noqa: E402
from pyprocserv._apps import wiring  # noqa: E402
from pyprocserv._core import webusers  # noqa: E402
from pyprocserv._core.cli import CliError, parse_args  # noqa: E402
from pyprocserv._core.weblogins import LoginLimiter  # noqa: E402
from pyprocserv._web import auth as auth_module  # noqa: E402
from pyprocserv._web.app import build_app  # noqa: E402
from pyprocserv._web.auth import WebAuth  # noqa: E402
from pyprocserv._web.fleet import OneServer  # noqa: E402
from pyprocserv._web.recheck import RECHECK_EVERY, serve_while_allowed  # noqa: E402
from pyprocserv._web.serve import serve_asgi  # noqa: E402

from support.ports import free_port  # noqa: E402
from support.webclient import attach  # noqa: E402
from test_webapp import IOC, Site, read_log, users_file, wait_for_log  # noqa: E402

POLICY_VIOLATION = 1008
ORIGIN = "https://iocs.example.org"


async def start(nursery: trio.Nursery, tmp_path, **auth_options) -> Site:
    log = str(tmp_path / "ioc.log")
    config = Config(command=("/bin/cat",), name=IOC, logfile=log, holdoff=0.2)
    server = ProcessServer(config, extras=[])
    await nursery.start(server.run)
    auth = WebAuth(users_file(tmp_path / "users"), "/", **auth_options)
    port = await nursery.start(serve_asgi, build_app(OneServer(server), auth, title=IOC), "127.0.0.1", 0)
    with trio.fail_after(10):
        while not server.status.running:
            await trio.sleep(0.02)
    return Site(server, port, log)


def edit_users(tmp_path, change) -> None:
    """Rewrite the users file with ``change(users)`` applied, so its stamp changes."""
    path = tmp_path / "users"
    users = webusers.parse(path.read_text())
    change(users)
    path.write_text(webusers.serialize(users.values()) + "# edited\n")


async def close_code(ws) -> int:
    """The code the server closes ``ws`` with; the messages before it are read and dropped."""
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            await ws._stream.aclose()  # trio-websocket leaves the socket of a connection the server closed
            return closed.reason.code


# -- an open console loses its rights with its visitor --------------------------------------------

@pytest.mark.parametrize("change", ["removed", "demoted"])
async def test_an_operator_removed_or_demoted_types_nothing_more(nursery, tmp_path, change):
    site = await start(nursery, tmp_path, recheck_every=3600)  # only the message's own check counts
    await site.login("ada")
    async with site.console() as ws:
        await attach(ws)
        if change == "removed":
            edit_users(tmp_path, lambda users: users.pop("ada"))
        else:
            edit_users(tmp_path, lambda users: users.update(ada=dataclasses.replace(users["ada"], role="viewer")))
        await ws.send_message(b"after the change\r")
        assert await close_code(ws) == POLICY_VIOLATION
    users_file(tmp_path / "users")  # ada is an operator again: a marker typed now comes after
    site.cookies.clear()
    await site.login("ada")
    async with site.console() as ws:
        await attach(ws)
        await ws.send_message(b"marker\r")
        await wait_for_log(site, "marker")
    assert "after the change" not in read_log(site)


async def test_an_idle_console_closes_at_the_next_check_once_its_visitor_logs_out(nursery, tmp_path):
    site = await start(nursery, tmp_path, recheck_every=0.1)
    await site.login("ada")
    async with site.console() as ws:
        await attach(ws)
        await ws.send_message(b"still here\r")
        logout = await site.post("/logout", {"csrf": await site.csrf()})
        assert logout.status == 303
        assert await close_code(ws) == POLICY_VIOLATION
    assert "still here" in read_log(site)
    with trio.fail_after(10):
        while site.status()["users"]:
            await trio.sleep(0.02)


async def test_the_pushed_status_of_a_removed_user_stops(nursery, tmp_path):
    site = await start(nursery, tmp_path, recheck_every=0.1)
    await site.login("vic")
    async with site.socket("/ws/status") as ws:
        assert json.loads(await ws.get_message())[0]["name"] == IOC
        edit_users(tmp_path, lambda users: users.pop("vic"))
        assert await close_code(ws) == POLICY_VIOLATION


async def test_the_pushed_status_drops_an_ioc_taken_off_the_access_list(nursery, tmp_path):
    site = await start(nursery, tmp_path, recheck_every=3600)  # no periodic check: each snapshot asks
    await site.login("vic")
    ada = Site(site.server, site.port, site.log)
    await ada.login("ada")
    async with site.socket("/ws/status") as ws:
        assert [entry["name"] for entry in json.loads(await ws.get_message())] == [IOC]
        edit_users(tmp_path, lambda users: users.update(vic=dataclasses.replace(users["vic"], iocs=("another-ioc",))))
        assert (await ada.act("toggle", await ada.csrf())).status == 200  # a change of the IOC vic lost
        with trio.fail_after(10):
            assert json.loads(await ws.get_message()) == []  # the IOC's change is not pushed: it is gone
        assert (await ada.act("toggle", await ada.csrf())).status == 200
        with trio.move_on_after(0.5):
            message = await ws.get_message()
            raise AssertionError(f"pushed to a visitor who may not see it: {message}")


async def test_a_spy_whose_session_expires_is_closed(nursery, tmp_path, monkeypatch):
    monkeypatch.setattr(auth_module, "SESSION_LIFETIME", 3)  # whole seconds: valid for 2 s at least
    site = await start(nursery, tmp_path, recheck_every=0.1)
    await site.login("vic")
    async with site.console() as ws:
        await attach(ws)
        assert await close_code(ws) == POLICY_VIOLATION
    assert (await site.get("/api/status")).status == 401


class _Transport:
    """A message transport whose peer sends what the test puts in ``incoming``."""

    def __init__(self) -> None:
        self.send_incoming, self._incoming = trio.open_memory_channel[bytes](10)
        self.sent: list[bytes | str] = []
        self.refused = 0

    async def send_message(self, message: bytes | str) -> None:
        self.sent.append(message)

    async def receive_message(self) -> bytes | str:
        return await self._incoming.receive()

    async def aclose(self, *, going_away: bool = False) -> None:
        pass

    async def refuse(self) -> None:
        self.refused += 1


async def test_an_idle_socket_is_rechecked_every_30_seconds(autojump_clock):
    transport, allowed, received = _Transport(), [True], []
    asked_at: list[float] = []

    async def still_allowed() -> bool:
        asked_at.append(trio.current_time())
        return allowed[0]

    async def serve(rechecked) -> None:
        while True:
            received.append(await rechecked.receive_message())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(serve_while_allowed, transport, still_allowed, serve, refuse=transport.refuse))
        await trio.sleep(RECHECK_EVERY * 2 + 1)
        assert len(asked_at) == 2 and transport.refused == 0
        await transport.send_incoming.send(b"key")
        await trio.testing.wait_all_tasks_blocked()
        assert received == [b"key"] and len(asked_at) == 3
        allowed[0] = False
        start = trio.current_time()
        with trio.fail_after(RECHECK_EVERY + 1):
            while not transport.refused:
                await trio.sleep(1)
        assert trio.current_time() - start <= RECHECK_EVERY
    assert transport.refused == 1  # and serve was cancelled: the nursery ended


async def test_a_check_that_fails_is_a_no_and_drops_the_message(autojump_clock, caplog):
    transport = _Transport()

    async def broken() -> bool:
        raise OSError("users file vanished mid-read")

    async def serve(rechecked) -> None:
        with pytest.raises(trio.BrokenResourceError):
            await rechecked.receive_message()
        with pytest.raises(trio.BrokenResourceError):
            await rechecked.send_message(b"output")

    await transport.send_incoming.send(b"typed")
    with caplog.at_level(logging.ERROR, "pyprocserv.web"):
        await serve_while_allowed(transport, broken, serve, refuse=transport.refuse)
    assert transport.refused == 1 and transport.sent == []
    assert "checking a socket's right failed" in caplog.text


# -- logout ---------------------------------------------------------------------------------------

async def test_a_cookie_kept_after_logout_is_nobody(nursery, tmp_path):
    site = await start(nursery, tmp_path)
    await site.login("ada")
    kept = dict(site.cookies)
    assert (await site.post("/logout", {"csrf": await site.csrf()})).status == 303
    site.cookies.update(kept)  # a copy of the cookie, as a thief or a forgotten tab holds it
    assert (await site.get("/api/status")).status == 401
    assert await site.console_handshake() == 403
    await site.login("ada")  # a new login is a new session
    assert (await site.get("/api/status")).status == 200


# -- the login limit ------------------------------------------------------------------------------

async def test_a_guesser_elsewhere_does_not_lock_the_user_out(nursery, tmp_path):
    site = await start(nursery, tmp_path, limiter=LoginLimiter(max_failures=3, window=60), proxies=["127.0.0.1"])
    guesser = {"X-Forwarded-For": "203.0.113.66"}
    for _ in range(3):
        assert (await site.post("/login", {"user": "ada", "password": "guess"}, headers=guesser)).status == 401
    assert (await site.post("/login", {"user": "ada", "password": "guess"}, headers=guesser)).status == 429
    ada = await site.post("/login", {"user": "ada", "password": "operator's secret"},
                          headers={"X-Forwarded-For": "198.51.100.4"})
    assert ada.status == 303 and site.cookies


async def test_a_full_login_queue_says_busy_not_locked_out(nursery, tmp_path, monkeypatch):
    site = await start(nursery, tmp_path)
    release, checking = threading.Event(), []
    authenticate = webusers.authenticate

    def slow_check(*args):  # the password checks of the logins ahead take a while
        checking.append(1)
        release.wait(10)
        return authenticate(*args)

    monkeypatch.setattr(webusers, "authenticate", slow_check)
    ahead: list[int] = []

    async def login_ahead() -> None:
        ahead.append((await Site(site.server, site.port, site.log).login("ada")).status)

    try:
        async with trio.open_nursery() as logins:
            for _ in range(auth_module.MAX_LOGINS_WAITING):
                logins.start_soon(login_ahead)
            with trio.fail_after(10):
                while not checking:
                    await trio.sleep(0.01)
            await trio.sleep(0.2)  # the others wait for the lock
            busy = await site.login("ada")
            release.set()
    finally:
        release.set()
    assert busy.status == 503 and busy.header("retry-after") == "1"
    assert "busy checking other logins" in busy.text and "too many failed logins" not in busy.text
    assert ahead == [303] * auth_module.MAX_LOGINS_WAITING
    assert (await site.login("ada")).status == 303  # nothing was held against the user


# -- two consoles on one host ---------------------------------------------------------------------

def _browser() -> tuple[http.cookiejar.CookieJar, Callable[..., int]]:
    """A cookie jar that ignores ports, as browsers do (RFC 6265 section 8.5), and a way to ask
    with it: ``ask(url, form=None, origin=None)`` is the status (redirects not followed)."""
    jar = http.cookiejar.CookieJar()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def ask(url: str, form: dict | None = None, origin: str | None = None) -> int:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers={"Origin": origin} if origin else {})
        try:
            with opener.open(request, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as refused:
            refused.close()
            return refused.code

    return jar, ask


async def test_two_consoles_on_one_host_keep_both_sessions_in_one_browser(nursery, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = await start(nursery, tmp_path / "one"), await start(nursery, tmp_path / "two")
    jar, ask = _browser()

    def login(site: Site) -> int:
        origin = f"http://127.0.0.1:{site.port}"
        return ask(f"{origin}/login", {"user": "ada", "password": "operator's secret"}, origin)

    def status(site: Site) -> int:
        return ask(f"http://127.0.0.1:{site.port}/api/status")

    assert await trio.to_thread.run_sync(login, one) == 303
    assert await trio.to_thread.run_sync(status, one) == 200
    assert await trio.to_thread.run_sync(login, two) == 303
    assert await trio.to_thread.run_sync(status, two) == 200
    assert await trio.to_thread.run_sync(status, one) == 200  # the second login did not log out the first
    assert {cookie.name for cookie in jar} == {f"pyprocserv-session-{one.port}", f"pyprocserv-session-{two.port}"}


# -- a reverse proxy ------------------------------------------------------------------------------

def _through_proxy(**extra: str) -> dict[str, str]:
    return {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "iocs.example.org", "Origin": ORIGIN,
            "X-Forwarded-For": "198.51.100.4", **extra}


async def test_behind_a_tls_proxy_the_origin_is_https_and_the_cookie_secure(nursery, tmp_path):
    site = await start(nursery, tmp_path, proxies=["127.0.0.0/8"])
    login = await site.post("/login", {"user": "ada", "password": "operator's secret"},
                            headers=_through_proxy(), origin=False)
    assert login.status == 303
    cookie = login.header("set-cookie")
    assert cookie.startswith(f"__Host-pyprocserv-session-{site.port}=") and "; Secure" in cookie
    page = await site.request("GET", "/", headers=_through_proxy())
    csrf = page.text.split('data-csrf="')[1].split('"')[0]
    act = await site.post(f"/api/ioc/{IOC}/toggle", headers={**_through_proxy(), "X-CSRF-Token": csrf}, origin=False)
    assert act.status == 200
    await wait_for_log(site, "@@@ web: toggle by ada from 198.51.100.4")  # the browser's address, not ours


async def test_forwarded_headers_from_anyone_but_the_proxy_change_nothing(nursery, tmp_path):
    site = await start(nursery, tmp_path, proxies=["10.0.0.5"], proxy_user_header="X-Remote-User")
    login = await site.post("/login", {"user": "ada", "password": "operator's secret"},
                            headers=_through_proxy(), origin=False)
    assert login.status == 403 and not site.cookies  # an https Origin on a plain-http request
    assert (await site.request("GET", "/api/status", headers={"X-Remote-User": "ada"})).status == 401


async def test_a_trusted_proxys_user_header_names_a_user_of_the_file(nursery, tmp_path):
    site = await start(nursery, tmp_path, proxies=["127.0.0.1"], proxy_user_header="X-Remote-User")
    as_vic = {"X-Remote-User": "vic"}
    assert (await site.request("GET", "/api/status", headers=as_vic)).status == 200
    assert (await site.act("stop", None)).status == 401
    page = await site.request("GET", "/", headers={"X-Remote-User": "ada"})
    csrf = page.text.split('data-csrf="')[1].split('"')[0]
    stop = await site.post(f"/api/ioc/{IOC}/stop", headers={"X-Remote-User": "ada", "X-CSRF-Token": csrf})
    assert stop.status == 200
    await wait_for_log(site, "@@@ web: stop by ada from 127.0.0.1")
    assert (await site.request("GET", "/api/status", headers={"X-Remote-User": "mallory"})).status == 401


async def test_the_configured_origin_is_accepted_and_makes_the_cookie_secure(nursery, tmp_path):
    site = await start(nursery, tmp_path, origin=ORIGIN)
    login = await site.post("/login", {"user": "ada", "password": "operator's secret"},
                            headers={"Origin": ORIGIN}, origin=False)
    assert login.status == 303 and "; Secure" in login.header("set-cookie")
    evil = await site.post("/login", {"user": "ada", "password": "operator's secret"},
                           headers={"Origin": "https://evil.example"}, origin=False)
    assert evil.status == 403


def web_options(*args: str):
    return parse_args(["pyprocserv", "-P", "20000", *args, "/bin/cat"]).config


def test_proxy_options_become_the_config():
    config = web_options("--web", "8080", "--web-users", "u", "--web-proxy", "10.0.0.5, 10.1.0.0/16,::1",
                         "--web-proxy-user", "X-Remote-User", "--web-origin", ORIGIN)
    assert config.web_proxies == ("10.0.0.5/32", "10.1.0.0/16", "::1/128")
    assert (config.web_proxy_user, config.web_origin) == ("X-Remote-User", ORIGIN)
    assert web_options("--web", "8080").web_proxies == ()


@pytest.mark.parametrize("args, message", [
    (["--web-proxy", "10.0.0.5"], "--web-proxy needs --web-users: without users a request through a proxy"),
    (["--web-users", "u", "--web-proxy", "10.0.0.1/8"], "invalid --web-proxy: trusted proxy '10.0.0.1/8'"),
    (["--web-users", "u", "--web-proxy", "proxy.example.org"], "give an IP address"),
    (["--web-users", "u", "--web-proxy-user", "X-Remote-User"], "--web-proxy-user needs --web-proxy"),
    (["--web-users", "u", "--web-proxy", "::1", "--web-proxy-user", "X User"], "invalid --web-proxy-user"),
    (["--web-origin", "iocs.example.org"], "invalid --web-origin: allowed origin 'iocs.example.org'"),
    (["--web-origin", "https://iocs.example.org/console"], "without a path"),
])
def test_bad_proxy_options_are_refused_naming_the_option(args, message):
    with pytest.raises(CliError) as refused:
        web_options("--web", "8080", *args)
    assert message in refused.value.message


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from(["--web-proxy", "--web-origin", "--web-proxy-user"]), st.text(max_size=60))
def test_any_proxy_option_text_parses_or_is_refused_naming_the_option(option, text):
    extra = ["--web-proxy", "::1"] if option == "--web-proxy-user" else []
    try:
        web_options("--web", "8080", "--web-users", "u", *extra, option, text)
    except CliError as exc:
        assert option in exc.message


async def test_the_wired_extra_believes_the_configured_proxy(nursery, tmp_path):
    port = free_port()
    config = web_options("--web", f"127.0.0.1:{port}", "--web-users", users_file(tmp_path / "users"),
                         "--web-proxy", "127.0.0.1", "--web-origin", ORIGIN, "-n", IOC)
    config = dataclasses.replace(config, control=(), logfile=str(tmp_path / "ioc.log"))
    server = ProcessServer(config, extras=wiring.server_extras(config))
    await nursery.start(server.run)
    site = Site(server, port, config.logfile)
    login = await site.post("/login", {"user": "ada", "password": "operator's secret"},
                            headers={"Origin": ORIGIN, "X-Forwarded-For": "198.51.100.4"}, origin=False)
    assert login.status == 303 and login.header("set-cookie").startswith(f"__Host-pyprocserv-session-{port}=")


# -- the users file ------------------------------------------------------------------------------

async def test_the_users_file_is_read_off_the_event_loop_and_a_bad_one_logged_once(tmp_path, monkeypatch, caplog):
    path = users_file(tmp_path / "users")
    auth = WebAuth(path, "/")
    threads = []
    parse = webusers.parse
    monkeypatch.setattr(webusers, "parse", lambda *a: threads.append(threading.current_thread()) or parse(*a))
    assert set(await auth.users()) == {"ada", "vic", "oth"}
    assert threads and threading.main_thread() not in threads

    with caplog.at_level(logging.ERROR, "pyprocserv.web"):
        (tmp_path / "users").write_text("ada:operator:not-a-hash\n")
        for _ in range(3):
            assert await auth.users() == {}
        assert caplog.text.count("nobody can log in") == 1
        (tmp_path / "users").write_text("ada:operator:still-not-a-hash\n")  # a new stamp: said again
        assert await auth.users() == {}
        assert caplog.text.count("nobody can log in") == 2
        (tmp_path / "users").unlink()
        for _ in range(3):
            assert await auth.users() == {}
        assert caplog.text.count("nobody can log in") == 3


async def test_a_users_file_that_could_not_be_opened_is_tried_again(tmp_path, monkeypatch, caplog):
    auth = WebAuth(users_file(tmp_path / "users"), "/")

    def no_descriptors(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(auth_module, "open", no_descriptors, raising=False)
    with caplog.at_level(logging.ERROR, "pyprocserv.web"):
        for _ in range(3):
            assert await auth.users() == {}
    assert caplog.text.count("Too many open files") == 1
    monkeypatch.delattr(auth_module, "open")
    assert set(await auth.users()) == {"ada", "vic", "oth"}  # the same file, now readable
