"""The web console's session: a signed cookie token, its CSRF token and the cookie's attributes.

Rules:
1. A session token is ``PAYLOAD.SIGNATURE``, both unpadded base64url. PAYLOAD is compact JSON
   ``[1, user, role, issued_at, expires_at, nonce]`` (whole seconds); SIGNATURE is HMAC-SHA256
   with the server's key over a purpose label and PAYLOAD's text. The nonce makes two logins of
   one user in the same second two sessions with two CSRF tokens.
2. :func:`verify_session` returns the :class:`Session` only for a token this key signed, compared
   in constant time, whose ``issued_at <= now < expires_at`` (a little clock skew allowed on the
   issue side). Anything else, however malformed, long or non-ASCII, is None: it never raises.
3. The token says who logged in; it does not grant. The server looks the user up again in the
   credentials file on every request, so removing a user or changing a role takes effect at once.
4. The CSRF token is HMAC-SHA256 of the session token under its own purpose label: bound to one
   session, useless without it, and derived, so the server keeps no table of them.
5. The key is random, 32 bytes or more (:func:`new_key`); a shorter one is a ValueError.
6. The cookie is HttpOnly, SameSite=Strict, Path=the base path, and Secure unless the client
   speaks plain http to a loopback address (where browsers may not keep a Secure cookie). A
   Secure cookie's name carries the ``__Secure-`` prefix (``__Host-`` when the path is ``/``), so
   a plain-http page on the same host cannot set it. Cookies ignore ports (RFC 6265 section 8.5),
   so the name ends with the server's port (``pyprocserv-session-8443``): two consoles on one
   host keep their sessions apart, and neither sends its token to the other (a service on
   another port of the host still receives it: Path and name do not hide a cookie from it).
7. A logout revokes its token: :class:`RevokedSessions` keeps the nonce of each revoked session
   until that session's own expiry (after which :func:`verify_session` refuses it anyway), and
   the server refuses a revoked session as it refuses a forged one. The set is bounded
   (``max_entries``). At the bound, the entry issued earliest is dropped and every session
   issued at or before it counts as revoked from then on (a watermark): some other users must
   log in again, but a revoked token never becomes valid again. Reaching the bound takes that
   many logouts within one session lifetime, each after a login that costs an scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import heapq
import secrets
from dataclasses import dataclass
from typing import final

from . import base64url

KEY_BYTES = 32
MAX_TOKEN_CHARS = 1024
CLOCK_SKEW = 60  # seconds a token's issued_at may lie in the future (another worker's clock)
_SESSION_LABEL = b"pyprocserv web session v1\0"
_CSRF_LABEL = b"pyprocserv web csrf v1\0"
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_PATH = re.compile(r"/[!#-+\--:<-[\]-~]*")  # printable ASCII without space, '"', ',', ';' or '\\'
COOKIE_NAME = "pyprocserv-session"


@final
@dataclass(frozen=True)
class Session:
    user: str
    role: str
    issued_at: int
    expires_at: int
    nonce: str


def new_key() -> bytes:
    """A fresh random signing key (rule 5)."""
    return secrets.token_bytes(KEY_BYTES)


def _check_key(key: bytes) -> None:
    if len(key) < KEY_BYTES:
        raise ValueError(f"the web session key has {len(key)} bytes; use {KEY_BYTES} random bytes or more")


def _mac(key: bytes, label: bytes, text: str) -> bytes:
    return hmac.new(key, label + text.encode("ascii"), hashlib.sha256).digest()


def issue_session(key: bytes, user: str, role: str, now: float, lifetime: float) -> str:
    """A token for ``user`` in ``role``, valid from ``now`` for ``lifetime`` seconds (rule 1)."""
    _check_key(key)
    issued = int(now)
    payload = [1, user, role, issued, issued + max(1, int(lifetime)), secrets.token_urlsafe(12)]
    body = base64url.encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    return f"{body}.{base64url.encode(_mac(key, _SESSION_LABEL, body))}"


def verify_session(key: bytes, token: str, now: float) -> Session | None:
    """The session ``token`` proves, or None if it is forged, tampered, expired or malformed (rule 2)."""
    _check_key(key)
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return None
    body, signature = token.split(".")
    try:
        given = base64url.decode(signature)
        if not hmac.compare_digest(given, _mac(key, _SESSION_LABEL, body)):
            return None
        payload = json.loads(base64url.decode(body))
    except ValueError:
        return None
    if not (isinstance(payload, list) and len(payload) == 6 and payload[0] == 1):
        return None
    _, user, role, issued, expires, nonce = payload
    if not all(isinstance(v, str) for v in (user, role, nonce)):
        return None
    if not all(type(v) is int for v in (issued, expires)):
        return None
    if not issued - CLOCK_SKEW <= now < expires:
        return None
    return Session(user, role, issued, expires, nonce)


def csrf_token(key: bytes, session_token: str) -> str:
    """The CSRF token that goes with ``session_token`` (rule 4)."""
    _check_key(key)
    return base64url.encode(_mac(key, _CSRF_LABEL, session_token))


def check_csrf(key: bytes, session_token: str, candidate: str | None) -> bool:
    """Whether ``candidate`` is the CSRF token of ``session_token``, compared in constant time."""
    if not isinstance(candidate, str) or not candidate.isascii() or len(candidate) > 100:
        return False
    if not session_token.isascii():
        return False
    return hmac.compare_digest(candidate.encode("ascii"), csrf_token(key, session_token).encode("ascii"))


@final
@dataclass(frozen=True)
class CookieRules:
    """The session cookie's name and attributes for one web console (rule 6)."""

    name: str
    path: str
    secure: bool

    def _attributes(self) -> str:
        secure = "; Secure" if self.secure else ""
        return f"Path={self.path}; HttpOnly; SameSite=Strict{secure}"

    def set_cookie(self, token: str, max_age: int) -> str:
        """The ``Set-Cookie`` value that stores ``token`` for ``max_age`` seconds."""
        if not _B64.fullmatch(token.replace(".", "")):
            raise ValueError("a session cookie holds a session token only")
        return f"{self.name}={token}; {self._attributes()}; Max-Age={max(0, int(max_age))}"

    def clear_cookie(self) -> str:
        """The ``Set-Cookie`` value that removes the cookie (logout)."""
        return f"{self.name}=; {self._attributes()}; Max-Age=0"


def cookie_rules(base_path: str, *, client_scheme: str, loopback: bool, port: int | None = None) -> CookieRules:
    """The cookie for a console under ``base_path``, as the client sees it (rule 6).

    ``client_scheme`` is the scheme in the client's address bar (``https`` behind a TLS proxy
    even if the proxy speaks http to us); ``loopback`` whether the client reaches a loopback
    address; ``port`` the port the server listens on (None on a UNIX socket: no port to name).
    A base path with characters a cookie cannot carry is a ValueError naming it.
    """
    if not _PATH.fullmatch(base_path):
        raise ValueError(
            f"web base path {base_path!r}: start it with '/' and use printable ASCII "
            "without spaces, quotes, ',', ';' or '\\\\'"
        )
    if client_scheme not in ("http", "https"):
        raise ValueError(f"client scheme {client_scheme!r}: expected http or https")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"web console port {port!r}: expected 1 to 65535")
    secure = not (client_scheme == "http" and loopback)
    name = COOKIE_NAME if port is None else f"{COOKIE_NAME}-{port}"
    prefix = "" if not secure else "__Host-" if base_path == "/" else "__Secure-"
    return CookieRules(prefix + name, base_path, secure)


@final
class RevokedSessions:
    """The sessions logged out before their expiry (rule 7)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("revoked sessions: max_entries must be at least 1")
        self.max_entries = max_entries
        self._nonces: dict[str, int] = {}  # nonce -> expires_at
        self._by_expiry: list[tuple[int, str]] = []  # a heap, to forget the expired
        self._by_issue: list[tuple[int, str]] = []  # a heap, to drop the earliest at the bound
        self._issued_up_to = -1  # sessions issued at or before this second are revoked

    def __len__(self) -> int:
        return len(self._nonces)

    def _forget_expired(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, nonce = heapq.heappop(self._by_expiry)
            self._nonces.pop(nonce, None)

    def revoke(self, session: Session, now: float) -> None:
        """``session`` is logged out: refuse it until it expires."""
        self._forget_expired(now)
        if session.expires_at <= now or session.nonce in self._nonces or self.revoked(session):
            return
        self._nonces[session.nonce] = session.expires_at
        heapq.heappush(self._by_expiry, (session.expires_at, session.nonce))
        heapq.heappush(self._by_issue, (session.issued_at, session.nonce))
        while len(self._nonces) > self.max_entries:
            issued, nonce = heapq.heappop(self._by_issue)
            if self._nonces.pop(nonce, None) is not None:
                self._issued_up_to = max(self._issued_up_to, issued)
        if len(self._by_issue) > 2 * self.max_entries:  # expired entries left in the issue heap
            self._by_issue = [(i, n) for i, n in self._by_issue if n in self._nonces]
            heapq.heapify(self._by_issue)

    def revoked(self, session: Session) -> bool:
        """Whether ``session`` was logged out (or issued before the watermark)."""
        return session.issued_at <= self._issued_up_to or session.nonce in self._nonces
