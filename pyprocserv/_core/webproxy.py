"""A trusted reverse proxy's headers: what the browser spoke, to which name, from where, as whom.

A site that serves the console through a reverse proxy (TLS there, plain http to us) has the
proxy say in ``X-Forwarded-Proto``, ``-Host`` and ``-For`` what the browser used; a site that
logs its users in at the proxy (Apache with Kerberos, nginx with OAuth) can pass the user name
on in a header. Anyone else can send those headers too, so they mean something only on a
connection from the proxy itself.

Rules:
1. The header's user is accepted only when the peer address (the TCP peer, never an
   ``X-Forwarded-For``) is in the configured list of proxy addresses and networks.
2. The header must appear exactly once, and its value (white space around it trimmed) must be
   a valid user name (``webusers`` rule 2); anything else is no user. The header name is
   matched without regard to case; names and values may be ``str`` or latin-1 ``bytes`` (ASGI).
3. An IPv4-mapped IPv6 peer counts as its IPv4 address (``addresses`` rule 2). A UNIX socket peer is never a proxy.
4. A configured entry that is not an address or network is a :class:`ProxyConfigError`
   naming it; a network with host bits set is refused too (``10.0.0.1/8`` is a typo).
5. The user the proxy names must still be in the credentials file for the role and IOC list;
   this module only says who.
6. :func:`forwarded` reads ``X-Forwarded-Proto`` (``http`` or ``https``), ``X-Forwarded-Host``
   (``host[:port]``) and ``X-Forwarded-For`` (an IP address) from a trusted proxy only (rule 1),
   each from its last comma-separated element, the one our proxy added. A header given twice,
   or a value not of its form, is not believed (that field is None); it never raises.
   (RFC 7239's ``Forwarded`` is not read: the common proxies send the ``X-`` forms.)
7. A user header's name is an HTTP token of letters, digits and ``-``
   (:func:`check_header_name`); anything else is a :class:`ProxyConfigError`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union, final

from .addresses import peer_ip
from .errors import PyprocservError
from .webusers import CredentialsError, check_name

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
DEFAULT_USER_HEADER = "X-Remote-User"
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_FORWARDED_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")


class ProxyConfigError(PyprocservError, ValueError):
    """A trusted-proxy entry we cannot read; ``str()`` names it and the expected form."""


def trusted_proxies(specs: Iterable[str]) -> tuple[Network, ...]:
    """The configured proxy addresses and networks (rule 4)."""
    found = []
    for spec in specs:
        try:
            found.append(ipaddress.ip_network(spec.strip(), strict=True))
        except ValueError:
            raise ProxyConfigError(
                f"trusted proxy {spec!r}: give an IP address (10.0.0.5, ::1) or a network "
                "(10.0.0.0/24) with no host bits set"
            ) from None
    return tuple(found)


def check_header_name(name: str) -> str:
    """``name`` if it can name an HTTP header (rule 7), else ProxyConfigError naming it."""
    if not _HEADER_NAME.fullmatch(name):
        raise ProxyConfigError(f"proxy user header {name!r}: give a header name of letters, digits and '-', "
                               f"such as {DEFAULT_USER_HEADER}")
    return name


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _trusted(peer: str, trusted: tuple[Network, ...]) -> bool:
    address = peer_ip(peer)
    return address is not None and any(address in network for network in trusted)


def _values(headers: Iterable[tuple[str | bytes, str | bytes]], wanted: str) -> list[str]:
    wanted = wanted.lower()
    return [_text(value) for name, value in headers if _text(name).lower() == wanted]


@final
@dataclass(frozen=True)
class Forwarded:
    """What a trusted proxy says of the browser's request; None where it says nothing we believe."""

    proto: str | None = None
    host: str | None = None
    client: str | None = None


def forwarded(headers: Iterable[tuple[str | bytes, str | bytes]], peer: str,
              trusted: tuple[Network, ...]) -> Forwarded | None:
    """What the proxy at ``peer`` forwards (rule 6), or None if ``peer`` is not a trusted proxy."""
    if not _trusted(peer, trusted):
        return None
    headers = list(headers)

    def last(name: str) -> str | None:
        values = _values(headers, name)
        return values[0].rpartition(",")[2].strip(" \t") if len(values) == 1 else None

    proto = (last("X-Forwarded-Proto") or "").lower()
    host = last("X-Forwarded-Host") or ""
    client = peer_ip(last("X-Forwarded-For") or "")
    return Forwarded(proto if proto in ("http", "https") else None,
                     host if _FORWARDED_HOST.fullmatch(host) else None,
                     str(client) if client is not None else None)


def proxy_user(
    headers: Iterable[tuple[str | bytes, str | bytes]],
    peer: str,
    trusted: tuple[Network, ...],
    header: str = DEFAULT_USER_HEADER,
) -> str | None:
    """The user name the proxy at ``peer`` vouches for in ``header``, or None (rules 1 to 3)."""
    if not _trusted(peer, trusted):
        return None
    values = _values(headers, header)
    if len(values) != 1:
        return None
    try:
        return check_name(values[0].strip(" \t"))
    except CredentialsError:
        return None
