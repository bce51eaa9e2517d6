"""Endpoint specs: what ``-P``, the compat endpoint and ``-l`` accept, parsed without I/O.

Accepted (procServ 2.7.0 plus IPv6): ``PORT``, ``A.B.C.D:PORT``, ``[IPv6]:PORT``, ``unix:PATH``,
``unix:USER:GROUP:PERM:PATH`` (each of the first three may be empty) and ``unix:@NAME``
(abstract). Port 0 asks the kernel for a free port. Errors carry procServ's message texts.
User and group names are checked when the socket is bound, not here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Union

from .errors import PyprocservError

UNIX_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux


class EndpointError(PyprocservError, ValueError):
    """An endpoint spec that cannot be used; str() is the message for the user."""


@dataclass(frozen=True)
class TcpEndpoint:
    """A TCP listener. ``host`` None: loopback or every interface, by the endpoint's role."""

    port: int
    host: str | None = None

    @property
    def ipv6(self) -> bool:
        return self.host is not None and ":" in self.host


@dataclass(frozen=True)
class UnixEndpoint:
    """A UNIX socket; ``path`` starting with ``@`` names an abstract socket (no file)."""

    path: str
    user: str = ""
    group: str = ""
    mode: int | None = None  # None: procServ's 0666

    @property
    def abstract(self) -> bool:
        return self.path.startswith("@")


Endpoint = Union[TcpEndpoint, UnixEndpoint]

_PORT = re.compile(r"\s*(\d+)\s*")
_IPV4 = re.compile(r"\s*(\d+\s*\.\s*\d+\s*\.\s*\d+\s*\.\s*\d+)\s*:\s*(\d+)\s*")
_IPV6 = re.compile(r"\s*\[([0-9A-Fa-f:.%\w]+)\]\s*:\s*(\d+)\s*")


def _port(text: str, role: str) -> int:
    port = int(text)
    if port > 0xFFFF:
        raise EndpointError(f"invalid {role} port {port} (must be <65536)")
    return port


def parse_endpoint(spec: str, role: str = "control") -> Endpoint:
    """Parse one endpoint spec. ``role`` ('control' or 'log') only shapes error messages."""
    if match := _PORT.fullmatch(spec):
        return TcpEndpoint(_port(match.group(1), role))
    if match := _IPV4.fullmatch(spec):
        address = re.sub(r"\s", "", match.group(1))
        try:
            host = str(ipaddress.IPv4Address(address))
        except ValueError:
            raise EndpointError(f"Invalid socket spec '{spec}'") from None
        return TcpEndpoint(_port(match.group(2), role), host)
    if match := _IPV6.fullmatch(spec):
        try:
            host = str(ipaddress.IPv6Address(match.group(1)))
        except ValueError:
            raise EndpointError(f"Invalid socket spec '{spec}'") from None
        return TcpEndpoint(_port(match.group(2), role), host)
    if spec.startswith("unix:"):
        return _parse_unix(spec[5:])
    raise EndpointError(f"Invalid socket spec '{spec}'")


def _parse_unix(rest: str) -> UnixEndpoint:
    user = group = ""
    mode: int | None = None
    if ":" in rest:
        parts = rest.split(":", 3)
        if len(parts) < 4:
            raise EndpointError(f"Unix path+permissions spec unparsable '{rest}'")
        user, group, perm, rest = parts
        if perm:
            if not re.fullmatch(r"[0-7]{1,4}", perm):
                raise EndpointError(
                    f"Invalid permissions '{perm}' in unix socket spec (octal, e.g. 0660)"
                )
            mode = int(perm, 8)
    if not rest:
        raise EndpointError("expected unix socket path spec.")
    if len(os.fsencode(rest)) >= UNIX_PATH_MAX:
        raise EndpointError(f"Unix path is too long (must be <{UNIX_PATH_MAX})")
    return UnixEndpoint(rest, user, group, mode)


def describe(endpoint: Endpoint) -> str:
    """The endpoint as a spec again (for messages)."""
    if isinstance(endpoint, UnixEndpoint):
        prefix = ""
        if endpoint.user or endpoint.group or endpoint.mode is not None or ":" in endpoint.path:
            mode = "" if endpoint.mode is None else "%04o" % endpoint.mode
            prefix = f"{endpoint.user}:{endpoint.group}:{mode}:"
        return f"unix:{prefix}{endpoint.path}"
    if endpoint.host is None:
        return str(endpoint.port)
    host = f"[{endpoint.host}]" if endpoint.ipv6 else endpoint.host
    return f"{host}:{endpoint.port}"
