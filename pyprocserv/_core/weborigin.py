"""The Origin check for the web console's WebSocket handshakes and POSTs.

A browser sends ``Origin`` with every WebSocket handshake and every POST; a page of another
site cannot forge it. The console accepts a request only from its own pages or from origins
the configuration names, so another site open in the operator's browser cannot type into an
IOC console with the operator's cookie (cross-site WebSocket hijacking) or press its buttons.

Rules:
1. Allowed iff the Origin's scheme, host and port equal the console's own address as the
   client sees it (the scheme the client used, ``https`` behind a TLS proxy, and its ``Host``
   header), or equal one of the configured origins.
2. Compared normalised: scheme and host lower-cased, the default port (80, 443) filled in, an
   IPv6 address in its compressed form. Nothing else is forgiven: no path, user info, query
   or white space, and ``example.org.`` is not ``example.org``.
3. A missing Origin, ``null`` (sandboxed frames, file pages), or anything that does not parse is
   refused; so is a missing or malformed Host. The check never raises on what a peer sends.
4. A configured origin that does not parse is an :class:`OriginError` naming it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import final

from .errors import PyprocservError

DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_CHARS = 1024
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.DOTALL)


class OriginError(PyprocservError, ValueError):
    """A configured origin we cannot read; ``str()`` names it and the expected form."""


@final
@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def _host_port(text: str, scheme: str) -> tuple[str, int] | None:
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        return None
    host = match["host"].lower()
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    elif not host.strip(".") or ".." in host:
        return None
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        return None
    return host, port


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` normalised (rule 2), or None if it is not an http(s) origin."""
    if len(text) > _MAX_CHARS:
        return None
    match = _ORIGIN.fullmatch(text)
    if match is None or match["scheme"].lower() not in DEFAULT_PORTS:
        return None
    scheme = match["scheme"].lower()
    parts = _host_port(match["rest"], scheme)
    return None if parts is None else Origin(scheme, *parts)


def allowed_origins(specs: Iterable[str]) -> frozenset[Origin]:
    """The configured extra origins, each checked (rule 4)."""
    found = set()
    for spec in specs:
        origin = parse_origin(spec)
        if origin is None:
            raise OriginError(
                f"allowed origin {spec!r}: write it as a browser sends it, "
                "http://HOST[:PORT] or https://HOST[:PORT], without a path"
            )
        found.add(origin)
    return frozenset(found)


def origin_allowed(
    origin: str | None, *, host: str | None, client_scheme: str, allowed: frozenset[Origin] = frozenset()
) -> bool:
    """Whether a request with this ``Origin`` and ``Host`` comes from a page we trust (rule 1)."""
    if origin is None:
        return False
    seen = parse_origin(origin)
    if seen is None:
        return False
    if seen in allowed:
        return True
    if host is None or client_scheme not in DEFAULT_PORTS or len(host) > _MAX_CHARS:
        return False
    own = _host_port(host, client_scheme)
    return own is not None and seen == Origin(client_scheme, *own)
