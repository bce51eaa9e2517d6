"""The request side of the browser console's security: who a request is, and whether it may act.

The decisions are the pure rules of ``_core`` (webusers, websession, weborigin, weblogins);
this module reads them off Starlette's requests and WebSockets.

Rules:
1. Without a credentials file (``--web-users``; the command line allows that on loopback only)
   every browser is the operator ``LOCAL``, as a telnet client on a loopback port is. With one,
   a request is the user its signed session cookie names, looked up again in the file on every
   request (a removed user or a changed role counts at once); no valid cookie, nobody.
2. Every request that changes something (a POST, a WebSocket handshake) must carry an
   ``Origin`` that is the console's own address; every POST but the login must also carry the
   CSRF token of its session (header ``X-CSRF-Token`` or form field ``csrf``). Without users
   the CSRF token belongs to a per-run constant: a page of another site can read neither.
3. A login is checked by the rate limiter first, then by scrypt in a worker thread, one at a
   time, so a burst of logins costs time, not memory, and never blocks the event loop. The
   limiter is asked again under the lock, so parallel guesses get no more tries than sequential
   ones; past 8 logins waiting, more are refused at once.
4. The signing key is new for each run of the server: a restart logs everybody out.
5. A credentials file that stops parsing while the server runs lets nobody in (logged), rather
   than an old copy or a half-read one.
6. Without users, a request must also name the server by a loopback address or ``localhost`` in
   its ``Host``: a page of another site whose name it points at 127.0.0.1 (DNS rebinding) would
   otherwise be "same origin" with the console and could press its buttons. And it must not come
   through a proxy (``Forwarded``, ``X-Forwarded-*``, ``Via``): a proxy on this host passes on
   loopback names for whoever is behind it, and without users that would make them operators.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import final

import trio
from starlette.requests import HTTPConnection

from .._core import websession, webusers
from .._core.weblogins import LoginLimiter
from .._core.weborigin import origin_allowed
from .._core.webusers import OPERATOR, CredentialsError, WebUser

logger = logging.getLogger("pyprocserv.web")
SESSION_LIFETIME = 12 * 3600  # seconds: a shift
MAX_LOGINS_WAITING = 8  # scrypt runs one login at a time; more waiting than this is a burst
LOCAL = WebUser("local", OPERATOR, "")  # rule 1: every browser when no users are configured
_NO_USERS_TOKEN = "no users configured"  # rule 2: what the CSRF token is bound to then
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


@final
@dataclass(frozen=True)
class Visitor:
    """Who sent a request: the user, and the session token their CSRF token belongs to."""

    user: WebUser
    token: str


def client_scheme(conn: HTTPConnection) -> str:
    """``https`` if the browser spoke TLS to us (https or wss), else ``http``."""
    return "https" if conn.url.scheme in ("https", "wss") else "http"


def peer(conn: HTTPConnection) -> str:
    """The client's address, as the announcements and the rate limiter name it."""
    return conn.client.host if conn.client else "unknown"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxied(conn: HTTPConnection) -> bool:
    """Whether a proxy says it passed the request on (rule 6)."""
    return any(name in ("forwarded", "via") or name.startswith("x-forwarded-") for name in conn.headers.keys())


def _loopback_name(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine: a loopback address or localhost (rule 6)."""
    match = _HOST.fullmatch(host or "")
    if match is None:
        return False
    name = match["v6"] or match["name"]
    return name.lower() == "localhost" or _loopback(name)


@final
class WebAuth:
    """The security state of one web console: its key, its users file and its login limiter."""

    def __init__(self, users_file: str | None, base: str, *, key: bytes | None = None,
                 limiter: LoginLimiter | None = None) -> None:
        self.users_file = users_file
        self.base = base
        self._key = key or websession.new_key()
        self._limiter = LoginLimiter() if limiter is None else limiter  # an empty one is falsy
        self._login_lock = trio.Lock()
        self._logins_waiting = 0
        self._cached: tuple[tuple[int, int], dict[str, WebUser]] | None = None

    @property
    def open(self) -> bool:
        """True when no credentials file is configured (rule 1)."""
        return self.users_file is None

    def users(self) -> dict[str, WebUser]:
        """The users of the file as it is now; none if it is unreadable or bad (rule 5)."""
        assert self.users_file is not None
        try:
            stat = os.stat(self.users_file)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._cached is None or self._cached[0] != stamp:
                with open(self.users_file, encoding="utf-8", errors="surrogateescape") as f:
                    self._cached = (stamp, webusers.parse(f.read(), self.users_file))
            return self._cached[1]
        except (OSError, CredentialsError) as exc:
            logger.error("web console: nobody can log in: %s", exc)
            self._cached = None
            return {}

    def cookie(self, conn: HTTPConnection) -> websession.CookieRules:
        server = conn.scope.get("server") or ("", 0)
        return websession.cookie_rules(self.base, client_scheme=client_scheme(conn),
                                       loopback=_loopback(str(server[0])))

    def visitor(self, conn: HTTPConnection) -> Visitor | None:
        """Who sent ``conn`` (rule 1), or None."""
        if self.open:
            local = _loopback_name(conn.headers.get("host")) and not _proxied(conn)
            return Visitor(LOCAL, _NO_USERS_TOKEN) if local else None
        token = conn.cookies.get(self.cookie(conn).name)
        if not token:
            return None
        session = websession.verify_session(self._key, token, time.time())
        if session is None:
            return None
        user = self.users().get(session.user)
        return Visitor(user, token) if user is not None else None

    def csrf(self, visitor: Visitor) -> str:
        return websession.csrf_token(self._key, visitor.token)

    def csrf_ok(self, visitor: Visitor, candidate: str | None) -> bool:
        return websession.check_csrf(self._key, visitor.token, candidate)

    def origin_ok(self, conn: HTTPConnection) -> bool:
        return origin_allowed(conn.headers.get("origin"), host=conn.headers.get("host"),
                              client_scheme=client_scheme(conn))

    async def login(self, address: str, name: str, password: str) -> tuple[str | None, float]:
        """``(session token, 0)`` for a good login; ``(None, seconds to wait)`` otherwise (rule 3)."""
        wait = self._limiter.wait(address, name, time.monotonic())
        if wait > 0:
            return None, wait
        if self._logins_waiting >= MAX_LOGINS_WAITING:
            return None, 1.0  # a burst: the logins ahead of it decide first
        self._logins_waiting += 1
        try:
            async with self._login_lock:
                # Again, under the lock: the failures of the logins that were ahead count, so a burst
                # of N parallel guesses gets no more tries than N guesses one after the other.
                wait = self._limiter.wait(address, name, time.monotonic())
                if wait > 0:
                    return None, wait
                user = await trio.to_thread.run_sync(webusers.authenticate, self.users(), name, password)
                if user is None:
                    self._limiter.failed(address, name, time.monotonic())
                    return None, 0.0
        finally:
            self._logins_waiting -= 1
        self._limiter.succeeded(address, name)
        return websession.issue_session(self._key, user.name, user.role, time.time(), SESSION_LIFETIME), 0.0
