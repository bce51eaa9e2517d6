"""Endpoint specs (pyprocserv._core.endpoints), parsed without a socket.

These tests prove that every form procServ accepts for ``-P``, the compat endpoint and ``-l``
parses (behaviour §1.4: ``PORT`` with whitespace, ``A.B.C.D:PORT``, ``unix:PATH``,
``unix:USER:GROUP:PERM:PATH`` with empty parts, ``unix:@NAME``), plus pyprocserv's
``[IPv6]:PORT``; that every error carries procServ's message text; that arbitrary text (argv
is decoded with surrogateescape, so it may hold lone surrogates) never raises anything but
:class:`EndpointError`; and that :func:`describe` gives a spec that parses back to the same
endpoint.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.endpoints import (
    UNIX_PATH_MAX,
    EndpointError,
    TcpEndpoint,
    UnixEndpoint,
    describe,
    parse_endpoint,
)

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


# -- accepted forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "port"),
    [("20000", 20000), (" 38483 ", 38483), ("\t20000\n", 20000), ("0", 0), ("65535", 65535), ("00080", 80)],
)
def test_plain_port_with_optional_whitespace_is_tcp_on_the_roles_default_host(spec, port):
    assert parse_endpoint(spec) == TcpEndpoint(port)
    assert parse_endpoint(spec).host is None


@pytest.mark.parametrize(
    ("spec", "host", "port"),
    [
        ("127.0.0.1:20000", "127.0.0.1", 20000),
        ("10.1.2.3:38482", "10.1.2.3", 38482),
        ("0.0.0.0:0", "0.0.0.0", 0),
        (" 192.168.1.20:5064 ", "192.168.1.20", 5064),
        ("1 . 2 . 3 . 4 : 5", "1.2.3.4", 5),  # sscanf's " . " and " : " skip whitespace
    ],
)
def test_numeric_ipv4_with_port_is_tcp_on_that_address(spec, host, port):
    endpoint = parse_endpoint(spec)
    assert endpoint == TcpEndpoint(port, host)
    assert not endpoint.ipv6


@pytest.mark.parametrize(
    ("spec", "host", "port"),
    [
        ("[::1]:20000", "::1", 20000),
        ("[::]:0", "::", 0),
        ("[2001:db8::1]:5064", "2001:db8::1", 5064),
        (" [::1] : 20000 ", "::1", 20000),
    ],
)
def test_bracketed_ipv6_with_port_is_tcp_on_that_address(spec, host, port):
    endpoint = parse_endpoint(spec)
    assert endpoint == TcpEndpoint(port, host)
    assert endpoint.ipv6


def test_unix_path_is_a_filesystem_socket_with_procservs_defaults():
    endpoint = parse_endpoint("unix:/tmp/demo/ctl.sock")
    assert endpoint == UnixEndpoint("/tmp/demo/ctl.sock")
    assert (endpoint.user, endpoint.group, endpoint.mode) == ("", "", None)
    assert not endpoint.abstract


def test_unix_relative_path_is_kept_as_given():
    assert parse_endpoint("unix:ctl.sock") == UnixEndpoint("ctl.sock")


def test_unix_at_name_is_an_abstract_socket():
    endpoint = parse_endpoint("unix:@procserv-research-log")
    assert endpoint == UnixEndpoint("@procserv-research-log")
    assert endpoint.abstract


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("unix:ioc:epics:0660:/run/ioc.sock", UnixEndpoint("/run/ioc.sock", "ioc", "epics", 0o660)),
        ("unix::root:0640:/tmp/x.sock", UnixEndpoint("/tmp/x.sock", "", "root", 0o640)),
        ("unix:ioc:::/tmp/x.sock", UnixEndpoint("/tmp/x.sock", "ioc", "", None)),
        ("unix:::0600:/tmp/x.sock", UnixEndpoint("/tmp/x.sock", "", "", 0o600)),
        ("unix::::/tmp/x.sock", UnixEndpoint("/tmp/x.sock", "", "", None)),
        ("unix:::7:/tmp/x.sock", UnixEndpoint("/tmp/x.sock", "", "", 0o7)),
        ("unix:u:g:0600:/tmp/a:b:c", UnixEndpoint("/tmp/a:b:c", "u", "g", 0o600)),
        ("unix:::0600:@abstract", UnixEndpoint("@abstract", "", "", 0o600)),
    ],
)
def test_unix_user_group_perm_path_with_empty_parts(spec, expected):
    assert parse_endpoint(spec) == expected


def test_unix_path_after_the_third_colon_may_be_a_lone_colon():
    assert parse_endpoint("unix:::::") == UnixEndpoint(":")


def test_unix_path_of_107_bytes_fits_sun_path():
    path = "/" + "p" * 106
    assert parse_endpoint("unix:" + path) == UnixEndpoint(path)


def test_unix_path_from_a_non_utf8_argv_is_accepted():
    # argv is decoded with surrogateescape: a Latin-1 file name arrives with a lone surrogate.
    path = os.fsdecode(b"/tmp/caf\xe9.sock")
    endpoint = parse_endpoint("unix:" + path)
    assert endpoint == UnixEndpoint(path)


def test_unix_path_length_is_counted_in_bytes():
    path = "/" + "\u00e9" * 54  # 1 + 108 bytes in UTF-8, only 55 characters
    with pytest.raises(EndpointError) as error:
        parse_endpoint("unix:" + path)
    assert str(error.value) == "Unix path is too long (must be <108)"


# -- errors, with procServ's texts ------------------------------------------------------------


def _error(spec: str, role: str = "control") -> str:
    with pytest.raises(EndpointError) as error:
        parse_endpoint(spec, role)
    return str(error.value)


@pytest.mark.parametrize(
    "spec",
    ["", "   ", "abc", "localhost:20000", "20000x", "0x10", "tcp:20000", "1.2.3:4", "1.2.3.4", "1.2.3.4:", "unixfoo"],
)
def test_unusable_spec_is_an_invalid_socket_spec(spec):
    assert _error(spec) == f"Invalid socket spec '{spec}'"


def test_bracketed_non_address_is_an_invalid_socket_spec():
    assert _error("[nothex]:20") == "Invalid socket spec '[nothex]:20'"


def test_port_above_65535_is_an_invalid_control_port():
    assert _error("65536") == "invalid control port 65536 (must be <65536)"
    assert _error("99999") == "invalid control port 99999 (must be <65536)"


def test_ipv4_port_above_65535_is_an_invalid_control_port():
    assert _error("127.0.0.1:70000") == "invalid control port 70000 (must be <65536)"


def test_ipv6_port_above_65535_is_an_invalid_control_port():
    assert _error("[::1]:70000") == "invalid control port 70000 (must be <65536)"


def test_invalid_log_port_names_the_port_and_the_limit():
    message = _error("70000", role="log")
    assert message.startswith("invalid ") and message.endswith(" port 70000 (must be <65536)")


@pytest.mark.parametrize("rest", ["a:b", "a:b:c", ":", "::", "/tmp/x:y"])
def test_unix_spec_with_fewer_than_three_colons_is_unparsable(rest):
    assert _error("unix:" + rest) == f"Unix path+permissions spec unparsable '{rest}'"


@pytest.mark.parametrize("spec", ["unix:", "unix::::", "unix:u:g:0600:"])
def test_unix_spec_without_a_path_expects_one(spec):
    assert _error(spec) == "expected unix socket path spec."


def test_unix_path_of_108_bytes_is_too_long():
    assert _error("unix:/" + "p" * 107) == "Unix path is too long (must be <108)"
    assert UNIX_PATH_MAX == 108


def test_abstract_name_counts_the_at_sign_towards_the_limit():
    assert parse_endpoint("unix:@" + "n" * 106) == UnixEndpoint("@" + "n" * 106)
    assert _error("unix:@" + "n" * 107) == "Unix path is too long (must be <108)"


def test_unix_path_after_permissions_is_limited_too():
    assert _error("unix:u:g:0600:/" + "p" * 107) == "Unix path is too long (must be <108)"


def test_endpoint_error_is_a_value_error():
    assert issubclass(EndpointError, ValueError)


# -- properties --------------------------------------------------------------------------------

_argv_text = st.binary(max_size=40).map(os.fsdecode)  # what argv can hold
_prefixed = st.tuples(
    st.sampled_from(["", "unix:", "unix:@", "unix:::", "[", "[::1]:", "1.2.3.4:", " ", "0"]),
    st.one_of(st.text(max_size=30), _argv_text, st.from_regex(r"[0-9 .:\[\]a-f]{0,20}", fullmatch=True)),
).map("".join)


_unix_argv = st.tuples(
    st.sampled_from(["unix:", "unix:@", "unix:/tmp/", "unix::::/", "unix:u:g:0600:"]), _argv_text
).map("".join)


@SETTINGS
@given(st.one_of(st.text(max_size=60), _argv_text, _prefixed, _unix_argv), st.sampled_from(["control", "log"]))
def test_arbitrary_text_parses_or_raises_only_endpoint_error(spec, role):
    try:
        endpoint = parse_endpoint(spec, role)
    except EndpointError as error:
        assert str(error)
    else:
        assert isinstance(endpoint, (TcpEndpoint, UnixEndpoint))


_user = st.from_regex(r"[a-z_][a-z0-9_-]{0,8}", fullmatch=True) | st.just("")
_path = st.one_of(
    st.from_regex(r"/[A-Za-z0-9._/-]{0,60}", fullmatch=True),
    st.from_regex(r"@[A-Za-z0-9._/:-]{0,60}", fullmatch=True),
    # colons in the path itself (procServ takes everything after the third colon)
    st.from_regex(r"[/@][A-Za-z0-9._-]{0,20}:[A-Za-z0-9._:-]{0,20}", fullmatch=True),
)
_unix_endpoints = st.builds(
    UnixEndpoint,
    path=_path,
    user=_user,
    group=_user,
    mode=st.none() | st.integers(0, 0o7777),
)
_tcp_endpoints = st.builds(
    TcpEndpoint,
    port=st.integers(0, 65535),
    host=st.none() | st.ip_addresses().map(str),
)


@SETTINGS
@given(st.one_of(_unix_endpoints, _tcp_endpoints))
def test_describe_round_trips_through_parse_endpoint(endpoint):
    assert parse_endpoint(describe(endpoint)) == endpoint


_space = st.sampled_from(["", " ", "\t", "  "])
_valid_specs = st.one_of(
    st.builds(lambda a, port, b: f"{a}{port}{b}", _space, st.integers(0, 65535), _space),
    st.builds(
        lambda a, ip, port: f"{a}{ip}:{port}", _space, st.ip_addresses(v=4).map(str), st.integers(0, 65535)
    ),
    st.builds(lambda ip, port: f"[{ip}]:{port}", st.ip_addresses(v=6).map(str), st.integers(0, 65535)),
    _path.map(lambda path: "unix:" + path).filter(lambda spec: ":" not in spec[5:]),
    _path.map(lambda path: "unix::::" + path),
    st.builds(
        lambda user, group, perm, path: f"unix:{user}:{group}:{perm}:{path}",
        _user,
        _user,
        st.sampled_from(["", "0", "600", "0660", "0777", "7777"]),
        _path,
    ),
)


@SETTINGS
@given(_valid_specs)
def test_describe_of_any_parsed_spec_parses_to_the_same_endpoint(spec):
    endpoint = parse_endpoint(spec)
    assert parse_endpoint(describe(endpoint)) == endpoint


@pytest.mark.parametrize(
    "spec",
    ["20000", "127.0.0.1:20000", "[::1]:20000", "unix:/tmp/x.sock", "unix:@name", "unix:u:g:0660:/tmp/x.sock"],
)
def test_describe_gives_back_the_canonical_spec(spec):
    assert describe(parse_endpoint(spec)) == spec


def test_describe_of_a_unix_path_containing_colons_parses_back():
    endpoint = parse_endpoint("unix::::/tmp/a:b")
    assert endpoint == UnixEndpoint("/tmp/a:b")
    assert parse_endpoint(describe(endpoint)) == endpoint
