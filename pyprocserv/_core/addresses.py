"""Peer addresses as the access rules compare them.

Rules:
1. :func:`peer_ip` is the IP address a peer's address text names, or None when it names none
   (a UNIX socket path, ``unknown``, anything else): it never raises on what a peer sends.
2. An IPv4-mapped IPv6 address (``::ffff:10.0.0.5``, what a dual-stack socket reports for an
   IPv4 client) is its IPv4 address, so one rule written for ``10.0.0.5`` holds on both stacks.
3. An IPv6 zone (``fe80::1%eth0``) is dropped: it names our interface, not the peer.
"""

from __future__ import annotations

import ipaddress
from typing import Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def peer_ip(text: str) -> IPAddress | None:
    """The address ``text`` names (rules 1 to 3), or None."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
