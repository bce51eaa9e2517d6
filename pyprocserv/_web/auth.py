"""The request side of the browser console's security: who a request is, and whether it may act.

The decisions are the pure rules of ``_core`` (webusers, websession, weborigin, weblogins);
this module reads them off Starlette's requests and WebSockets.

Rules:
1. Without a credentials file (``--web-users``; the command line allows that on loopback only)
   every browser is the operator ``LOCAL``, as a telnet client on a loopback port is. With one,
   a request is the user its signed session cookie names, looked up again in the file on every
   request (a removed user or a changed role counts at once); no valid cookie, nobody. A
   session logged out is refused until it expires (``websession`` rule 7), and a long-lived
   WebSocket asks :meth:`WebAuth.keeps` again while it is open (``.recheck``).
2. Every request that changes something (a POST, a WebSocket handshake) must carry an
   ``Origin`` that is the console's own address, or the one configured (``--web-origin``);
   every POST but the login must also carry the CSRF token of its session (header
   ``X-CSRF-Token`` or form field ``csrf``). Without users the CSRF token belongs to a per-run
   constant; a proxy's user (rule 7) has one per user name: a page of another site can read
   neither.
3. A login is checked by the rate limiter first, then by scrypt in a worker thread, one at a
   time, so a burst of logins costs time, not memory, and never blocks the event loop. The
   limiter is asked again under the lock, so parallel guesses get no more tries than sequential
   ones; past 8 logins waiting, more are refused at once with :class:`LoginsBusy`, which is not
   a lockout: the server is busy, and the user may try again in a second.
4. The signing key is new for each run of the server: a restart logs everybody out.
5. The credentials file is read in a worker thread, again only when its stamp (modification
   time, size, inode) changed. One that stops parsing or cannot be read lets nobody in, rather
   than an old copy or a half-read one, and is logged once per stamp, not on every request.
6. Without users, a request must also name the server by a loopback address or ``localhost`` in
   its ``Host``: a page of another site whose name it points at 127.0.0.1 (DNS rebinding) would
   otherwise be "same origin" with the console and could press its buttons. And it must not come
   through a proxy (``Forwarded``, ``X-Forwarded-*``, ``Via``): a proxy on this host passes on
   loopback names for whoever is behind it, and without users that would make them operators.
7. Only on a connection from a trusted proxy (``--web-proxy``) are its ``X-Forwarded-Proto``,
   ``-Host`` and ``-For`` believed (``_core.webproxy`` rule 6): the scheme and host the browser
   used (for the Origin check and the cookie's Secure flag; without ``X-Forwarded-Proto``, the
   scheme of ``--web-origin``) and the client's address (for the limiter and the ``@@@`` lines);
   and, with ``--web-proxy-user HEADER``, the user it names, who must still be in the users
   file. From anyone else those headers change nothing. The cookie is Secure whenever
   ``--web-origin`` is https.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, final

import trio
from starlette.requests import HTTPConnection

from .._core import websession, webusers
from .._core.weblogins import LoginLimiter
from .._core.weborigin import Origin, allowed_origins, origin_allowed
from .._core.webproxy import Forwarded, Network, forwarded, proxy_user, trusted_proxies
from .._core.webusers import OPERATOR, CredentialsError, WebUser, may
from .recheck import RECHECK_EVERY

logger = logging.getLogger("pyprocserv.web")
SESSION_LIFETIME = 12 * 3600  # seconds: a shift
MAX_LOGINS_WAITING = 8  # scrypt runs one login at a time; more waiting than this is a burst
LOCAL = WebUser("local", OPERATOR, "")  # rule 1: every browser when no users are configured
_NO_USERS_TOKEN = "no users configured"  # rule 2: what the CSRF token is bound to then
_PROXY_USER_TOKEN = "proxy user "  # rule 2: and a proxy's user's, with the name after it
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


@final
class LoginsBusy(Exception):
    """More than :data:`MAX_LOGINS_WAITING` logins wait for their password check (rule 3)."""


@final
@dataclass(frozen=True)
class Visitor:
    """Who sent a request: the user, and the session token their CSRF token belongs to."""

    user: WebUser
    token: str


def _tcp_peer(conn: HTTPConnection) -> str:
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
class _UsersFile:
    """The credentials file, read again only when its stamp changes, in a worker thread (rule 5)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # worker threads of parallel requests
        self._stamp: object = None
        self._users: dict[str, WebUser] = {}

    def read(self) -> dict[str, WebUser]:
        """The users as the file is now; called in a worker thread."""
        with self._lock:
            try:
                stat = os.stat(self.path)
                stamp: object = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino, stat.st_dev)
            except OSError as exc:
                stamp = ("unreadable", exc.errno)
                problem: Exception | None = exc
            else:
                if stamp == self._stamp:
                    return self._users
                problem = None
            users: dict[str, WebUser] = {}
            if problem is None:
                try:
                    with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                        users = webusers.parse(f.read(), self.path)
                except CredentialsError as exc:
                    problem = exc
                except OSError as exc:  # tried again next time (it may pass: EMFILE), said once
                    problem, stamp = exc, ("unreadable", exc.errno, stamp)
            if problem is not None and stamp != self._stamp:
                logger.error("web console: nobody can log in: %s", problem)
            self._stamp, self._users = stamp, users
            return users


@final
class WebAuth:
    """The security state of one web console: its key, users file, login limiter, logouts and proxy."""

    def __init__(self, users_file: str | None, base: str, *, key: bytes | None = None,
                 limiter: LoginLimiter | None = None, proxies: Iterable[str | Network] = (),
                 proxy_user_header: str | None = None, origin: str | None = None,
                 recheck_every: float = RECHECK_EVERY) -> None:
        self.users_file = users_file
        self.base = base
        self._key = key or websession.new_key()
        self._limiter = LoginLimiter() if limiter is None else limiter  # an empty one is falsy
        self._login_lock = trio.Lock()
        self._logins_waiting = 0
        self._file = _UsersFile(users_file) if users_file is not None else None
        self._revoked = websession.RevokedSessions()
        self._proxies: tuple[Network, ...] = trusted_proxies(str(p) for p in proxies)
        self._proxy_user_header = proxy_user_header
        self._origins: frozenset[Origin] = allowed_origins([origin] if origin else [])
        self._origin_https = any(o.scheme == "https" for o in self._origins)
        self.recheck_every = recheck_every  # seconds between checks of an open WebSocket's right

    @classmethod
    def for_config(cls, config: Any) -> WebAuth:
        """The security state of the browser console ``config`` describes: a ``Config``, or host
        mode's settings (both ``.extra.WebOptions``)."""
        return cls(config.web_users, config.web_base, proxies=config.web_proxies,
                   proxy_user_header=config.web_proxy_user, origin=config.web_origin)

    @property
    def open(self) -> bool:
        """True when no credentials file is configured (rule 1)."""
        return self.users_file is None

    async def users(self) -> dict[str, WebUser]:
        """The users of the file as it is now; none if it is unreadable or bad (rule 5)."""
        assert self._file is not None
        return await trio.to_thread.run_sync(self._file.read)

    def _forwarded(self, conn: HTTPConnection) -> Forwarded | None:
        """What a trusted proxy forwards for ``conn``; None if it did not come from one (rule 7)."""
        if not self._proxies:
            return None
        return forwarded(conn.headers.items(), _tcp_peer(conn), self._proxies)

    def client_scheme(self, conn: HTTPConnection) -> str:
        """The scheme in the browser's address bar: ``https`` if it spoke TLS to us or to our proxy."""
        if conn.url.scheme in ("https", "wss"):
            return "https"
        via = self._forwarded(conn)
        if via is None:
            return "http"
        if via.proto is not None:
            return via.proto
        return "https" if self._origin_https else "http"

    def peer(self, conn: HTTPConnection) -> str:
        """The client's address, as the announcements and the rate limiter name it (rule 7)."""
        via = self._forwarded(conn)
        return via.client if via is not None and via.client is not None else _tcp_peer(conn)

    def cookie(self, conn: HTTPConnection) -> websession.CookieRules:
        """The session cookie's rules for ``conn``: named after the port it came in on
        (``websession`` rule 6), so two consoles on one host keep their sessions apart."""
        server = conn.scope.get("server") or ("", None)
        scheme = "https" if self._origin_https else self.client_scheme(conn)
        return websession.cookie_rules(self.base, client_scheme=scheme, loopback=_loopback(str(server[0])),
                                       port=server[1] or None)

    async def visitor(self, conn: HTTPConnection) -> Visitor | None:
        """Who sent ``conn`` (rules 1 and 7), or None."""
        if self.open:
            local = _loopback_name(conn.headers.get("host")) and not _proxied(conn)
            return Visitor(LOCAL, _NO_USERS_TOKEN) if local else None
        if self._proxy_user_header is not None:
            name = proxy_user(conn.headers.items(), _tcp_peer(conn), self._proxies, self._proxy_user_header)
            if name is not None:
                user = (await self.users()).get(name)
                return Visitor(user, _PROXY_USER_TOKEN + name) if user is not None else None
        token = conn.cookies.get(self.cookie(conn).name)
        if not token:
            return None
        session = websession.verify_session(self._key, token, time.time())
        if session is None or self._revoked.revoked(session):
            return None
        user = (await self.users()).get(session.user)
        return Visitor(user, token) if user is not None else None

    def keeps(self, conn: HTTPConnection, action: str, ioc: str | None) -> Callable[[], Awaitable[bool]]:
        """A check whether the visitor of ``conn`` may still do ``action`` on ``ioc`` (``.recheck``)."""

        async def still_allowed() -> bool:
            visitor = await self.visitor(conn)
            return visitor is not None and may(visitor.user, action, ioc)

        return still_allowed

    def logout(self, visitor: Visitor) -> None:
        """``visitor``'s session ends now, on every tab and socket that holds it (rule 1)."""
        now = time.time()
        session = websession.verify_session(self._key, visitor.token, now)
        if session is not None:
            self._revoked.revoke(session, now)

    def csrf(self, visitor: Visitor) -> str:
        return websession.csrf_token(self._key, visitor.token)

    def csrf_ok(self, visitor: Visitor, candidate: str | None) -> bool:
        return websession.check_csrf(self._key, visitor.token, candidate)

    def origin_ok(self, conn: HTTPConnection) -> bool:
        via = self._forwarded(conn)
        host = via.host if via is not None and via.host is not None else conn.headers.get("host")
        return origin_allowed(conn.headers.get("origin"), host=host, client_scheme=self.client_scheme(conn),
                              allowed=self._origins)

    async def login(self, address: str, name: str, password: str) -> tuple[str | None, float]:
        """``(session token, 0)`` for a good login; ``(None, seconds to wait)`` otherwise: 0 for a
        wrong name or password, more while the limiter blocks the login. Raises
        :class:`LoginsBusy` when too many logins are waiting already (rule 3)."""
        wait = self._limiter.wait(address, name, time.monotonic())
        if wait > 0:
            return None, wait
        if self._logins_waiting >= MAX_LOGINS_WAITING:
            raise LoginsBusy("the server is busy checking other logins")  # they decide first
        self._logins_waiting += 1
        try:
            async with self._login_lock:
                # Again, under the lock: the failures of the logins that were ahead count, so a burst
                # of N parallel guesses gets no more tries than N guesses one after the other.
                wait = self._limiter.wait(address, name, time.monotonic())
                if wait > 0:
                    return None, wait
                users = await self.users()
                user = await trio.to_thread.run_sync(webusers.authenticate, users, name, password)
                if user is None:
                    self._limiter.failed(address, name, time.monotonic())
                    return None, 0.0
        finally:
            self._logins_waiting -= 1
        self._limiter.succeeded(address, name)
        return websession.issue_session(self._key, user.name, user.role, time.time(), SESSION_LIFETIME), 0.0
