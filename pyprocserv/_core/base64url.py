"""Unpadded base64url (RFC 4648, section 5) for tokens and hashes, canonical only.

Rule: a value has exactly one text. :func:`decode` refuses padding, other alphabets, and a
last character whose unused low bits are set (which would decode to the same bytes as its
canonical twin), so a token or hash changed in any character never decodes to the same value.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode(text: str) -> bytes:
    """The bytes of canonical unpadded base64url ``text``; ValueError for anything else."""
    if not _ALPHABET.fullmatch(text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if encode(data) != text:
        raise ValueError("not canonical base64url")
    return data
