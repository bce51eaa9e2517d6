"""The browser console's web app (issue #12): logins, roles, CSRF and Origin, the console, the buttons.

In this process with trio: a real server running ``/bin/cat`` in a pty (or a fleet of two, as
host mode serves), its web app served by ``serve_asgi`` on a loopback port, and raw HTTP
requests and trio-websocket clients as the browser (``support.webclient``). Users come from a
real credentials file with cheap scrypt parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import ipaddress
import json
import ssl
import re
from urllib.parse import quote

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from trio_websocket import ConnectionClosed  # noqa: E402

from pyprocserv import Config, ProcessServer  # noqa: E402
from pyprocserv._apps import wiring  # noqa: E402
from pyprocserv._core.cli import CliError, parse_args  # noqa: E402
from pyprocserv._core.config import BROWSER_HISTORY  # noqa: E402
from pyprocserv._core.weblogins import LoginLimiter  # noqa: E402
from pyprocserv._core.webusers import WebUser, hash_password, serialize  # noqa: E402
from pyprocserv._web import extra  # noqa: E402
from pyprocserv._web.app import MAX_SOCKETS_PER_USER, build_app  # noqa: E402
from pyprocserv._web.auth import WebAuth  # noqa: E402
from pyprocserv._web.fleet import OneServer  # noqa: E402
from pyprocserv._web.serve import serve_asgi  # noqa: E402
from pyprocserv._web.statuspush import push_status  # noqa: E402

from support.ports import free_port  # noqa: E402
from support.webclient import Reply, WebClient, attach, read_until  # noqa: E402
from support.tls import self_signed  # noqa: E402

PASSWORD = {"ada": "operator's secret", "vic": "viewer's secret", "oth": "other IOC's secret"}
IOC = "cat"


def users_file(path) -> str:
    cheap = {"n": 16, "r": 1, "p": 1}  # the parameters are read from each hash: tests need no 60 ms
    path.write_text(serialize([
        WebUser("ada", "operator", hash_password(PASSWORD["ada"], **cheap)),
        WebUser("vic", "viewer", hash_password(PASSWORD["vic"], **cheap)),
        WebUser("oth", "operator", hash_password(PASSWORD["oth"], **cheap), ("another-ioc",)),
    ]))
    return str(path)


# -- a browser of raw HTTP ----------------------------------------------------------------------

class Site(WebClient):
    """A client of one server's console, with that server and its log at hand."""

    def __init__(self, server: ProcessServer, port: int, log: str, *, cookies: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(port, cookies=cookies, tls=tls)
        self.server = server
        self.log = log

    async def login(self, user: str, password: str | None = None) -> Reply:
        return await super().login(user, password or PASSWORD[user])

    async def act(self, action: str, csrf: str | None, ioc: str = IOC) -> Reply:
        return await super().act(action, csrf, ioc)

    def console(self, origin: str | None = None, *, ioc: str = IOC, spy: bool = False):
        return super().console(ioc, origin, spy=spy)

    async def console_handshake(self, origin: str | None = None) -> int:
        return await self.handshake(f"/ws/ioc/{IOC}/console", origin)

    def status(self) -> dict:
        return self.server.status.as_dict()


async def start_site(nursery: trio.Nursery, tmp_path, *, users: bool = True, limiter: LoginLimiter | None = None,
                     logfile: bool = True, base: str = "/", browser_history: int = 0,
                     max_sockets_per_user: int = MAX_SOCKETS_PER_USER) -> Site:
    log = str(tmp_path / "ioc.log")
    config = Config(command=("/bin/cat",), name=IOC, logfile=log if logfile else None, holdoff=0.2,
                    browser_history=browser_history)
    server = ProcessServer(config, extras=[])
    await nursery.start(server.run)
    auth = WebAuth(users_file(tmp_path / "users") if users else None, base, limiter=limiter)
    app = build_app(OneServer(server), auth, title=IOC, max_sockets_per_user=max_sockets_per_user)
    port = await nursery.start(serve_asgi, app, "127.0.0.1", 0)
    site = Site(server, port, log)
    with trio.fail_after(10):
        while not server.status.running:
            await trio.sleep(0.02)
    return site


def read_log(site: Site) -> str:
    with open(site.log, encoding="utf-8", errors="replace") as f:
        return f.read()


async def wait_for_log(site: Site, needle: str) -> str:
    with trio.fail_after(10):
        while True:
            text = read_log(site)
            if needle in text:
                return text
            await trio.sleep(0.02)


# -- login ----------------------------------------------------------------------------------------

async def test_a_good_login_sets_a_strict_httponly_cookie_and_a_wrong_one_does_not(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    assert (await site.get("/")).header("location") == "/login"
    assert "password" in (await site.get("/login")).text

    wrong = await site.login("ada", "guess")
    assert wrong.status == 401 and "wrong user name or password" in wrong.text and not site.cookies
    unknown = await site.login("nobody", "guess")
    assert unknown.status == 401 and not site.cookies

    good = await site.login("ada")
    assert good.status == 303 and good.header("location") == "/"
    cookie = good.header("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert (await site.get("/")).status == 200

    csrf = await site.csrf()
    assert (await site.post("/logout", {"csrf": "wrong"})).status == 403
    out = await site.post("/logout", {"csrf": csrf})
    assert out.status == 303 and not site.cookies
    assert (await site.get("/api/status")).status == 401


async def test_failed_logins_are_rate_limited_and_then_even_the_right_password_waits(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, limiter=LoginLimiter(max_failures=3, window=60))
    for _ in range(3):
        assert (await site.login("ada", "guess")).status == 401
    blocked = await site.login("ada")
    assert blocked.status == 429 and "too many failed logins" in blocked.text
    assert 55 <= int(blocked.header("retry-after")) <= 61
    assert not site.cookies


async def test_parallel_wrong_logins_get_no_more_tries_than_sequential_ones(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, limiter=LoginLimiter(max_failures=3, window=60))
    statuses: list[int] = []

    async def guess() -> None:
        statuses.append((await site.login("ada", "guess")).status)

    async with trio.open_nursery() as burst:
        for _ in range(12):
            burst.start_soon(guess)
    refused = statuses.count(429) + statuses.count(503)  # blocked, or more than the queue holds
    assert statuses.count(401) <= 3 and refused >= 9, statuses  # not one check per request
    assert (await site.login("ada")).status == 429  # and then even the right password waits


async def test_a_login_without_our_origin_or_with_a_huge_form_is_refused(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    form = {"user": "ada", "password": PASSWORD["ada"]}
    assert (await site.post("/login", form, origin=False)).status == 403
    assert (await site.post("/login", form, {"Origin": "http://evil.example"}, origin=False)).status == 403
    assert (await site.post("/login", {"user": "ada", "password": "x" * 5000})).status == 413
    assert not site.cookies


async def test_a_forged_or_tampered_cookie_is_nobody(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("vic")
    name, token = next(iter(site.cookies.items()))
    site.cookies[name] = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await site.get("/api/status")).status == 401
    site.cookies[name] = "x" * 5000
    assert (await site.get("/api/status")).status == 401


async def test_under_a_base_path_every_page_link_and_cookie_stays_under_it(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, base="/ioc1/")
    assert (await site.get("/ioc1/")).header("location") == "/ioc1/login"
    assert (await site.get("/login")).status == 404
    reply = await site.post("/ioc1/login", {"user": "ada", "password": PASSWORD["ada"]})
    assert reply.header("location") == "/ioc1/" and "Path=/ioc1/;" in reply.header("set-cookie")
    page = await site.get(f"/ioc1/ioc/{IOC}/console")
    assert page.status == 200 and 'src="../../static/xterm/xterm.js"' in page.text  # relative: under the base
    assert (await site.get("/ioc1/static/xterm/xterm.js")).status == 200
    status = await site.get("/ioc1/")
    csrf = re.search(r'data-csrf="([^"]+)"', status.text).group(1)
    assert (await site.post(f"/ioc1/api/ioc/{IOC}/toggle", headers={"X-CSRF-Token": csrf})).status == 200


# -- roles ----------------------------------------------------------------------------------------

HOST_PAGES = ["/", "/api/status"]
IOC_PAGES = [f"/api/ioc/{IOC}", f"/ioc/{IOC}/console", f"/ioc/{IOC}/console?spy=1", f"/ioc/{IOC}/log",
             f"/ioc/{IOC}/log/download"]


@pytest.mark.parametrize("who", [None, "vic", "ada", "oth"])
async def test_role_matrix_on_every_route(nursery, tmp_path, who):
    """Nobody: log in first. Viewer: reads everything, spies, presses nothing. Operator: all.
    An operator of another IOC only: an empty table, and this IOC is not there (404)."""
    site = await start_site(nursery, tmp_path)
    if who:
        assert (await site.login(who)).status == 303
    for path in HOST_PAGES + IOC_PAGES:
        reply = await site.get(path)
        if who is None:
            want = 401 if path.startswith("/api/") else 303
        else:
            want = 404 if who == "oth" and path in IOC_PAGES else 200
        assert reply.status == want, (path, reply.status, reply.text[:200])
    if who:
        listed = [entry["name"] for entry in json.loads((await site.get("/api/status")).body)]
        assert listed == ([] if who == "oth" else [IOC])

    csrf = await site.csrf() if who else "none"
    pid = site.status()["pid"]
    reply = await site.act("kill", csrf)
    assert reply.status == {None: 401, "vic": 403, "ada": 200, "oth": 404}[who]
    if who != "ada":
        assert site.status()["pid"] == pid

    page = await site.get("/")
    assert ('data-operator="yes"' in page.text) == (who == "ada")  # the buttons

    if who in (None, "oth"):
        assert await site.console_handshake() == 403
    else:
        async with site.console() as ws:
            await attach(ws)
            assert site.status()["users" if who == "ada" else "loggers"] == 1


async def test_without_users_every_loopback_browser_is_an_operator(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, users=False)
    assert (await site.get("/login")).status == 303  # nothing to log in to
    page = await site.get("/")
    assert page.status == 200 and 'data-operator="yes"' in page.text and "log out" not in page.text
    assert (await site.act("stop", await site.csrf())).status == 200
    assert (await site.act("start", None)).status == 403  # CSRF still counts
    await wait_for_log(site, "@@@ web: stop by local from 127.0.0.1")


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "Via"])
async def test_without_users_a_request_through_a_proxy_is_refused(nursery, tmp_path, header):
    """A proxy on this host sends loopback names for whoever is behind it: they are not local."""
    site = await start_site(nursery, tmp_path, users=False)
    proxied = {header: "for=192.0.2.7" if header == "Forwarded" else "192.0.2.7"}
    page = await site.request("GET", "/", headers=proxied)
    assert page.status == 403 and "not through a proxy" in page.text
    action = await site.request("POST", f"/api/ioc/{IOC}/stop",
                                headers={**proxied, "X-CSRF-Token": await site.csrf()})
    assert action.status == 403 and site.status()["running"]


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "[::1]x"])
async def test_without_users_a_page_that_names_us_otherwise_is_refused(nursery, tmp_path, host):
    """DNS rebinding: another site's name pointed at 127.0.0.1 is "same origin" with itself."""
    site = await start_site(nursery, tmp_path, users=False)
    evil = {"Host": f"{host}:{site.port}", "Origin": f"http://{host}:{site.port}"}
    page = await site.request("GET", "/", headers=evil)
    assert page.status == 403 and "loopback address" in page.text
    action = await site.request("POST", f"/api/ioc/{IOC}/stop", headers={**evil, "X-CSRF-Token": await site.csrf()})
    assert action.status == 403
    handshake = await site.request("GET", f"/ws/ioc/{IOC}/console", headers={
        **evil, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA=="})
    assert handshake.status == 403
    assert site.status()["running"]
    for name in ("localhost", "[::1]"):
        assert (await site.request("GET", "/api/status", headers={"Host": f"{name}:{site.port}"})).status == 200


# -- actions --------------------------------------------------------------------------------------

async def test_an_action_needs_the_csrf_token_and_our_origin(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("ada")
    csrf = await site.csrf()
    pid = site.status()["pid"]
    assert (await site.act("kill", None)).status == 403
    assert (await site.act("kill", csrf[:-1] + ("A" if csrf[-1] != "A" else "B"))).status == 403
    other = await site.post(f"/api/ioc/{IOC}/kill", headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
                            origin=False)
    assert other.status == 403
    no_origin = await site.post(f"/api/ioc/{IOC}/kill", headers={"X-CSRF-Token": csrf}, origin=False)
    assert no_origin.status == 403
    assert (await site.act("explode", csrf)).status == 404
    assert (await site.act("kill", csrf, ioc="nonesuch")).status == 404
    assert (await site.request("GET", f"/api/ioc/{IOC}/kill")).status == 405
    assert site.status()["pid"] == pid


async def test_restart_gives_a_new_pid_and_says_who_pressed_it_from_where(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("ada")
    csrf = await site.csrf()
    before = json.loads((await site.get(f"/api/ioc/{IOC}")).body)
    assert before["running"] and before["name"] == IOC
    reply = await site.act("restart", csrf)
    assert reply.status == 200
    with trio.fail_after(10):
        while not (site.status()["running"] and site.status()["pid"] != before["pid"]):
            await trio.sleep(0.05)
    after = json.loads((await site.get(f"/api/ioc/{IOC}")).body)
    assert after["pid"] != before["pid"] and after["start_count"] == before["start_count"] + 1
    await wait_for_log(site, "@@@ web: restart by ada from 127.0.0.1\n")

    assert (await site.act("toggle", csrf)).status == 200
    assert site.status()["restart_mode"] == "OFF"


# -- the console ----------------------------------------------------------------------------------

async def test_an_operator_types_and_reads_the_echo_and_everyone_sees_who_attached(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("ada")
    async with site.console() as ws:
        replay = await attach(ws)
        assert b"Welcome to procServ" in replay
        await ws.send_message(json.dumps({"resize": [100, 30]}))
        await ws.send_message(b"hello web\r")
        await read_until(ws, b"hello web\r\n")
    text = await wait_for_log(site, "hello web")
    assert "@@@ web: ada from 127.0.0.1 attached read-write in a browser" in text


async def test_a_browser_that_comes_back_sees_the_recent_screen_and_telnet_clients_no_history(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, browser_history=BROWSER_HISTORY)
    await site.login("ada")
    async with site.console() as ws:
        assert b"first visit" not in await attach(ws)
        await ws.send_message(b"first visit\r")
        await read_until(ws, b"first visit\r\n")
    async with site.console() as ws:  # the page reloaded, or the laptop woke up
        replay = await attach(ws)
    assert replay.index(b"Welcome to procServ") < replay.index(b"first visit\r\n")
    assert site.server._console.history.replay() == b""  # telnet clients get procServ's bytes: no history


def test_web_gives_browsers_the_recent_screen_and_leaves_telnets_history_alone():
    assert parse_args(["pyprocserv", "--web", "8080", "20000", "cat"]).config.browser_history == BROWSER_HISTORY
    assert parse_args(["pyprocserv", "--web", "8080", "20000", "cat"]).config.history == 0
    assert parse_args(["pyprocserv", "20000", "cat"]).config.browser_history == 0


async def test_one_user_holds_a_bounded_number_of_websockets_and_nobody_else_is_affected(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, max_sockets_per_user=3)
    await site.login("vic")
    ada = Site(site.server, site.port, site.log)
    await ada.login("ada")
    async with site.socket("/ws/status") as first, site.socket("/ws/status") as second, site.console() as spy:
        await first.get_message()
        await second.get_message()
        await attach(spy)
        for path in ("/ws/status", f"/ws/ioc/{IOC}/console", f"/ws/ioc/{IOC}/log"):
            assert await site.handshake(path) == 403, path  # a fourth of any kind
        async with ada.socket("/ws/status") as other:  # another user is not counted with vic
            await other.get_message()
    async with site.socket("/ws/status") as again:  # closed ones count no more
        await again.get_message()


async def test_a_viewer_spies_and_cannot_type(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("vic")
    spy_site = Site(site.server, site.port, site.log, cookies=dict(site.cookies))
    site.cookies.clear()
    await site.login("ada")
    async with spy_site.console() as spy, site.console() as operator:
        await attach(spy)
        await spy.send_message(b"from the spy\r")
        await attach(operator)
        await operator.send_message(b"from the operator\r")
        seen = await read_until(spy, b"from the operator\r\n")
    assert b"from the spy" not in seen
    assert "from the spy" not in read_log(site)
    assert "attached read-write" not in read_log(site).replace(
        "ada from 127.0.0.1 attached read-write", "")  # the viewer's attach says nothing


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_console_from_another_origin_is_refused(nursery, tmp_path, origin):
    site = await start_site(nursery, tmp_path)
    await site.login("ada")
    assert await site.console_handshake(origin) == 403
    assert site.status()["users"] == 0


async def test_a_console_breaking_the_protocol_ends_only_itself(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("ada")
    pid = site.status()["pid"]
    async with site.console() as ws:
        await attach(ws)
        await ws.send_message("not json")
        with pytest.raises(ConnectionClosed):
            with trio.fail_after(10):
                while True:
                    await ws.get_message()
        await ws._stream.aclose()  # trio-websocket leaves the socket of a connection the server closed
    assert site.status()["running"] and site.status()["pid"] == pid
    assert (await site.get("/api/status")).status == 200


# -- the log --------------------------------------------------------------------------------------

async def test_the_log_page_shows_the_tail_escaped_and_the_download_the_file(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    await site.login("vic")
    site.server.announce("<script>alert(1)</script>")
    await wait_for_log(site, "alert(1)")
    page = await site.get(f"/ioc/{IOC}/log")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    download = await site.get(f"/ioc/{IOC}/log/download")
    assert download.status == 200 and b"<script>alert(1)</script>" in download.body
    assert download.header("content-disposition") == 'attachment; filename="ioc.log"'


async def test_without_a_log_file_the_log_pages_say_so(nursery, tmp_path):
    site = await start_site(nursery, tmp_path, logfile=False)
    await site.login("vic")
    for path in (f"/ioc/{IOC}/log", f"/ioc/{IOC}/log/download"):
        reply = await site.get(path)
        assert reply.status == 404 and "-L FILE" in reply.text


# -- hostile input --------------------------------------------------------------------------------

HOSTILE = [
    b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"\xff" * 3000 + b"\r\nConnection: close\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\nContent-Length: 9\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\nuser=%ff&",
    b"POST /api/ioc/cat/restart HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\nxx",
    b"GET /static/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /%00%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # TLS to a plain port
    b"GET /ws/ioc/cat/console HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n\x81\xff" + bytes(20),
]


async def test_malformed_requests_end_no_more_than_themselves(nursery, tmp_path):
    site = await start_site(nursery, tmp_path)
    pid = site.status()["pid"]
    for data in HOSTILE:
        with trio.move_on_after(2):
            try:
                reply = await site.request("GET", "/", raw=data)
            except (trio.BrokenResourceError, IndexError, ValueError):
                continue  # no reply, or no HTTP reply: fine, as long as nothing else ended
            assert reply.status != 200 or b"root:" not in reply.body
    await site.login("ada")
    assert (await site.get("/api/status")).status == 200
    assert site.status()["running"] and site.status()["pid"] == pid


# -- the command line and the wiring --------------------------------------------------------------

def web_options(*args: str):
    return parse_args(["pyprocserv", "-P", "20000", *args, "/bin/cat"]).config


def test_web_options_become_the_config():
    config = web_options("--web", "8080")
    assert (config.web, config.web_users, config.web_base) == (("127.0.0.1", 8080), None, "/")
    config = web_options("--web", "[::1]:8443", "--web-base", "/ioc1", "--web-users", "u")
    assert (config.web, config.web_base, config.web_users) == (("::1", 8443), "/ioc1/", "u")
    config = web_options("--web", "0.0.0.0:8443", "--web-users", "u", "--web-cert", "c", "--web-key", "k")
    assert (config.web, config.web_cert, config.web_key) == (("0.0.0.0", 8443), "c", "k")


@pytest.mark.parametrize("args, message", [
    (["--web", "0.0.0.0:8080"], "--web 0.0.0.0:8080 needs --web-cert/--web-key and --web-users"),
    (["--web", "0.0.0.0:8080", "--web-cert", "c", "--web-key", "k"], "(missing: --web-users)"),
    (["--web", "[::]:8080", "--web-users", "u"], "--web [::]:8080 needs --web-cert/--web-key"),
    (["--web", "8080", "--web-cert", "c"], "--web-cert and --web-key go together"),
    (["--web-users", "u"], "--web-users needs --web"),
    (["--web", "example.org:80"], "invalid --web 'example.org:80'"),
    (["--web", "70000"], "the port must be a number from 1 to 65535"),
    (["--web", "8080", "--web-base", "no-slash"], "invalid --web-base"),
    (["--web", "8080", "--web-base", "/a/../b"], "invalid --web-base"),
])
def test_bad_web_options_are_refused_naming_the_option(args, message):
    with pytest.raises(CliError) as refused:
        web_options(*args)
    assert message in refused.value.message


@given(st.text(max_size=40))
def test_any_web_address_parses_or_is_refused_by_name(text):
    try:
        config = web_options("--web", text)
    except CliError as exc:
        assert "--web" in exc.message
    else:
        host, port = config.web
        assert 1 <= port <= 65535 and ipaddress.ip_address(host).is_loopback  # others need TLS and users


@given(st.text(max_size=40))
def test_any_web_base_parses_to_a_slashed_path_or_is_refused_by_name(text):
    try:
        config = web_options("--web", "8080", "--web-base", text)
    except CliError as exc:
        assert "--web-base" in exc.message
    else:
        assert config.web_base.startswith("/") and config.web_base.endswith("/")
        assert "/../" not in config.web_base and "//" not in config.web_base


def test_the_web_console_is_an_extra_only_when_asked_for(tmp_path):
    assert "web console" not in [spec.name for spec in wiring.server_extras(web_options())]
    specs = wiring.server_extras(web_options("--web", "8080"))
    assert [(spec.name, spec.awaited) for spec in specs] == [("web console", True)]


def test_a_missing_web_stack_or_a_bad_users_file_is_named_before_the_start(tmp_path, monkeypatch):
    assert wiring.check_web_support(web_options()) is None
    assert wiring.check_web_support(web_options("--web", "8080")) is None
    bad = tmp_path / "users"
    bad.write_text("ada:admin:x\n")
    problem = wiring.check_web_support(web_options("--web", "8080", "--web-users", str(bad)))
    assert "line 1" in problem and "unknown role 'admin'" in problem
    problem = wiring.check_web_support(web_options("--web", "8080", "--web-users", str(tmp_path / "none")))
    assert "No such file" in problem
    problem = wiring.check_web_support(web_options("--web", "8080", "--web-cert", str(bad), "--web-key", str(bad)))
    assert "--web-cert" in problem and "cannot load" in problem
    monkeypatch.setitem(__import__("sys").modules, "anycorn", None)
    assert "pip install 'pyprocserv[web]'" in extra.problem(web_options("--web", "8080"))


def test_pyprocserv_manage_web_user_add_writes_a_user_the_console_accepts(tmp_path, monkeypatch):
    from pyprocserv._apps import manage
    from pyprocserv._core.webusers import authenticate, parse

    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("s3cret\n"))
    assert manage.main(["web-user", "add", "--file", str(path), "ada", "--role", "viewer", "--password-stdin"]) == 0
    user = authenticate(parse(path.read_text()), "ada", "s3cret")
    assert user is not None and user.role == "viewer"
    assert wiring.check_web_support(web_options("--web", "8080", "--web-users", str(path))) is None


async def test_over_https_the_wired_extra_sets_a_secure_host_cookie_and_checks_the_https_origin(nursery, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    config = web_options("--web", f"127.0.0.1:{port}", "--web-users", users_file(tmp_path / "users"),
                         "--web-cert", str(cert), "--web-key", str(key), "-n", IOC)
    config = dataclasses.replace(config, control=(), logfile=str(tmp_path / "ioc.log"))
    assert wiring.check_web_support(config) is None
    server = ProcessServer(config, extras=wiring.server_extras(config))
    await nursery.start(server.run)  # the web console is awaited: its port is bound now
    site = Site(server, port, config.logfile, tls=ssl.create_default_context(cafile=str(cert)))

    reply = await site.login("ada")
    cookie = reply.header("set-cookie")
    assert cookie.startswith(f"__Host-pyprocserv-session-{port}=") and "; Secure" in cookie and "Path=/;" in cookie
    csrf = await site.csrf()
    plain_origin = await site.post(f"/api/ioc/{IOC}/toggle", headers={"X-CSRF-Token": csrf,
                                                           "Origin": f"http://127.0.0.1:{port}"}, origin=False)
    assert plain_origin.status == 403
    assert (await site.act("toggle", csrf)).status == 200
    assert server.status.restart_mode.name == "OFF"


def test_a_log_download_is_the_file_as_it_was_when_asked_for_even_while_it_grows(tmp_path):
    from pyprocserv._web.app import _up_to_now

    path = tmp_path / "ioc.log"
    path.write_bytes(b"a" * 200_000)
    chunks = _up_to_now(open(path, "rb"))
    first = next(chunks)
    with open(path, "ab") as log:
        log.write(b"b" * 100_000)  # the IOC goes on writing while the browser downloads
    assert first + b"".join(chunks) == b"a" * 200_000


# -- a fleet: one console for many IOCs -----------------------------------------------------------

class Servers:
    """A fleet of real servers by name, as host mode's ``Host`` is one (None: an instance
    without a server now): each server's changes wake whoever waits for the fleet's."""

    def __init__(self, servers: dict[str, ProcessServer], nursery: trio.Nursery) -> None:
        self.servers = servers
        self.changed = trio.lowlevel.ParkingLot()
        for server in servers.values():
            if server is not None:
                nursery.start_soon(self._watch, server)

    def names(self) -> list[str]:
        return sorted(self.servers)

    def get(self, name: str):
        return self.servers.get(name)

    async def wait_change(self) -> None:
        await self.changed.park()

    async def _watch(self, server: ProcessServer) -> None:
        generation = None
        while True:
            generation = await server.wait_status_change(generation)
            self.changed.unpark_all()


FLEET_PASSWORD = {"ada": PASSWORD["ada"], "vic": PASSWORD["vic"], "alf": "alpha's operator"}


@dataclasses.dataclass
class FleetSite:
    servers: dict[str, ProcessServer]
    port: int
    logs: dict[str, str]

    def pid(self, name: str) -> int:
        return self.servers[name].status.pid

    def log(self, name: str) -> str:
        with open(self.logs[name], encoding="utf-8", errors="replace") as f:
            return f.read()


async def start_fleet(nursery: trio.Nursery, tmp_path) -> FleetSite:
    cheap = {"n": 16, "r": 1, "p": 1}
    users = tmp_path / "users"
    users.write_text(serialize([
        WebUser("ada", "operator", hash_password(FLEET_PASSWORD["ada"], **cheap)),
        WebUser("vic", "viewer", hash_password(FLEET_PASSWORD["vic"], **cheap)),
        WebUser("alf", "operator", hash_password(FLEET_PASSWORD["alf"], **cheap), ("alpha",)),
    ]))
    servers, logs = {}, {}
    for name in ("alpha", "beta"):
        logs[name] = str(tmp_path / f"{name}.log")
        servers[name] = ProcessServer(Config(command=("/bin/cat",), name=name, logfile=logs[name], holdoff=0.2),
                                      extras=[])
        await nursery.start(servers[name].run)
    app = build_app(Servers(servers, nursery), WebAuth(str(users), "/"), title="the fleet")
    port = await nursery.start(serve_asgi, app, "127.0.0.1", 0)
    with trio.fail_after(10):
        while not all(server.status.running for server in servers.values()):
            await trio.sleep(0.02)
    return FleetSite(servers, port, logs)


async def logged_in(site: FleetSite, user: str) -> WebClient:
    client = WebClient(site.port)
    assert (await client.login(user, FLEET_PASSWORD[user])).status == 303
    return client


async def test_a_fleet_table_lists_every_ioc_and_an_action_on_one_leaves_the_other_alone(nursery, tmp_path):
    site = await start_fleet(nursery, tmp_path)
    ada = await logged_in(site, "ada")
    page = await ada.get("/")
    assert page.status == 200 and "<h1>the fleet</h1>" in page.text
    listed = json.loads((await ada.get("/api/status")).body)
    assert [(entry["name"], entry["pid"]) for entry in listed] == [("alpha", site.pid("alpha")),
                                                                   ("beta", site.pid("beta"))]
    assert json.loads((await ada.get("/api/ioc/beta")).body)["pid"] == site.pid("beta")

    before = {name: site.pid(name) for name in ("alpha", "beta")}
    assert (await ada.act("restart", await ada.csrf(), "alpha")).status == 200
    with trio.fail_after(10):
        while site.pid("alpha") in (None, before["alpha"]):
            await trio.sleep(0.02)
    assert site.pid("beta") == before["beta"] and site.servers["beta"].status.start_count == 1
    with trio.fail_after(10):
        while "@@@ web: restart by ada from 127.0.0.1" not in site.log("alpha"):
            await trio.sleep(0.02)
    assert "restart by" not in site.log("beta")


async def test_an_access_list_hides_an_ioc_everywhere_as_if_it_did_not_exist(nursery, tmp_path):
    site = await start_fleet(nursery, tmp_path)
    alf = await logged_in(site, "alf")
    listed = json.loads((await alf.get("/api/status")).body)
    assert [entry["name"] for entry in listed] == ["alpha"]
    for path in ("/api/ioc/beta", "/ioc/beta/console", "/ioc/beta/console?spy=1", "/ioc/beta/log",
                 "/ioc/beta/log/download"):
        hidden, unknown = await alf.get(path), await alf.get(path.replace("beta", "nonesuch"))
        assert (hidden.status, hidden.body) == (404, unknown.body.replace(b"nonesuch", b"beta")), path
    csrf = await alf.csrf()
    pid = site.pid("beta")
    assert (await alf.act("kill", csrf, "beta")).status == 404
    assert await alf.handshake("/ws/ioc/beta/console") == 403
    assert (await alf.get("/ioc/alpha/console")).status == 200
    async with alf.socket("/ws/status") as ws:
        with trio.fail_after(10):
            pushed = json.loads(await ws.get_message())
    assert [entry["name"] for entry in pushed] == ["alpha"]
    assert site.pid("beta") == pid


async def test_ws_status_pushes_a_restart_without_being_asked(nursery, tmp_path):
    site = await start_fleet(nursery, tmp_path)
    vic, ada = await logged_in(site, "vic"), await logged_in(site, "ada")
    assert await WebClient(site.port).handshake("/ws/status") == 403  # nobody
    assert await vic.handshake("/ws/status", "http://evil.example") == 403
    async with vic.socket("/ws/status") as ws:
        with trio.fail_after(10):
            first = json.loads(await ws.get_message())  # at once
        old = {entry["name"]: entry["pid"] for entry in first}
        assert old == {"alpha": site.pid("alpha"), "beta": site.pid("beta")}
        assert (await ada.act("restart", await ada.csrf(), "beta")).status == 200
        with trio.fail_after(10):
            while site.pid("beta") in (None, old["beta"]) or not site.servers["beta"].status.running:
                await trio.sleep(0.01)
        new = site.pid("beta")
        with trio.fail_after(1):  # pushed within a second of the change: nobody asked again
            while True:
                beta = {entry["name"]: entry for entry in json.loads(await ws.get_message())}["beta"]
                if beta["pid"] == new and beta["running"]:
                    break
        assert beta["start_count"] == 2


async def test_ws_status_sends_a_few_snapshots_a_second_however_fast_the_statuses_change(nursery, tmp_path):
    site = await start_fleet(nursery, tmp_path)
    ada = await logged_in(site, "ada")
    alpha = site.servers["alpha"]
    async with ada.socket("/ws/status") as ws:
        with trio.fail_after(10):
            await ws.get_message()
        received, last = 0, None
        start = trio.current_time()
        for _ in range(101):  # an odd number: ^T goes ON, OFF, ON, ... and must end elsewhere
            alpha.toggle_autorestart()  # a change of status each time
            await trio.sleep(0.005)
        with trio.fail_after(10):  # then read what came, until nothing more does for a while
            while True:
                with trio.move_on_after(0.6) as quiet:
                    last = json.loads(await ws.get_message())
                    received += 1
                if quiet.cancelled_caught:
                    break
        elapsed = trio.current_time() - start
    assert last is not None and last[0]["restart_mode"] == alpha.status.restart_mode.value  # the last change came
    assert received <= elapsed / 0.25 + 2, (received, elapsed)  # not one a change: at most 4 a second


async def test_the_spy_link_gives_even_an_operator_a_console_that_drops_keys(nursery, tmp_path):
    site = await start_fleet(nursery, tmp_path)
    ada = await logged_in(site, "ada")
    page = await ada.get("/ioc/alpha/console?spy=1")
    assert page.status == 200 and 'data-operator="no"' in page.text and "(read only)" in page.text
    assert 'data-socket="../../ws/ioc/alpha/console?spy=1"' in page.text
    assert 'data-operator="yes"' in (await ada.get("/ioc/alpha/console")).text
    vic = await logged_in(site, "vic")
    assert 'data-operator="no"' in (await vic.get("/ioc/alpha/console")).text  # viewers only spy

    alpha = site.servers["alpha"]
    async with ada.console("alpha", spy=True) as spy:
        await attach(spy)
        assert (alpha.status.users, alpha.status.loggers) == (0, 1)
        await spy.send_message(b"typed by the spy\r")
        async with ada.console("alpha") as operator:
            await attach(operator)
            await operator.send_message(b"typed by the operator\r")
            seen = await read_until(spy, b"typed by the operator\r\n")
    assert b"typed by the spy" not in seen and "typed by the spy" not in site.log("alpha")
    assert site.log("alpha").count("ada from 127.0.0.1 attached read-write") == 1  # the operator's only


async def test_a_log_follow_ends_going_away_when_its_instance_leaves_the_fleet(nursery, tmp_path):
    """A reload that removes an instance: its log's followers are told, as its consoles are."""
    site = await start_fleet(nursery, tmp_path)
    vic = await logged_in(site, "vic")
    async with vic.socket("/ws/ioc/beta/log?from=0") as beta, vic.socket("/ws/ioc/alpha/log?from=0") as alpha:
        await read_until(beta, b"beta")
        await read_until(alpha, b"alpha")
        removed = site.servers.pop("beta")
        removed.stop()  # a change the fleet wakes its watchers for
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            while True:
                await beta.get_message()
        await beta._stream.aclose()  # trio-websocket leaves the socket of a connection the server closed
        assert closed.value.reason.code == 1001
        site.servers["alpha"].announce("alpha goes on")
        assert b"alpha goes on" in await read_until(alpha, b"alpha goes on")


@pytest.mark.parametrize("name", ["ioc one", "<b>&'\"x", "é-ioc", "100%", "a?b#c;d", ".hidden", "./st.cmd", "a/log"])
async def test_any_ioc_name_is_quoted_in_urls_and_escaped_in_pages(nursery, tmp_path, name):
    server = ProcessServer(Config(command=("/bin/cat",), name=name, logfile=str(tmp_path / "log")), extras=[])
    await nursery.start(server.run)
    port = await nursery.start(serve_asgi, build_app(OneServer(server), WebAuth(None, "/"), title=name),
                               "127.0.0.1", 0)
    client = WebClient(port)
    quoted = quote(name, safe="")
    page = await client.get("/")
    assert page.status == 200 and f"<h1>{html.escape(name)}</h1>" in page.text
    assert [entry["name"] for entry in json.loads((await client.get("/api/status")).body)] == [name]
    assert json.loads((await client.get(f"/api/ioc/{quoted}")).body)["name"] == name
    console = await client.get(f"/ioc/{quoted}/console")
    assert console.status == 200 and f"<h1>{html.escape(name)}</h1>" in console.text
    assert f'data-socket="../../ws/ioc/{html.escape(quoted)}/console"' in console.text
    assert (await client.get(f"/ioc/{quoted}/log")).status == 200
    async with client.console(name) as ws:
        assert name.encode() in await attach(ws)


def encode_uri_component(text: str) -> str:
    """What the status table's script makes of a name in its links (``encodeURIComponent``)."""
    return quote(text, safe="-_.!~*'()")


async def test_a_server_named_by_its_command_path_has_every_page_from_the_tables_links(nursery, tmp_path):
    """Without -n the name is the command, slashes and all: the decoded path cannot tell them from separators."""
    server = ProcessServer(Config(command=("/bin/cat",), logfile=str(tmp_path / "log")), extras=[])
    await nursery.start(server.run)
    port = await nursery.start(serve_asgi, build_app(OneServer(server), WebAuth(None, "/")), "127.0.0.1", 0)
    client = WebClient(port)
    [name] = [entry["name"] for entry in json.loads((await client.get("/api/status")).body)]
    assert name == "/bin/cat"
    table = (await client.get("/")).text
    assert '"ioc/" + encodeURIComponent(name) + "/"' in table and '"api/ioc/" + encodeURIComponent(name)' in table
    url = encode_uri_component(name)
    assert json.loads((await client.get(f"/api/ioc/{url}")).body)["name"] == name
    for page in ("console", "console?spy=1", "log", "log/download"):
        assert (await client.get(f"/ioc/{url}/{page}")).status == 200, page
    pid = server.status.pid
    assert (await client.act("restart", await client.csrf(), name)).status == 200
    assert server.status.pid != pid
    async with client.console(name) as ws:
        assert name.encode() in await attach(ws)
    async with client.socket(f"/ws/ioc/{url}/log?from=0") as ws:
        assert b"Restarting child" in await read_until(ws, b"Restarting child")
    # a path that does not quote the name's slashes names no IOC, as does one that splits another way
    for path in ("/ioc//bin/cat/console", "/ioc/%2Fbin/cat/console", "/api/ioc//bin/cat", "/ioc/x%2Fconsole/log"):
        assert (await client.get(path)).status == 404, path
    assert await client.handshake("/ws/ioc//bin/cat/console") == 403


async def test_an_instance_without_a_server_is_a_row_and_its_pages_say_try_later(nursery, tmp_path):
    """Host mode retrying an instance that failed to start: it stays in the table."""
    site = await start_fleet(nursery, tmp_path)
    fleet = Servers({**site.servers, "ghost": None}, nursery)  # type: ignore[dict-item]
    port = await nursery.start(serve_asgi, build_app(fleet, WebAuth(None, "/")), "127.0.0.1", 0)
    local = WebClient(port)
    listed = json.loads((await local.get("/api/status")).body)
    assert [entry["name"] for entry in listed] == ["alpha", "beta", "ghost"]
    assert listed[2] == {"name": "ghost", "serving": False} and listed[0]["serving"]
    assert json.loads((await local.get("/api/ioc/ghost")).body) == {"name": "ghost", "serving": False}
    for path in ("/ioc/ghost/console", "/ioc/ghost/log"):
        reply = await local.get(path)
        assert reply.status == 503 and "try again later" in reply.text, path
    assert (await local.act("start", await local.csrf(), "ghost")).status == 503
    assert await local.handshake("/ws/ioc/ghost/console") == 403


async def test_a_browser_that_reads_slowly_gets_the_latest_snapshot_never_a_queue(autojump_clock):
    """While one send waits on a slow browser, a hundred changes make one snapshot, made when sent."""

    class SlowBrowser:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.gate = trio.Event()

        async def send_text(self, text: str) -> None:
            await self.gate.wait()  # the browser reads nothing until the gate opens
            self.sent.append(text)

        async def receive(self) -> dict:
            await trio.sleep_forever()

    class Counter:
        value = 0
        changed = trio.lowlevel.ParkingLot()

        async def wait_change(self) -> None:
            await self.changed.park()

    browser, fleet = SlowBrowser(), Counter()

    async def snapshot() -> int:
        return fleet.value

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(push_status, browser, fleet, snapshot, 0.25, refuse=trio.sleep_forever))
        await trio.sleep(1)
        for _ in range(100):
            fleet.value += 1
            fleet.changed.unpark_all()
            await trio.sleep(0.01)
        browser.gate.set()
        await trio.sleep(1)
        assert browser.sent == ["0", "100"]
        nursery.cancel_scope.cancel()
