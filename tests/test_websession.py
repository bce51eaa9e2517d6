"""The web console's session token, CSRF token and cookie (pyprocserv._core.websession).

These tests prove that a token this key signed gives back its user and role until it expires
and not a second longer, that a token changed in any character, signed with another key, or
not a token at all is refused without an exception (hypothesis feeds arbitrary text), that the
CSRF token belongs to one session only, and that the cookie is HttpOnly, SameSite=Strict,
scoped to the base path and Secure everywhere but plain http on loopback, and that a revoked
session stays refused until it expires however many others are revoked after it (the set's
bound logs more out, never lets one back in).
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.websession import (
    CLOCK_SKEW,
    RevokedSessions,
    Session,
    check_csrf,
    cookie_rules,
    csrf_token,
    issue_session,
    new_key,
    verify_session,
)

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_800_000_000.0
TOKEN = issue_session(KEY, "alice", "operator", NOW, 3600)


# -- session tokens ------------------------------------------------------------------------------


def test_a_token_gives_back_its_user_and_role_until_it_expires():
    session = verify_session(KEY, TOKEN, NOW + 10)
    assert isinstance(session, Session)
    assert (session.user, session.role, session.issued_at, session.expires_at) == (
        "alice", "operator", int(NOW), int(NOW) + 3600,
    )
    assert verify_session(KEY, TOKEN, NOW + 3599) is not None
    assert verify_session(KEY, TOKEN, NOW + 3600) is None


def test_a_token_from_the_future_beyond_the_clock_skew_is_refused():
    assert verify_session(KEY, TOKEN, NOW - CLOCK_SKEW) is not None
    assert verify_session(KEY, TOKEN, NOW - CLOCK_SKEW - 1) is None


def test_a_token_signed_with_another_key_is_refused():
    assert verify_session(OTHER_KEY, TOKEN, NOW) is None


def test_two_logins_in_the_same_second_are_two_sessions():
    again = issue_session(KEY, "alice", "operator", NOW, 3600)
    assert again != TOKEN
    assert csrf_token(KEY, again) != csrf_token(KEY, TOKEN)


def _forge(payload) -> str:
    """A token whose payload we chose, carrying the real token's signature."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return body + "." + TOKEN.split(".")[1]


def test_a_payload_changed_to_another_user_role_or_expiry_is_refused():
    body = json.loads(base64.urlsafe_b64decode(TOKEN.split(".")[0] + "=="))
    assert body[1:3] == ["alice", "operator"]
    for index, value in ((1, "root"), (2, "admin"), (4, body[4] + 10**6)):
        changed = list(body)
        changed[index] = value
        assert verify_session(KEY, _forge(changed), NOW) is None


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_a_token_changed_in_any_one_character_is_refused():
    """Even in the unused low bits of the last character, which decode to the same bytes."""
    for position in range(len(TOKEN)):
        for replacement in BASE64URL + ".=":
            if replacement != TOKEN[position]:
                changed = TOKEN[:position] + replacement + TOKEN[position + 1:]
                assert verify_session(KEY, changed, NOW) is None, changed


@SETTINGS
@given(st.one_of(st.text(max_size=2000), st.text(alphabet="ABCabc0123-_.=", max_size=200)))
def test_any_text_as_a_token_is_refused_without_an_exception(text):
    assert verify_session(KEY, text, NOW) is None


def test_a_short_key_is_refused_with_a_message_saying_what_to_use():
    with pytest.raises(ValueError, match="32 random bytes"):
        issue_session(b"short", "alice", "viewer", NOW, 60)
    assert len(new_key()) == 32 and new_key() != new_key()


# -- CSRF ----------------------------------------------------------------------------------------


def test_the_csrf_token_matches_its_own_session_only():
    token = csrf_token(KEY, TOKEN)
    other_session = issue_session(KEY, "bob", "operator", NOW, 3600)
    assert check_csrf(KEY, TOKEN, token)
    assert not check_csrf(KEY, other_session, token)
    assert not check_csrf(OTHER_KEY, TOKEN, token)
    assert not check_csrf(KEY, TOKEN, None)
    assert not check_csrf(KEY, TOKEN, "")
    assert not check_csrf(KEY, TOKEN, token[:-1])


def test_the_csrf_token_is_not_the_session_token_nor_shows_it():
    token = csrf_token(KEY, TOKEN)
    assert token != TOKEN and TOKEN.split(".")[1] not in token


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_as_a_csrf_token_is_refused_without_an_exception(text):
    assert not check_csrf(KEY, TOKEN, text)


# -- the cookie ----------------------------------------------------------------------------------


def _attributes(header: str) -> set[str]:
    return {part.strip() for part in header.split(";")[1:]}


def test_the_cookie_over_https_is_secure_httponly_strict_and_scoped_to_the_base_path():
    rules = cookie_rules("/procserv", client_scheme="https", loopback=False)
    header = rules.set_cookie(TOKEN, 3600)
    assert header.startswith(f"__Secure-pyprocserv-session={TOKEN};")
    assert _attributes(header) == {"Path=/procserv", "HttpOnly", "SameSite=Strict", "Secure", "Max-Age=3600"}


def test_a_secure_cookie_at_the_root_path_is_a_host_cookie():
    assert cookie_rules("/", client_scheme="https", loopback=True).name == "__Host-pyprocserv-session"


def test_plain_http_on_loopback_drops_secure_only():
    rules = cookie_rules("/", client_scheme="http", loopback=True)
    header = rules.set_cookie(TOKEN, 60)
    assert rules.name == "pyprocserv-session" and not rules.secure
    assert _attributes(header) == {"Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=60"}


@pytest.mark.parametrize("path, scheme, loopback, name", [
    ("/", "http", True, "pyprocserv-session-8443"),
    ("/", "https", False, "__Host-pyprocserv-session-8443"),
    ("/procserv", "https", False, "__Secure-pyprocserv-session-8443"),
])
def test_the_cookie_is_named_after_the_servers_port_as_cookies_ignore_ports(path, scheme, loopback, name):
    rules = cookie_rules(path, client_scheme=scheme, loopback=loopback, port=8443)
    assert rules.name == name and rules.set_cookie(TOKEN, 60).startswith(f"{name}={TOKEN};")
    assert cookie_rules(path, client_scheme=scheme, loopback=loopback, port=8444).name != name


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_a_port_no_server_listens_on_is_refused_naming_it(port):
    with pytest.raises(ValueError, match="web console port"):
        cookie_rules("/", client_scheme="https", loopback=False, port=port)


def test_plain_http_elsewhere_keeps_secure():
    assert cookie_rules("/", client_scheme="http", loopback=False).secure


def test_logout_clears_the_cookie_with_the_same_name_and_path():
    rules = cookie_rules("/a", client_scheme="https", loopback=False)
    header = rules.clear_cookie()
    assert header.startswith(f"{rules.name}=;")
    assert {"Path=/a", "Max-Age=0", "Secure"} <= _attributes(header)


@pytest.mark.parametrize("path", ["", "procserv", "/a;b", "/a b", "/a,b", '/a"b', "/a\\b", "/ä", "/a\nb"])
def test_a_base_path_a_cookie_cannot_carry_is_refused_naming_it(path):
    with pytest.raises(ValueError, match="web base path"):
        cookie_rules(path, client_scheme="https", loopback=False)


def test_a_cookie_value_that_is_not_a_token_is_refused():
    rules = cookie_rules("/", client_scheme="https", loopback=False)
    with pytest.raises(ValueError):
        rules.set_cookie("x; Domain=evil.example", 60)


# -- logouts -------------------------------------------------------------------------------------


def _session(user: str, issued: float, lifetime: float = 3600) -> Session:
    session = verify_session(KEY, issue_session(KEY, user, "operator", issued, lifetime), issued)
    assert session is not None
    return session


def test_a_revoked_session_stays_revoked_until_it_expires_and_is_then_forgotten():
    revoked = RevokedSessions()
    alice, bob = _session("alice", NOW, 7200), _session("bob", NOW)
    revoked.revoke(alice, NOW + 10)
    assert revoked.revoked(alice) and not revoked.revoked(bob)
    revoked.revoke(bob, NOW + 3600)  # bob's own expiry: nothing to keep
    assert len(revoked) == 1
    revoked.revoke(_session("carol", NOW + 7200), NOW + 7200)
    assert len(revoked) == 1  # alice's entry went with her expiry


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 7200), st.integers(1, 7200)), min_size=1, max_size=60),
       st.integers(1, 8))
def test_at_the_bound_no_revoked_session_comes_back(logins, bound):
    revoked = RevokedSessions(max_entries=bound)
    now = NOW
    sessions = []
    for offset, lifetime in logins:
        session = _session("alice", NOW + offset, lifetime)
        now = max(now, NOW + offset)
        revoked.revoke(session, now)
        sessions.append(session)
        assert len(revoked) <= bound
        assert all(revoked.revoked(s) for s in sessions if s.expires_at > now)


def test_at_the_bound_the_earliest_issued_go_first_and_later_logins_stay_in():
    revoked = RevokedSessions(max_entries=2)
    old, mid, new = _session("a", NOW), _session("b", NOW + 10), _session("c", NOW + 20)
    later = _session("d", NOW + 30)
    for session in (old, mid, new):
        revoked.revoke(session, NOW + 25)
    assert all(revoked.revoked(s) for s in (old, mid, new))
    assert revoked.revoked(_session("e", NOW))  # issued with the dropped one: logged out too
    assert not revoked.revoked(later)
