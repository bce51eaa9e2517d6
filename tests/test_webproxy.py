"""A trusted reverse proxy's user header (pyprocserv._core.webproxy).

These tests prove that the header names the user only on a connection from a configured proxy
address or network, that anyone else sending it is ignored, that a repeated, empty or invalid
value is no user, that header names match without regard to case in str and ASGI bytes form,
and that a bad proxy entry is refused naming it; and that the forwarded scheme, host and client
address are believed from a trusted proxy only, each from the element our proxy added, and
only in their own form (hypothesis feeds arbitrary headers).
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.errors import PyprocservError
from pyprocserv._core.webproxy import Forwarded, ProxyConfigError, check_header_name, forwarded, proxy_user, trusted_proxies

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
PROXIES = trusted_proxies(["10.0.0.5", "192.168.10.0/24", "::1", "fd00:1::/64"])
HEADERS = [("Host", "ioc.example.org"), ("X-Remote-User", "alice")]


@pytest.mark.parametrize("peer", ["10.0.0.5", "192.168.10.77", "::1", "fd00:1::9", "::ffff:10.0.0.5"])
def test_the_header_names_the_user_on_a_connection_from_a_trusted_proxy(peer):
    assert proxy_user(HEADERS, peer, PROXIES) == "alice"


@pytest.mark.parametrize("peer", ["10.0.0.6", "192.168.11.1", "127.0.0.1", "fd00:2::1", "", "/run/web.sock", "unix"])
def test_the_header_from_anyone_else_is_ignored(peer):
    assert proxy_user(HEADERS, peer, PROXIES) is None


def test_without_configured_proxies_no_header_is_believed():
    assert proxy_user(HEADERS, "10.0.0.5", ()) is None


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("X-Remote-User", "alice"), ("x-remote-user", "bob")],
        [("X-Remote-User", "")],
        [("X-Remote-User", "al ice")],
        [("X-Remote-User", "alice:operator")],
        [("X-Remote-User", "alice\r\nX-Other: 1")],
        [("X-Remote-User-Name", "alice")],
    ],
)
def test_a_missing_repeated_or_invalid_value_is_no_user(headers):
    assert proxy_user(headers, "10.0.0.5", PROXIES) is None


def test_header_names_match_without_case_in_str_or_asgi_bytes():
    assert proxy_user([(b"x-remote-user", b" bob@example.org ")], "10.0.0.5", PROXIES) == "bob@example.org"
    assert proxy_user([("REMOTE-USER", "carol")], "10.0.0.5", PROXIES, header="Remote-User") == "carol"


@pytest.mark.parametrize("spec", ["10.0.0.1/8", "proxy.example.org", "10.0.0.256", "", "::1/129"])
def test_a_bad_proxy_entry_is_refused_naming_it(spec):
    with pytest.raises(ProxyConfigError) as caught:
        trusted_proxies([spec])
    assert str(caught.value).startswith(f"trusted proxy {spec!r}: give an IP address")
    assert isinstance(caught.value, PyprocservError) and isinstance(caught.value, ValueError)


@SETTINGS
@given(
    st.lists(st.tuples(st.one_of(st.text(max_size=20), st.binary(max_size=20)),
                       st.one_of(st.text(max_size=40), st.binary(max_size=40))), max_size=5),
    st.one_of(st.text(max_size=40), st.sampled_from(["10.0.0.5", "::1", "192.168.10.1"])),
)
def test_any_headers_and_peer_give_a_valid_name_or_none_and_never_raise(headers, peer):
    user = proxy_user(headers, peer, PROXIES)
    assert user is None or (0 < len(user) <= 64 and user.strip() == user)


# -- the forwarded scheme, host and client ------------------------------------------------------

FORWARDED = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "iocs.example.org"),
             ("X-Forwarded-For", "203.0.113.9, 198.51.100.4")]


def test_a_trusted_proxy_says_what_the_browser_used_and_the_last_hop_counts():
    assert forwarded(FORWARDED, "::ffff:10.0.0.5", PROXIES) == Forwarded("https", "iocs.example.org", "198.51.100.4")
    assert forwarded([(b"x-forwarded-proto", b"HTTP")], "10.0.0.5", PROXIES) == Forwarded("http", None, None)
    assert forwarded([], "10.0.0.5", PROXIES) == Forwarded()


@pytest.mark.parametrize("peer", ["10.0.0.6", "127.0.0.1", "/run/web.sock", ""])
def test_anyone_else_forwards_nothing(peer):
    assert forwarded(FORWARDED, peer, PROXIES) is None


@pytest.mark.parametrize("headers", [
    [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
    [("X-Forwarded-Proto", "ftp"), ("X-Forwarded-Host", "a b"), ("X-Forwarded-For", "proxy.example.org")],
    [("X-Forwarded-Host", "evil.example/path"), ("X-Forwarded-For", "unknown")],
])
def test_a_repeated_or_malformed_forwarded_value_is_not_believed(headers):
    assert forwarded(headers, "10.0.0.5", PROXIES) == Forwarded()


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["X-Forwarded-Proto", "x-forwarded-host", "X-Forwarded-For", "Host"]),
                          st.one_of(st.text(max_size=40), st.binary(max_size=40))), max_size=6))
def test_any_forwarded_headers_give_values_of_their_form_or_none(headers):
    seen = forwarded(headers, "10.0.0.5", PROXIES)
    assert seen.proto in (None, "http", "https")
    assert seen.host is None or (seen.host and " " not in seen.host and "/" not in seen.host)
    assert seen.client is None or ipaddress.ip_address(seen.client)


@pytest.mark.parametrize("name", ["", "X Remote", "X-User:", "X-User\r\nX-Evil", "é"])
def test_a_bad_user_header_name_is_refused_naming_it(name):
    with pytest.raises(ProxyConfigError, match="proxy user header"):
        check_header_name(name)
    assert check_header_name("X-Remote-User") == "X-Remote-User"
