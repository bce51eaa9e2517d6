"""A trusted reverse proxy's user header: who the proxy says logged in, if we believe the proxy.

A site that logs its users in at a reverse proxy (Apache with Kerberos, nginx with OAuth)
can pass the user name on in a header. Anyone else can send that header too, so it means
something only on a connection from the proxy itself.

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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Union

from .addresses import peer_ip
from .errors import PyprocservError
from .webusers import CredentialsError, check_name

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


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


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def proxy_user(
    headers: Iterable[tuple[str | bytes, str | bytes]],
    peer: str,
    trusted: tuple[Network, ...],
    header: str = "X-Remote-User",
) -> str | None:
    """The user name the proxy at ``peer`` vouches for in ``header``, or None (rules 1 to 3)."""
    address = peer_ip(peer)
    if address is None or not any(address in network for network in trusted):
        return None
    wanted = header.lower()
    values = [_text(value) for name, value in headers if _text(name).lower() == wanted]
    if len(values) != 1:
        return None
    try:
        return check_name(values[0].strip(" \t"))
    except CredentialsError:
        return None
