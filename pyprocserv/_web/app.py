"""The browser console's routes: login, the status table of a fleet and its buttons, each IOC's
console and log, the JSON API and the pushed status.

``build_app(fleet, auth)`` is a Starlette application for the IOCs of a :class:`.fleet.Fleet`,
each seen only through ``Root``: one server (``pyprocserv --web``) or a whole host
(``pyprocserv-manage run --web``), with the same URLs. Every path is under the base path
(``--web-base``, ending in ``/``); NAME is an IOC's name, URL-quoted:

    ``(base)``                the status table of every IOC the user may see
    ``ioc/NAME/console``      its console (``?spy=1``: read only, even for an operator)
    ``ioc/NAME/log``, ``ioc/NAME/log/download``
    ``api/status``            JSON: every IOC the user may see; ``api/ioc/NAME``: one
    ``api/ioc/NAME/ACTION``   POST: start, stop, restart, kill or toggle
    ``ws/ioc/NAME/console``   the console's WebSocket (``?spy=1`` as above)
    ``ws/ioc/NAME/log``       the log as it is written (``?from=OFFSET``; ``.logview``)
    ``ws/status``             the status JSON, pushed at once and after every change
    ``login``, ``logout``, ``static/...``

Rules:
1. Every route asks :func:`.._core.webusers.may` for its action on its IOC: the status table and
   ``api/status`` list only the IOCs the user may see (``view_status``; a per-IOC access list
   hides the others), the log needs ``read_log``, the console ``spy`` (and ``write_console`` to
   type), the buttons ``control``. Nobody logged in: pages redirect to the login, the API
   answers 401, a WebSocket is refused; a role without the right: 403. An IOC that does not
   exist and one the user may not see get the same 404: the answer never tells them apart.
2. What changes something checks the ``Origin`` (POSTs and the WebSocket handshakes) and, but
   for the login, the CSRF token (``.auth`` rule 2): 403 without them.
3. Each button pressed, and each read-write console opened, is an ``@@@ web:`` line on that
   IOC's consoles and in its log naming the user and the address (``_core.messages``).
4. Bodies are small: a login form of more than :data:`MAX_FORM` bytes is refused (413) before it
   is read whole. Every response forbids framing (no clickjacking of the buttons) and caching.
5. Whatever a request does, it ends that request at most (``serve.serve_asgi``'s guard).
6. The log download is the file as it is when asked for, sent chunked (it may grow meanwhile);
   ``ws/ioc/NAME/log`` (login, ``read_log`` and Origin) follows it as it is written, until the
   instance leaves the fleet or gets another server (a reload): then it closes with 1001.
7. ``ws/status`` (login and Origin as the console's) sends the snapshot of the IOCs the user
   may see (``.fleet`` rule 3) at once, then after each change, at most one every
   :data:`STATUS_GAP` seconds, never queued (``.statuspush``).
8. An instance that exists but has no server now (host mode retrying one that failed) is a row
   of the table; its console, log and buttons answer 503 until it is back.
9. An open console, or ``ws/status``, keeps the right it was opened with only while the
   visitor still has it (``.recheck``: every 30 s, and a console on each message); then it is
   closed with 1008. So does a log's follow (``read_log``). Each ``ws/status`` snapshot is
   made for the visitor as the users file says then: an IOC taken off their access list leaves
   the next one, and a visitor gone (removed, logged out, expired) closes the socket with 1008
   (``.statuspush`` rule 2).
10. No log file I/O on the event loop: the tail, the download and the follow read in
    ``.logview``'s worker threads, so a log on a stuck disk stalls no console.
11. A login the limiter blocks gets 429 ("too many failed logins", ``Retry-After`` its wait); one
    refused because too many logins are being checked gets 503 ("busy", ``Retry-After: 1``), so
    a user can tell a full queue from a lockout.
12. One user holds at most ``max_sockets_per_user`` WebSockets at once (consoles, follows and
    pushed statuses together; :data:`MAX_SOCKETS_PER_USER`): a handshake past that gets 403. So
    one login cannot take the web server's connections (``.connections``) from everybody else.
    Without users (loopback only, every local browser the operator) there is no such cap.
13. Any name works in a URL, one holding ``/`` too (without ``-n`` the name is the command,
    ``./st.cmd``): the pages quote it (``%2F``), and the name is read from the path as sent
    (``raw_path``), where a quoted ``/`` is not a separator. A path whose segments do not
    give exactly one name (say ``ioc/a/b/console``, for an IOC ``a/b``) names no IOC: 404.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import aclosing, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, BinaryIO, Callable, Generator, Iterator
from urllib.parse import parse_qs, unquote_to_bytes

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from .._core import messages
from .._core.webusers import CONTROL, READ_LOG, SPY, VIEW_STATUS, WRITE_CONSOLE, may
from .._shell.extras import Root
from .._shell.logfile import open_regular
from . import logview, pages
from .auth import LoginsBusy, Visitor, WebAuth
from .console import WebSocketTransport
from .fleet import Fleet, entry, snapshot
from .recheck import serve_while_allowed
from .statuspush import push_status

STATIC = Path(__file__).parent / "static"
MAX_FORM = 4096  # bytes of a login form: a name and a password
LOG_TAIL = 64 << 10  # bytes of the log file the log page shows
STATUS_GAP = 0.25  # seconds between two pushed status snapshots, at least (rule 7)
POLICY_VIOLATION = 1008  # WebSocket close code: refused by policy (no login, no right, bad Origin)
# Rule 12: a person's tabs of consoles, logs and status pages (ten tabs of three), and an eighth of
# the connections: WebSockets are the ones a newcomer at the cap cannot end while they read, so
# eight logins, not four, would be needed to shut everybody else out.
MAX_SOCKETS_PER_USER = 32
_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"),
            (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin")]


def _actions(root: Root) -> dict[str, Callable[[], object]]:
    return {"start": root.start, "stop": root.stop, "restart": root.restart, "kill": root.kill,
            "toggle": root.toggle_autorestart}


ACTIONS = ("start", "stop", "restart", "kill", "toggle")


class _SafeHeaders:
    """Adds rule 4's headers to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        await self._app(scope, receive, with_headers)


def build_app(fleet: Fleet, auth: WebAuth, *, title: str = "pyprocserv",
              max_sockets_per_user: int = MAX_SOCKETS_PER_USER) -> Any:
    """The ASGI application of the browser console of ``fleet`` (rules 1-13); ``title`` heads the
    status table and the login page."""
    base = auth.base
    sockets_of: Counter[str] = Counter()  # open WebSockets by user name (rule 12)

    @contextmanager
    def one_more_socket(visitor: Visitor) -> Iterator[bool]:
        """Whether ``visitor`` may open one more WebSocket (rule 12); it counts until the block ends."""
        if auth.open:
            yield True
            return
        name = visitor.user.name
        if sockets_of[name] >= max_sockets_per_user:
            yield False
            return
        sockets_of[name] += 1
        try:
            yield True
        finally:
            sockets_of[name] -= 1
            if not sockets_of[name]:
                del sockets_of[name]

    @asynccontextmanager
    async def admitted(websocket: WebSocket, visitor: Visitor | None, right: bool) -> AsyncIterator[Visitor | None]:
        """The visitor if the handshake may go on: logged in, with ``right``, from our Origin and
        under their socket cap (rules 1, 2 and 12); else None, the socket closed before accept
        (the handshake gets a 403). The socket counts against the cap until the block ends."""
        if visitor is None or not right or not auth.origin_ok(websocket):
            await websocket.close(POLICY_VIOLATION)
            yield None
            return
        with one_more_socket(visitor) as allowed:
            if not allowed:
                await websocket.close(POLICY_VIOLATION)
            yield visitor if allowed else None

    async def logged_in(request: HTTPConnection) -> Visitor | Response:
        """The visitor, or the answer to give to nobody (rule 1)."""
        visitor = await auth.visitor(request)
        if visitor is None and auth.open:  # a name other than loopback's (``.auth`` rule 6)
            return PlainTextResponse("refused: without --web-users, open the console by a loopback address, "
                                     "such as http://127.0.0.1:PORT/, not through a proxy (give a proxy "
                                     "--web-users)", status_code=403)
        if visitor is None:
            if request.url.path.startswith(base + "api/"):
                return PlainTextResponse("log in first", status_code=401)
            return RedirectResponse(base + "login", status_code=303)
        return visitor

    async def named(request: Request) -> tuple[Visitor, str] | Response:
        """The visitor and the IOC the path names if they may see it, else the answer (rule 1)."""
        visitor = await logged_in(request)
        if isinstance(visitor, Response):
            return visitor
        name = request.path_params["name"]
        if not (may(visitor.user, VIEW_STATUS, name) and name in fleet.names()):
            return PlainTextResponse(f"no IOC named {name!r} here", status_code=404)
        return visitor, name

    async def instance(request: Request, action: str) -> tuple[Visitor, str, Root] | Response:
        """The visitor, the IOC's name and its server if they may do ``action`` on it, else the
        answer to give (rules 1 and 8)."""
        found = await named(request)
        if isinstance(found, Response):
            return found
        visitor, name = found
        if not may(visitor.user, action, name):
            return PlainTextResponse(f"{visitor.user.role}s may not do this", status_code=403)
        root = fleet.get(name)
        if root is None:
            return PlainTextResponse(f"{name} has no server now (it failed to start and is retried); "
                                     "try again later", status_code=503)
        return visitor, name, root

    def visible_status(visitor: Visitor) -> list[dict[str, object]]:
        return snapshot(fleet, lambda name: may(visitor.user, VIEW_STATUS, name))

    def page_args(visitor: Visitor) -> dict[str, Any]:
        return {"user": visitor.user.name, "csrf": auth.csrf(visitor), "logout": not auth.open}

    async def status_page(request: Request) -> Response:
        visitor = await logged_in(request)
        if isinstance(visitor, Response):
            return visitor
        operator = any(may(visitor.user, CONTROL, name) for name in fleet.names())
        return HTMLResponse(pages.status_page(title, operator=operator, actions=ACTIONS, **page_args(visitor)))

    async def api_status(request: Request) -> Response:
        visitor = await logged_in(request)
        if isinstance(visitor, Response):
            return visitor
        return JSONResponse(visible_status(visitor))

    async def api_instance(request: Request) -> Response:
        found = await named(request)
        if isinstance(found, Response):
            return found
        return JSONResponse(entry(fleet, found[1]))

    async def api_action(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return PlainTextResponse(f"no action {action!r}; one of {', '.join(ACTIONS)}", status_code=404)
        found = await instance(request, CONTROL)
        if isinstance(found, Response):
            return found
        visitor, name, root = found
        if not auth.origin_ok(request):
            return PlainTextResponse("refused: this request did not come from the console's own page", status_code=403)
        if not auth.csrf_ok(visitor, request.headers.get("x-csrf-token")):
            return PlainTextResponse("refused: missing or wrong X-CSRF-Token; reload the page", status_code=403)
        root.announce(messages.web_action(action, visitor.user.name, auth.peer(request)), who=messages.WEB_WHO)
        _actions(root)[action]()
        return JSONResponse(entry(fleet, name))

    async def console_page(request: Request) -> Response:
        found = await instance(request, SPY)
        if isinstance(found, Response):
            return found
        visitor, name, _ = found
        may_write = may(visitor.user, WRITE_CONSOLE, name)
        operator = may_write and request.query_params.get("spy") != "1"
        return HTMLResponse(pages.console_page(name, operator=operator, may_write=may_write, **page_args(visitor)))

    async def console_socket(websocket: WebSocket) -> None:
        name = websocket.path_params["name"]
        found = await auth.visitor(websocket)
        root = fleet.get(name)
        async with admitted(websocket, found, found is not None and may(found.user, SPY, name)
                            and root is not None) as visitor:
            if visitor is None or root is None:
                return
            spy = websocket.query_params.get("spy") == "1"
            role = "operator" if not spy and may(visitor.user, WRITE_CONSOLE, name) else "spy"
            await websocket.accept()
            if role == "operator":
                root.announce(messages.web_attached(visitor.user.name, auth.peer(websocket)), who=messages.WEB_WHO)
            right = WRITE_CONSOLE if role == "operator" else SPY  # kept only while it lasts (rule 9)
            await serve_while_allowed(WebSocketTransport(websocket), auth.keeps(websocket, right, name),
                                      lambda transport: root.serve_console(transport, role=role),
                                      refuse=lambda: websocket.close(POLICY_VIOLATION), every=auth.recheck_every)

    async def status_socket(websocket: WebSocket) -> None:
        async with admitted(websocket, await auth.visitor(websocket), True) as visitor:
            if visitor is not None:
                await websocket.accept()
                await push_status_to(websocket)

    async def push_status_to(websocket: WebSocket) -> None:
        """``ws/status``'s pushes, on an accepted ``websocket`` (rules 7 and 9)."""

        async def status_now() -> list[dict[str, object]] | None:
            """For the visitor as the users file says now, not as at the handshake (rule 9)."""
            now = await auth.visitor(websocket)
            return None if now is None else visible_status(now)

        async def refuse() -> None:
            await websocket.close(POLICY_VIOLATION)

        # push_status reads the socket itself: of .recheck, only the periodic check applies (rule 9)
        await serve_while_allowed(WebSocketTransport(websocket), auth.keeps(websocket, VIEW_STATUS, None),
                                  lambda _: push_status(websocket, fleet, status_now, STATUS_GAP, refuse=refuse),
                                  refuse=refuse, every=auth.recheck_every)

    async def log_path(request: Request) -> tuple[Visitor, str, str] | Response:
        """The visitor, the IOC's name and its log file's path, or the answer to give (no file
        I/O here: rule 10)."""
        found = await instance(request, READ_LOG)
        if isinstance(found, Response):
            return found
        visitor, name, root = found
        path = root.config.logfile
        if path is None or path == "-":
            return PlainTextResponse("no log file is configured (-L FILE)", status_code=404)
        return visitor, name, path

    async def log_page(request: Request) -> Response:
        found = await log_path(request)
        if isinstance(found, Response):
            return found
        visitor, name, path = found
        try:
            data, end = await logview.tail(path, LOG_TAIL)
        except OSError as exc:
            return _unreadable(exc)
        return HTMLResponse(pages.log_page(name, path, data.decode("utf-8", "replace"), end=end,
                                           skipped=end > len(data), **page_args(visitor)))

    async def log_download(request: Request) -> Response:
        found = await log_path(request)
        if isinstance(found, Response):
            return found
        _, _, path = found
        try:
            f = await logview.in_thread(open_regular, path)
        except OSError as exc:
            return _unreadable(exc)
        disposition = f'attachment; filename="{_ascii_name(os.path.basename(path))}"'
        return StreamingResponse(logview.chunks_in_thread(_up_to_now(f)), media_type="text/plain; charset=utf-8",
                                 headers={"Content-Disposition": disposition})

    async def log_socket(websocket: WebSocket) -> None:
        name = websocket.path_params["name"]
        found = await auth.visitor(websocket)
        root = fleet.get(name)
        path = root.config.logfile if root is not None else None
        async with admitted(websocket, found, found is not None and may(found.user, READ_LOG, name)
                            and path is not None and path != "-") as visitor:
            if visitor is None or path is None or root is None:
                return
            await logview.follow(websocket, path, keep=lambda transport, serve: serve_while_allowed(
                transport, auth.keeps(websocket, READ_LOG, name), serve,
                refuse=lambda: websocket.close(POLICY_VIOLATION), every=auth.recheck_every),  # rule 9
                gone=lambda: left_the_fleet(name, root))  # rule 6

    async def left_the_fleet(name: str, root: Root) -> None:
        """Returns once ``root`` is no longer the server of the instance ``name`` (rule 6)."""
        while fleet.get(name) is root:
            await fleet.wait_change()

    async def login_page(request: Request) -> Response:
        if auth.open:
            return RedirectResponse(base, status_code=303)
        return HTMLResponse(pages.login_page(title))

    async def login(request: Request) -> Response:
        if auth.open:
            return RedirectResponse(base, status_code=303)
        if not auth.origin_ok(request):
            return PlainTextResponse("refused: this login did not come from the console's own page", status_code=403)
        form = await _small_form(request)
        if form is None:
            return PlainTextResponse(f"a login form is at most {MAX_FORM} bytes", status_code=413)
        name, password = form.get("user", [""])[0], form.get("password", [""])[0]
        try:
            token, wait = await auth.login(auth.peer(request), name, password)
        except LoginsBusy:  # not a lockout: say so, or users think they are locked out (rule 11)
            return HTMLResponse(pages.login_page(title, error="the server is busy checking other logins; "
                                                 "try again in a second"),
                                status_code=503, headers={"Retry-After": "1"})
        if token is None:
            if wait > 0:
                return HTMLResponse(pages.login_page(title, error=f"too many failed logins: try again in {wait:.0f} s"),
                                    status_code=429, headers={"Retry-After": str(int(wait) + 1)})
            return HTMLResponse(pages.login_page(title, error="wrong user name or password"), status_code=401)
        response = RedirectResponse(base, status_code=303)
        response.headers.append("set-cookie", auth.cookie(request).set_cookie(token, max_age=12 * 3600))
        return response

    async def logout(request: Request) -> Response:
        visitor = await auth.visitor(request)
        form = await _small_form(request)
        if visitor is None or form is None or not auth.origin_ok(request) \
                or not auth.csrf_ok(visitor, form.get("csrf", [None])[0]):
            return PlainTextResponse("refused: log out from the console's own page", status_code=403)
        auth.logout(visitor)
        response = RedirectResponse(base + "login", status_code=303)
        response.headers.append("set-cookie", auth.cookie(request).clear_cookie())
        return response

    def by_name(prefix: str, suffix: str, endpoint: Callable[[Any], Any], *, web_socket: bool = False,
                **options: Any) -> Any:
        """The route of ``endpoint`` on ``prefix``NAME``suffix``, NAME any IOC name (rule 13)."""
        at = (base + prefix).count("/")  # the index of NAME among the path's "/"-separated segments

        async def with_the_name(connection: Any) -> Any:
            name = _name_as_sent(connection.scope, at)
            if name is None and web_socket:
                return await connection.close(POLICY_VIOLATION)
            if name is None and not suffix and _raw(connection.scope).count(b"/") == at + 1:  # an ACTION's
                return PlainTextResponse("an action is a POST", status_code=405, headers={"Allow": "POST"})
            if name is None:
                return PlainTextResponse("this path names no IOC (a '/' in a name is quoted: %2F)", status_code=404)
            connection.path_params["name"] = name
            return await endpoint(connection)

        path = base + prefix + "{name:path}" + suffix
        if web_socket:
            return WebSocketRoute(path, with_the_name)
        return Route(path, with_the_name, **options)

    routes = [
        Route(base, status_page),
        Route(base + "api/status", api_status),
        by_name("api/ioc/", "", api_instance),
        by_name("api/ioc/", "/{action}", api_action, methods=["POST"]),
        by_name("ioc/", "/console", console_page),
        by_name("ioc/", "/log", log_page),
        by_name("ioc/", "/log/download", log_download),
        by_name("ws/ioc/", "/console", console_socket, web_socket=True),
        by_name("ws/ioc/", "/log", log_socket, web_socket=True),
        WebSocketRoute(base + "ws/status", status_socket),
        Route(base + "login", login_page, methods=["GET"]),
        Route(base + "login", login, methods=["POST"]),
        Route(base + "logout", logout, methods=["POST"]),
        Mount(base + "static", StaticFiles(directory=STATIC)),
    ]
    return _SafeHeaders(Starlette(routes=routes))


def _name_as_sent(scope: Any, at: int) -> str | None:
    """The IOC name a request's path gives as sent: its segment ``at``, unquoted (rule 13). None
    if that is not the name the route read from the decoded path, or another segment holds a
    quoted ``/``: the path does not name one IOC. Without ``raw_path``, the route's name."""
    name: str = scope["path_params"]["name"]
    if scope.get("raw_path") is None:
        return name
    try:
        segments = [unquote_to_bytes(segment).decode("utf-8") for segment in _raw(scope).split(b"/")]
    except UnicodeDecodeError:
        return None
    others = segments[:at] + segments[at + 1:]
    if len(segments) <= at or segments[at] != name or any("/" in segment for segment in others):
        return None
    return name


def _raw(scope: Any) -> bytes:
    """The path as sent, without a query (some servers leave it in ``raw_path``)."""
    return (scope.get("raw_path") or scope["path"].encode()).split(b"?")[0]


def _up_to_now(f: BinaryIO) -> Generator[bytes, None, None]:
    """The bytes of a log file that is still being written, up to its size now (rule 6): a file
    that grows or is rotated while it is sent ends the download, never breaks the response."""
    with f:
        left = os.fstat(f.fileno()).st_size
        while left > 0 and (chunk := f.read(min(left, 1 << 16))):
            left -= len(chunk)
            yield chunk


def _unreadable(exc: OSError) -> Response:
    return PlainTextResponse(f"cannot read the log file: {exc.strerror or exc}", status_code=404)


def _ascii_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name) or "log"


async def _small_form(request: Request) -> dict[str, list[str]] | None:
    """The URL-encoded form of ``request``, or None if it is longer than MAX_FORM bytes (rule 4)."""
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_FORM:
        return None
    body = b""
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_FORM:
                return None
    try:
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than a login has
        return {}
