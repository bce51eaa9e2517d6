"""The web console's credentials file (pyprocserv._core.webusers), without a file or a server.

These tests prove that a password verifies against its own hash and nothing else, that the hash
carries its parameters and refuses ones that would make a login take minutes, that every bad
line is refused with an error naming the file, the line and the fix, that no text whatever makes
the parser raise anything but :class:`CredentialsError`, that a file round-trips and that adding
or replacing a user keeps every other line, and the role matrix with per-IOC lists. Hashes are
made with a tiny N so the suite stays fast; the default's cost is checked once.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core import webusers
from pyprocserv._core.errors import PyprocservError
from pyprocserv._core.webusers import (
    ACTIONS,
    DEFAULT_N,
    OPERATOR,
    VIEWER,
    CredentialsError,
    WebUser,
    authenticate,
    format_user,
    hash_password,
    may,
    parse,
    serialize,
    set_user,
    verify_password,
)

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
FAST = {"n": 16, "r": 1, "p": 1}
HASH = hash_password("secret", **FAST)
OTHER_HASH = hash_password("other", **FAST)


# -- passwords -----------------------------------------------------------------------------------


def test_a_password_verifies_against_its_own_hash_only():
    assert verify_password(HASH, "secret")
    assert not verify_password(HASH, "Secret")
    assert not verify_password(HASH, "secret ")
    assert not verify_password(OTHER_HASH, "secret")


def test_two_hashes_of_one_password_differ_by_their_salt():
    again = hash_password("secret", **FAST)
    assert again != HASH and verify_password(again, "secret")


def test_the_default_hash_is_scrypt_with_its_parameters_in_the_text():
    made = hash_password("secret")
    scheme, n, r, p, salt, key = made.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", DEFAULT_N, 8, 1)
    assert verify_password(made, "secret")


def test_a_hash_made_with_other_parameters_still_verifies():
    assert verify_password(hash_password("pw", n=64, r=2, p=2), "pw")


@pytest.mark.parametrize(
    "bad",
    [
        "", "secret", "scrypt$16$1$1$c2FsdHNhbHQ",
        "bcrypt$16$1$1$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$17$1$1$c2FsdHNhbHQ$" + "A" * 43,  # N not a power of two
        "scrypt$2097152$1$1$c2FsdHNhbHQ$" + "A" * 43,  # N above 2**20: a login of minutes
        "scrypt$1048576$8$1$c2FsdHNhbHQ$" + "A" * 43,  # 1 GiB of memory
        "scrypt$16$1$99$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$016$1$1$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$16$1$1$c2Fsd=$" + "A" * 43,
        "scrypt$16$1$1$c2FsdHNhbHQ$AAAA",  # key too short
    ],
)
def test_a_malformed_or_too_costly_hash_verifies_nothing_and_parses_as_an_error(bad):
    assert not verify_password(bad, "secret")
    with pytest.raises(CredentialsError):
        parse(f"alice:viewer:{bad}\n")


def test_an_empty_or_huge_password_is_refused_when_hashing():
    with pytest.raises(CredentialsError, match="empty"):
        hash_password("", **FAST)
    with pytest.raises(CredentialsError, match="longer"):
        hash_password("x" * 5000, **FAST)


def test_a_password_with_non_ascii_or_lone_surrogates_round_trips():
    for password in ("pässwörd", "\udcff\x00x"):
        assert verify_password(hash_password(password, **FAST), password)


def test_authenticate_returns_the_user_only_for_the_right_name_and_password():
    users = parse(f"alice:operator:{HASH}\n")
    assert authenticate(users, "alice", "secret") == users["alice"]
    assert authenticate(users, "alice", "wrong") is None
    assert authenticate(users, "mallory", "secret") is None


# -- parsing -------------------------------------------------------------------------------------


def test_a_file_with_comments_roles_and_ioc_lists_parses_in_order():
    text = (
        "# web console users\n"
        "\n"
        f"alice:operator:{HASH}\n"
        f"   # an indented comment\r\n"
        f"bob@example.org:viewer:{OTHER_HASH}:ioc-a,ioc_b\r\n"
        f"carol.x+y:viewer:{HASH}"
    )
    users = parse(text)
    assert list(users) == ["alice", "bob@example.org", "carol.x+y"]
    assert users["alice"] == WebUser("alice", OPERATOR, HASH, ())
    assert users["bob@example.org"].iocs == ("ioc-a", "ioc_b")
    assert users["carol.x+y"].role == VIEWER


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (f"alice:admin:{HASH}", "unknown role 'admin'; use viewer or operator"),
        (f"alice:Operator:{HASH}", "unknown role"),
        (f"al ice:viewer:{HASH}", "user name 'al ice': use 1 to 64 of the characters"),
        (f" alice:viewer:{HASH}", "user name ' alice'"),
        (f"{'a' * 65}:viewer:{HASH}", "user name"),
        (f":viewer:{HASH}", "user name ''"),
        ("alice:viewer", "expected NAME:ROLE:HASH"),
        (f"alice:viewer:{HASH}:a:b", "found 5 fields"),
        ("alice:viewer:plaintext", "the hash is not scrypt$N$R$P$SALT$KEY"),
        (f"alice:viewer:{HASH}:", "the IOC list is empty"),
        (f"alice:viewer:{HASH}:a,,b", "IOC name ''"),
        (f"alice:viewer:{HASH}:a b", "IOC name 'a b'"),
        (f"alice:viewer:{HASH}:a,a", "listed twice"),
        (f"alice:viewer:{HASH}\x0bbob:viewer:{HASH}", "found 5 fields"),
        (f"alice:viewer:{HASH}\rbob", "not unpadded base64url"),
    ],
)
def test_a_bad_line_is_refused_naming_the_file_the_line_and_the_fix(line, says):
    text = f"# users\nzed:viewer:{HASH}\n{line}\n"
    with pytest.raises(CredentialsError) as caught:
        parse(text, "/etc/pyprocserv/web-users")
    message = str(caught.value)
    assert message.startswith("/etc/pyprocserv/web-users, line 3: ")
    assert says in message


def test_a_user_defined_twice_is_refused_naming_both_lines():
    text = f"alice:viewer:{HASH}\n# x\nalice:operator:{OTHER_HASH}\n"
    with pytest.raises(CredentialsError, match=r"line 3: user 'alice' is already defined on line 1"):
        parse(text)


def test_the_error_is_a_pyprocserv_error_and_a_value_error():
    with pytest.raises(CredentialsError) as caught:
        parse("x:y:z\n")
    assert isinstance(caught.value, PyprocservError) and isinstance(caught.value, ValueError)


lines = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(["alice", "viewer", "operator", HASH, "a,b", "", " ", "#", "\r", "é"]),
             max_size=6).map(":".join),
)


@SETTINGS
@given(st.lists(lines, max_size=6).map("\n".join))
def test_any_text_parses_or_raises_credentials_error_only(text):
    try:
        users = parse(text)
    except CredentialsError as exc:
        assert ", line " in str(exc)
    else:
        assert parse(serialize(users.values())) == users


# -- writing -------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9._@+-]{1,64}", fullmatch=True)
iocs = st.lists(st.from_regex(r"[!-+\--9;-~]{1,20}", fullmatch=True), max_size=4, unique=True)


@SETTINGS
@given(st.dictionaries(names, st.tuples(st.sampled_from([VIEWER, OPERATOR]), iocs), max_size=5))
def test_serialize_then_parse_gives_the_same_users(spec):
    users = [WebUser(name, role, HASH, tuple(listed)) for name, (role, listed) in spec.items()]
    assert list(parse(serialize(users)).values()) == users


def test_serialize_refuses_a_user_listed_twice_or_a_bad_field():
    with pytest.raises(CredentialsError, match="twice"):
        serialize([WebUser("a", VIEWER, HASH), WebUser("a", OPERATOR, HASH)])
    with pytest.raises(CredentialsError, match="unknown role"):
        format_user(WebUser("a", "root", HASH))
    with pytest.raises(CredentialsError, match="IOC name"):
        format_user(WebUser("a", VIEWER, HASH, ("x:y",)))


def test_set_user_replaces_the_users_line_in_place_and_keeps_every_other_line():
    text = f"# users\r\nalice:viewer:{HASH}\r\n\n# bob below\nbob:viewer:{HASH}:a\n"
    new = WebUser("alice", OPERATOR, OTHER_HASH, ("x",))
    assert set_user(text, new) == (
        f"# users\r\nalice:operator:{OTHER_HASH}:x\r\n\n# bob below\nbob:viewer:{HASH}:a\n"
    )


def test_set_user_appends_a_new_user_after_a_last_line_without_an_ending():
    text = f"# users\nalice:viewer:{HASH}"
    new = WebUser("bob", VIEWER, OTHER_HASH)
    assert set_user(text, new) == f"# users\nalice:viewer:{HASH}\nbob:viewer:{OTHER_HASH}\n"
    assert set_user("", new) == f"bob:viewer:{OTHER_HASH}\n"


def test_set_user_refuses_to_rewrite_a_file_with_a_bad_line():
    with pytest.raises(CredentialsError, match="users.txt, line 2: unknown role"):
        set_user(f"alice:viewer:{HASH}\nbob:root:{HASH}\n", WebUser("carol", VIEWER, HASH), "users.txt")


# -- the role matrix -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (VIEWER, {"view_status", "read_log", "spy"}),
        (OPERATOR, {"view_status", "read_log", "spy", "write_console", "control"}),
    ],
)
def test_each_role_may_do_exactly_its_actions_on_any_ioc(role, allowed):
    user = WebUser("u", role, HASH)
    assert {action for action in ACTIONS if may(user, action, "ioc1")} == allowed


def test_an_ioc_list_limits_every_action_to_those_iocs():
    user = WebUser("u", OPERATOR, HASH, ("ioc1", "ioc2"))
    assert all(may(user, action, "ioc2") for action in ACTIONS)
    assert not any(may(user, action, "ioc3") for action in ACTIONS)
    assert not any(may(user, action, "ioc") for action in ACTIONS)


def test_every_user_may_see_the_host_page_and_nothing_else_without_an_ioc():
    for role in (VIEWER, OPERATOR):
        user = WebUser("u", role, HASH, ("ioc1",))
        assert {action for action in ACTIONS if may(user, action)} == {"view_status"}


def test_an_unknown_action_or_role_is_never_a_silent_yes():
    with pytest.raises(ValueError, match="unknown web action 'restart'"):
        may(WebUser("u", OPERATOR, HASH), "restart", "ioc1")
    assert not any(may(WebUser("u", "root", HASH), action, "ioc1") for action in ACTIONS)


def test_a_hash_is_one_text_only_its_key_with_unused_bits_set_is_refused():
    """Two texts of one hash would let an edited file pass a review that compares texts."""
    *head, key = HASH.split("$")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(key[-1])
    twin = "$".join([*head, key[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]])
    assert not verify_password(twin, "secret")
    with pytest.raises(CredentialsError, match="base64url"):
        parse(f"alice:viewer:{twin}\n")


def test_an_unknown_name_costs_one_scrypt_of_the_same_shape_as_a_known_one(monkeypatch):
    users = parse(serialize([WebUser("alice", "operator", hash_password("secret", n=32, r=2, p=1)),
                             WebUser("bob", "viewer", hash_password("other", n=64, r=1, p=1))]))
    calls = []
    scrypt = webusers._scrypt
    monkeypatch.setattr(webusers, "_scrypt", lambda password, salt, *shape: calls.append(
        (len(salt), *shape)) or scrypt(password, salt, *shape))
    assert authenticate(users, "alice", "wrong") is None
    known, calls[:] = list(calls), []
    for _ in range(2):
        assert authenticate(users, "mallory", "secret") is None
        assert calls == known and len(known) == 1
        calls.clear()
    assert authenticate({}, "mallory", "secret") is None
    assert calls == [(webusers.SALT_BYTES, webusers.DEFAULT_N, webusers.DEFAULT_R, webusers.DEFAULT_P,
                      webusers.KEY_BYTES)]
