"""The web console's credentials file: who may log in, in which role, for which IOCs.

Rules:
1. One user a line, ``NAME:ROLE:HASH`` or ``NAME:ROLE:HASH:IOC,IOC,...``. Blank lines and lines
   whose first non-blank character is ``#`` are comments, kept as they are when a user is added
   or replaced. A line may end in ``\\n`` or ``\\r\\n``; no other white space is allowed in it.
2. NAME is 1 to 64 of ``A-Z a-z 0-9 . _ @ + -`` (the same names a trusted proxy may send); a
   name appears once. ROLE is ``viewer`` (status, log, spy) or ``operator`` (those, and the
   read-write console and the actions). The IOC list, if present, limits the IOCs the user may
   see at all; without it the user sees every IOC. An IOC name is printable ASCII without white
   space, ``:`` or ``,``.
3. HASH is self-describing: ``scrypt$N$R$P$SALT$KEY`` with SALT and KEY in unpadded base64url.
   The parameters are read from each hash, so raising them later leaves old hashes valid; they
   are bounded (N a power of two up to 2**20, 128*N*R at most 256 MiB, P at most 16) so a
   hand-edited file cannot make a login take minutes. The default, N=2**15 R=8 P=1, takes
   32 MiB and about 60 ms on the project's 2-core build machine (``bench/web_password_hash.py``):
   slow for guessing offline, not felt at a login. A server should verify one login at a time,
   off its event loop, so a burst of logins costs time, not memory. Passwords are UTF-8, lone
   surrogates kept (``surrogatepass``), not normalised.
4. Any bad line makes the whole file refused with :class:`CredentialsError`, which names the
   file, the line and what to fix: a half-read credentials file is never used.
5. :func:`verify_password` compares in constant time; :func:`authenticate` spends the same
   scrypt work on an unknown name as on a known one (one scrypt, with the parameters of the
   file's first user), so the time does not tell which names exist.
6. :func:`may` is the role matrix. An unknown action is a programming error (``ValueError``),
   never a silent yes or no.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import final

from . import base64url
from .errors import PyprocservError

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)

VIEW_STATUS = "view_status"
READ_LOG = "read_log"
SPY = "spy"
WRITE_CONSOLE = "write_console"
CONTROL = "control"
ACTIONS = frozenset({VIEW_STATUS, READ_LOG, SPY, WRITE_CONSOLE, CONTROL})
_ROLE_ACTIONS = {
    VIEWER: frozenset({VIEW_STATUS, READ_LOG, SPY}),
    OPERATOR: ACTIONS,
}

DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**15, 8, 1
MAX_N, MAX_P, MAX_MEMORY = 2**20, 16, 256 * 1024 * 1024
SALT_BYTES, KEY_BYTES = 16, 32
MAX_PASSWORD_BYTES = 4096

_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_IOC = re.compile(r"[!-~]{1,256}")  # printable ASCII, no space; ':' and ',' checked apart
_DECIMAL = re.compile(r"[1-9][0-9]{0,9}")


class CredentialsError(PyprocservError, ValueError):
    """A credentials file, line or value we refuse; ``str()`` says where and what to fix."""


@final
@dataclass(frozen=True)
class WebUser:
    """One line of the file. ``iocs`` is empty when the user may see every IOC."""

    name: str
    role: str
    password_hash: str
    iocs: tuple[str, ...] = ()


# -- passwords -----------------------------------------------------------------------------------


def _password_bytes(password: str) -> bytes:
    data = password.encode("utf-8", "surrogatepass")
    if not data:
        raise CredentialsError("the password is empty; choose a non-empty password")
    if len(data) > MAX_PASSWORD_BYTES:
        raise CredentialsError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes; choose a shorter one")
    return data


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=MAX_MEMORY + 1024 * 1024)


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A new salted ``scrypt$N$R$P$SALT$KEY`` hash of ``password`` (rule 3)."""
    _check_parameters(n, r, p)
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(_password_bytes(password), salt, n, r, p, KEY_BYTES)
    return f"scrypt${n}${r}${p}${base64url.encode(salt)}${base64url.encode(key)}"


def _check_parameters(n: int, r: int, p: int) -> None:
    if n < 2 or n > MAX_N or n & (n - 1):
        raise CredentialsError(f"scrypt N={n}: must be a power of two from 2 to {MAX_N}")
    if r < 1 or 128 * n * r > MAX_MEMORY:
        raise CredentialsError(f"scrypt R={r} with N={n}: needs more than {MAX_MEMORY >> 20} MiB; lower R or N")
    if p < 1 or p > MAX_P:
        raise CredentialsError(f"scrypt P={p}: must be from 1 to {MAX_P}")


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    """The parameters, salt and key of a hash; CredentialsError saying what is wrong."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise CredentialsError("the hash is not scrypt$N$R$P$SALT$KEY; make one with 'web-user add'")
    if not all(_DECIMAL.fullmatch(part) for part in parts[1:4]):
        raise CredentialsError("the hash's N, R and P are not plain decimal numbers")
    n, r, p = (int(part) for part in parts[1:4])
    _check_parameters(n, r, p)
    try:
        salt, key = base64url.decode(parts[4]), base64url.decode(parts[5])
    except ValueError:
        raise CredentialsError("the hash's salt or key is not unpadded base64url") from None
    if len(salt) < 8 or not 16 <= len(key) <= 64:
        raise CredentialsError("the hash's salt is under 8 bytes or its key is not 16 to 64 bytes")
    return n, r, p, salt, key


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the hash, compared in constant time; False for a bad hash."""
    try:
        n, r, p, salt, key = _parse_hash(password_hash)
        candidate = _scrypt(_password_bytes(password), salt, n, r, p, len(key))
    except CredentialsError:
        return False
    return hmac.compare_digest(candidate, key)


def _stand_in(users: dict[str, WebUser]) -> str:
    """A hash no password matches, with the parameters and lengths of the file's first user (or
    the defaults), so an unknown name costs one scrypt of the same shape as a known one (rule 5)."""
    n, r, p, salt, key = DEFAULT_N, DEFAULT_R, DEFAULT_P, bytes(SALT_BYTES), bytes(KEY_BYTES)
    for user in users.values():
        try:
            n, r, p, salt, key = _parse_hash(user.password_hash)
            break
        except CredentialsError:
            continue
    return f"scrypt${n}${r}${p}${base64url.encode(bytes(len(salt)))}${base64url.encode(bytes(len(key)))}"


def authenticate(users: dict[str, WebUser], name: str, password: str) -> WebUser | None:
    """The user whose name and password these are, or None; the same work either way (rule 5)."""
    user = users.get(name)
    if user is None:
        verify_password(_stand_in(users), password)  # all-zero key: matches nothing (2**-128 at worst)
        return None
    return user if verify_password(user.password_hash, password) else None


# -- the file ------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it is a valid user name (rule 2), else CredentialsError saying which characters."""
    if not _NAME.fullmatch(name):
        raise CredentialsError(
            f"user name {name!r}: use 1 to 64 of the characters A-Z a-z 0-9 . _ @ + -"
        )
    return name


def check_role(role: str) -> str:
    """``role`` if it is viewer or operator, else CredentialsError naming both."""
    if role not in ROLES:
        raise CredentialsError(f"unknown role {role!r}; use {VIEWER} or {OPERATOR}")
    return role


def check_iocs(iocs: Iterable[str]) -> tuple[str, ...]:
    """The IOC names as a tuple, each checked (rule 2); duplicates are refused."""
    result = tuple(iocs)
    if result == ("",):
        raise CredentialsError("the IOC list is empty; list IOCs, or drop the last ':' to allow every IOC")
    for ioc in result:
        if not _IOC.fullmatch(ioc) or ":" in ioc or "," in ioc:
            raise CredentialsError(
                f"IOC name {ioc!r}: use printable ASCII without spaces, ':' or ','"
            )
    if len(set(result)) != len(result):
        raise CredentialsError("an IOC is listed twice; list each IOC once")
    return result


def _is_comment(line: str) -> bool:
    stripped = line.strip(" \t")
    return not stripped or stripped.startswith("#")


def _lines(text: str) -> list[str]:
    """The lines with their endings, split at ``\n`` only, so line numbers are an editor's."""
    lines = text.split("\n")
    last = lines.pop()
    return [line + "\n" for line in lines] + ([last] if last else [])


def _body(line: str) -> str:
    """The line without its line ending."""
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith("\n") else line


def parse_line(line: str) -> WebUser:
    """One user line (no comment) as a WebUser; CredentialsError saying what is wrong."""
    fields = line.split(":")
    if len(fields) not in (3, 4):
        raise CredentialsError(f"expected NAME:ROLE:HASH or NAME:ROLE:HASH:IOC,IOC, found {len(fields)} fields")
    name, role, password_hash = check_name(fields[0]), check_role(fields[1]), fields[2]
    _parse_hash(password_hash)
    iocs = check_iocs(fields[3].split(",")) if len(fields) == 4 else ()
    return WebUser(name, role, password_hash, iocs)


def _users_by_line(text: str, source: str) -> list[tuple[int, WebUser]]:
    found: list[tuple[int, WebUser]] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(_lines(text), 1):
        line = _body(raw)
        if _is_comment(line):
            continue
        try:
            user = parse_line(line)
        except CredentialsError as exc:
            raise CredentialsError(f"{source}, line {number}: {exc}") from None
        if user.name in first_line:
            raise CredentialsError(
                f"{source}, line {number}: user {user.name!r} is already defined on line "
                f"{first_line[user.name]}; keep one line per user"
            )
        first_line[user.name] = number
        found.append((number, user))
    return found


def parse(text: str, source: str = "credentials file") -> dict[str, WebUser]:
    """The users of a credentials file by name, in file order; CredentialsError on any bad line."""
    return {user.name: user for _, user in _users_by_line(text, source)}


def format_user(user: WebUser) -> str:
    """The line for ``user``, without a line ending; checked as the parser checks it."""
    fields = [check_name(user.name), check_role(user.role), user.password_hash]
    _parse_hash(user.password_hash)
    if check_iocs(user.iocs):
        fields.append(",".join(user.iocs))
    return ":".join(fields)


def serialize(users: Iterable[WebUser]) -> str:
    """A whole credentials file for ``users``; :func:`parse` gives them back."""
    users = list(users)
    names = [user.name for user in users]
    if len(set(names)) != len(names):
        raise CredentialsError("a user is listed twice; keep one line per user")
    return "".join(format_user(user) + "\n" for user in users)


def set_user(text: str, user: WebUser, source: str = "credentials file") -> str:
    """``text`` with ``user``'s line replaced, or appended if the name is new; other lines kept.

    The text is parsed first, so a file with a bad line is refused, not rewritten.
    """
    new_line = format_user(user)
    lines = _lines(text)
    for number, old in _users_by_line(text, source):
        if old.name == user.name:
            raw = lines[number - 1]
            ending = raw[len(_body(raw)):] or "\n"
            lines[number - 1] = new_line + ending
            return "".join(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines) + new_line + "\n"


# -- the role matrix -----------------------------------------------------------------------------


def may(user: WebUser, action: str, ioc: str | None = None) -> bool:
    """Whether ``user`` may do ``action`` on ``ioc`` (rule 6).

    ``ioc=None`` asks about the host page itself (the status table, which then lists only the
    IOCs the user may see): every user may view it.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown web action {action!r}; one of {sorted(ACTIONS)}")
    if action not in _ROLE_ACTIONS.get(user.role, frozenset()):
        return False
    if ioc is None:
        return action == VIEW_STATUS
    return not user.iocs or ioc in user.iocs
