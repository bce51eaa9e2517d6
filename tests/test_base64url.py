"""Canonical unpadded base64url (pyprocserv._core.base64url): every value has one text only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core import base64url

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)


@SETTINGS
@given(st.binary(max_size=100))
def test_encode_then_decode_gives_the_bytes_back_without_padding(data):
    text = base64url.encode(data)
    assert "=" not in text and base64url.decode(text) == data


@SETTINGS
@given(st.text(max_size=60))
def test_any_text_decodes_only_if_it_is_the_canonical_text_of_its_bytes(text):
    try:
        data = base64url.decode(text)
    except ValueError:
        return
    assert base64url.encode(data) == text


@pytest.mark.parametrize("text", ["QQ==", "QR", "Q", "a+b/", "ab cd", "é"])
def test_padding_unused_bits_other_alphabets_and_bad_lengths_are_refused(text):
    with pytest.raises(ValueError):
        base64url.decode(text)
