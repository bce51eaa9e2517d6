"""The browser console's routes: login, the status table and its buttons, the console, the log.

``build_app(root, auth)`` is a Starlette application for one server, seen only through ``Root``.
Every path is under the base path (``--web-base``, ending in ``/``).

Rules:
1. Every route asks :func:`.._core.webusers.may` for its action on this IOC: the status page and
   ``api/status`` need ``view_status``, the log ``read_log``, the console ``spy`` (and
   ``write_console`` to type), the buttons ``control``. Nobody logged in: pages redirect to the
   login, the API answers 401, a WebSocket is refused; a role without the right: 403.
2. What changes something checks the ``Origin`` (POSTs and the WebSocket handshake) and, but for
   the login, the CSRF token (``.auth`` rule 2): 403 without them.
3. Each button pressed, and each read-write console opened, is an ``@@@ web:`` line on every
   console and in the log naming the user and the address (``_core.messages``).
4. Bodies are small: a login form of more than :data:`MAX_FORM` bytes is refused (413) before it
   is read whole. Every response forbids framing (no clickjacking of the buttons) and caching.
5. Whatever a request does, it ends that request at most (``serve.serve_asgi``'s guard).
6. The log download is the file as it is when asked for, sent chunked (it may grow meanwhile).
7. An open console keeps the right it was opened with only while the visitor still has it
   (``.recheck``: every 30 s and on each message); then it is closed with 1008.
"""

from __future__ import annotations

import os
from contextlib import aclosing
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from .._core import messages
from .._core.webusers import CONTROL, READ_LOG, SPY, VIEW_STATUS, WRITE_CONSOLE, may
from .._shell.extras import Root
from . import pages
from .auth import Visitor, WebAuth
from .console import WebSocketTransport
from .recheck import serve_while_allowed

STATIC = Path(__file__).parent / "static"
MAX_FORM = 4096  # bytes of a login form: a name and a password
LOG_TAIL = 64 << 10  # bytes of the log file the log page shows
POLICY_VIOLATION = 1008  # WebSocket close code: refused by policy (no login, no right, bad Origin)
_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"),
            (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin")]


def _actions(root: Root) -> dict[str, Callable[[], object]]:
    return {"start": root.start, "stop": root.stop, "restart": root.restart, "kill": root.kill,
            "toggle": root.toggle_autorestart}


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


def build_app(root: Root, auth: WebAuth) -> Any:
    """The ASGI application of the browser console of ``root`` (rules 1-5)."""
    base = auth.base
    ioc = root.config.child_name

    async def who(request: Request, action: str) -> Visitor | Response:
        """The visitor if they may do ``action``, else the answer to give (rule 1)."""
        visitor = await auth.visitor(request)
        if visitor is None and auth.open:  # a name other than loopback's (``.auth`` rule 6)
            return PlainTextResponse("refused: without --web-users, open the console by a loopback address, "
                                     "such as http://127.0.0.1:PORT/, not through a proxy (give a proxy "
                                     "--web-users)", status_code=403)
        if visitor is None:
            if request.url.path.startswith(base + "api/"):
                return PlainTextResponse("log in first", status_code=401)
            return RedirectResponse(base + "login", status_code=303)
        if not may(visitor.user, action, ioc):
            return PlainTextResponse(f"{visitor.user.role}s may not do this", status_code=403)
        return visitor

    def page_args(visitor: Visitor) -> dict[str, Any]:
        return {"user": visitor.user.name, "csrf": auth.csrf(visitor), "logout": not auth.open}

    async def status_page(request: Request) -> Response:
        visitor = await who(request, VIEW_STATUS)
        if isinstance(visitor, Response):
            return visitor
        return HTMLResponse(pages.status_page(ioc, operator=may(visitor.user, CONTROL, ioc), **page_args(visitor)))

    async def api_status(request: Request) -> Response:
        visitor = await who(request, VIEW_STATUS)
        if isinstance(visitor, Response):
            return visitor
        return JSONResponse(root.status.as_dict())

    async def api_action(request: Request) -> Response:
        action = request.path_params["action"]
        act = _actions(root).get(action)
        if act is None:
            return PlainTextResponse(f"no action {action!r}; one of {', '.join(_actions(root))}", status_code=404)
        visitor = await who(request, CONTROL)
        if isinstance(visitor, Response):
            return visitor
        if not auth.origin_ok(request):
            return PlainTextResponse("refused: this request did not come from the console's own page", status_code=403)
        if not auth.csrf_ok(visitor, request.headers.get("x-csrf-token")):
            return PlainTextResponse("refused: missing or wrong X-CSRF-Token; reload the page", status_code=403)
        root.announce(messages.web_action(action, visitor.user.name, auth.peer(request)), who=messages.WEB_WHO)
        act()
        return JSONResponse(root.status.as_dict())

    async def console_page(request: Request) -> Response:
        visitor = await who(request, SPY)
        if isinstance(visitor, Response):
            return visitor
        operator = may(visitor.user, WRITE_CONSOLE, ioc)
        return HTMLResponse(pages.console_page(ioc, operator=operator, **page_args(visitor)))

    async def console_socket(websocket: WebSocket) -> None:
        visitor = await auth.visitor(websocket)
        if visitor is None or not auth.origin_ok(websocket) or not may(visitor.user, SPY, ioc):
            await websocket.close(POLICY_VIOLATION)  # before accept: the handshake gets a 403
            return
        role = "operator" if may(visitor.user, WRITE_CONSOLE, ioc) else "spy"
        await websocket.accept()
        if role == "operator":
            root.announce(messages.web_attached(visitor.user.name, auth.peer(websocket)), who=messages.WEB_WHO)
        right = WRITE_CONSOLE if role == "operator" else SPY  # kept only while it lasts (.recheck)
        await serve_while_allowed(WebSocketTransport(websocket), auth.keeps(websocket, right, ioc),
                                  lambda transport: root.serve_console(transport, role=role),
                                  refuse=lambda: websocket.close(POLICY_VIOLATION), every=auth.recheck_every)

    async def open_log(request: Request) -> tuple[Visitor, str, BinaryIO] | Response:
        """The visitor, the log file's path and the file open for reading, or the answer to give."""
        visitor = await who(request, READ_LOG)
        if isinstance(visitor, Response):
            return visitor
        path = root.config.logfile
        if path is None or path == "-":
            return PlainTextResponse("no log file is configured (-L FILE)", status_code=404)
        try:
            return visitor, path, open(path, "rb")
        except OSError as exc:
            return PlainTextResponse(f"cannot read the log file: {exc.strerror}", status_code=404)

    async def log_page(request: Request) -> Response:
        opened = await open_log(request)
        if isinstance(opened, Response):
            return opened
        visitor, path, f = opened
        with f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - LOG_TAIL))
            text = f.read(LOG_TAIL).decode("utf-8", "replace")
        return HTMLResponse(pages.log_page(ioc, path, text, skipped=size > LOG_TAIL, **page_args(visitor)))

    async def log_download(request: Request) -> Response:
        opened = await open_log(request)
        if isinstance(opened, Response):
            return opened
        _, path, f = opened
        disposition = f'attachment; filename="{_ascii_name(os.path.basename(path))}"'
        return StreamingResponse(_up_to_now(f), media_type="text/plain; charset=utf-8",
                                 headers={"Content-Disposition": disposition})

    async def login_page(request: Request) -> Response:
        if auth.open:
            return RedirectResponse(base, status_code=303)
        return HTMLResponse(pages.login_page(ioc))

    async def login(request: Request) -> Response:
        if auth.open:
            return RedirectResponse(base, status_code=303)
        if not auth.origin_ok(request):
            return PlainTextResponse("refused: this login did not come from the console's own page", status_code=403)
        form = await _small_form(request)
        if form is None:
            return PlainTextResponse(f"a login form is at most {MAX_FORM} bytes", status_code=413)
        name, password = form.get("user", [""])[0], form.get("password", [""])[0]
        token, wait = await auth.login(auth.peer(request), name, password)
        if token is None:
            if wait > 0:
                return HTMLResponse(pages.login_page(ioc, error=f"too many failed logins: try again in {wait:.0f} s"),
                                    status_code=429, headers={"Retry-After": str(int(wait) + 1)})
            return HTMLResponse(pages.login_page(ioc, error="wrong user name or password"), status_code=401)
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

    routes = [
        Route(base, status_page),
        Route(base + "api/status", api_status),
        Route(base + "api/{action}", api_action, methods=["POST"]),
        Route(base + "console", console_page),
        WebSocketRoute(base + "ws/console", console_socket),
        Route(base + "log", log_page),
        Route(base + "log/download", log_download),
        Route(base + "login", login_page, methods=["GET"]),
        Route(base + "login", login, methods=["POST"]),
        Route(base + "logout", logout, methods=["POST"]),
        Mount(base + "static", StaticFiles(directory=STATIC)),
    ]
    return _SafeHeaders(Starlette(routes=routes))


def _up_to_now(f: BinaryIO) -> Iterator[bytes]:
    """The bytes of a log file that is still being written, up to its size now (rule 6): a file
    that grows or is rotated while it is sent ends the download, never breaks the response."""
    with f:
        left = os.fstat(f.fileno()).st_size
        while left > 0 and (chunk := f.read(min(left, 1 << 16))):
            left -= len(chunk)
            yield chunk


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
