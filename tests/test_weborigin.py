"""The Origin check for WebSocket handshakes and POSTs (pyprocserv._core.weborigin).

These tests prove that the console's own pages pass (default ports filled in, case and IPv6
spelling normalised, https behind a TLS proxy), that another site, another port, another
scheme, a look-alike host, ``null`` and a missing Origin or Host are refused, that configured
origins pass and a bad one is refused naming it, and that no header text makes the check raise.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.errors import PyprocservError
from pyprocserv._core.weborigin import Origin, OriginError, allowed_origins, origin_allowed, parse_origin

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", "http"),
        ("https://ioc.example.org", "ioc.example.org", "https"),
        ("https://ioc.example.org", "ioc.example.org:443", "https"),
        ("https://ioc.example.org:443", "IOC.Example.ORG", "https"),
        ("HTTP://LOCALHOST:80", "localhost", "http"),
        ("http://[::1]:8080", "[0:0:0:0:0:0:0:1]:8080", "http"),
        ("https://console.site", "console.site", "https"),  # TLS proxy in front: the client's scheme
    ],
)
def test_the_consoles_own_pages_are_allowed(origin, host, scheme):
    assert origin_allowed(origin, host=host, client_scheme=scheme)


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("https://evil.example", "ioc.example.org", "https"),
        ("https://ioc.example.org.evil.example", "ioc.example.org", "https"),
        ("https://ioc.example.org:8443", "ioc.example.org", "https"),
        ("http://ioc.example.org", "ioc.example.org", "https"),  # a plain-http page on the same host
        ("https://ioc.example.org.", "ioc.example.org", "https"),
        ("https://ioc.example.org/", "ioc.example.org", "https"),
        ("https://user@ioc.example.org", "ioc.example.org", "https"),
        ("https://ioc.example.org ", "ioc.example.org", "https"),
        ("null", "ioc.example.org", "https"),
        ("file://", "ioc.example.org", "https"),
        (None, "ioc.example.org", "https"),
        ("https://ioc.example.org", None, "https"),
        ("https://ioc.example.org", "", "https"),
        ("https://ioc.example.org", "ioc.example.org:", "https"),
        ("http://127.0.0.1:99999", "127.0.0.1:99999", "http"),
        ("http://127.0.0.1:0", "127.0.0.1:0", "http"),
        ("ws://127.0.0.1:8080", "127.0.0.1:8080", "http"),
        ("http://[::1]:8080", "[::1]:8080", "ws"),
    ],
)
def test_other_sites_ports_schemes_and_malformed_headers_are_refused(origin, host, scheme):
    assert not origin_allowed(origin, host=host, client_scheme=scheme)


def test_a_configured_origin_is_allowed_whatever_the_host():
    allowed = allowed_origins(["https://ops.example.org", "http://[::1]:3000"])
    assert origin_allowed("https://ops.example.org:443", host="ioc.example.org", client_scheme="https", allowed=allowed)
    assert origin_allowed("http://[0::1]:3000", host=None, client_scheme="https", allowed=allowed)
    assert not origin_allowed("https://ops.example.org:8443", host="x", client_scheme="https", allowed=allowed)


@pytest.mark.parametrize("spec", ["ops.example.org", "https://ops.example.org/console", "ftp://x", "", "*"])
def test_a_configured_origin_that_does_not_parse_is_refused_naming_it(spec):
    with pytest.raises(OriginError) as caught:
        allowed_origins([spec])
    assert str(caught.value).startswith(f"allowed origin {spec!r}: write it as a browser sends it")
    assert issubclass(OriginError, PyprocservError) and issubclass(OriginError, ValueError)


def test_an_origin_normalises_to_scheme_host_and_port():
    assert parse_origin("HTTPS://[::FFFF:1.2.3.4]") == Origin("https", "[::ffff:102:304]", 443)
    assert str(parse_origin("http://a.b")) == "http://a.b:80"


@SETTINGS
@given(
    st.one_of(st.none(), st.text(max_size=100), st.text(max_size=30).map(lambda t: "http://" + t)),
    st.one_of(st.none(), st.text(max_size=100)),
    st.sampled_from(["http", "https", "", "x"]),
)
def test_any_header_text_gives_a_yes_or_no_and_never_raises(origin, host, scheme):
    assert origin_allowed(origin, host=host, client_scheme=scheme) in (True, False)


hosts = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)


@SETTINGS
@given(hosts, st.integers(1, 65535), st.sampled_from(["http", "https"]))
def test_a_page_served_from_a_host_and_port_may_call_back_exactly_there(host, port, scheme):
    assert origin_allowed(f"{scheme}://{host}:{port}", host=f"{host}:{port}", client_scheme=scheme)
    other = port + 1 if port < 65535 else port - 1
    assert not origin_allowed(f"{scheme}://{host}:{other}", host=f"{host}:{port}", client_scheme=scheme)
