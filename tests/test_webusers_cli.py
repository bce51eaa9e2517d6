"""``web-user add`` (pyprocserv._apps.webusers), called through ``main`` on files in tmp_path.

These tests prove that a user added from standard input or the terminal can log in with that
password, that the file is created (or rewritten) with mode 0600 whatever the umask, that
comments and other users survive and a user of the same name is replaced in place, and that
every bad input (name, role, IOC list, password, a file with a bad line, no terminal) is one
line on standard error with exit status 1 or 2 and leaves the file as it was.
"""

from __future__ import annotations

import getpass
import io
import os
import stat
import sys

import pytest

from pyprocserv._apps import webusers as app
from pyprocserv._core.webusers import hash_password, parse, verify_password

OLD_HASH = hash_password("old", n=16, r=1, p=1)


@pytest.fixture
def stdin(monkeypatch):
    def feed(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    return feed


@pytest.fixture
def terminal(monkeypatch):
    """The answers getpass gives, in order; fails the test if asked once too often."""
    answers: list[str] = []

    def fake(prompt: str = "") -> str:
        assert answers, f"asked for a password unexpectedly: {prompt!r}"
        return answers.pop(0)
    monkeypatch.setattr(app.getpass, "getpass", fake)
    return answers


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_user_added_from_stdin_can_log_in_and_the_new_file_is_0600(tmp_path, stdin, capsys, umask_022):
    path = tmp_path / "web-users"
    stdin("s3cret pass\n")
    assert app.main(["add", "--file", str(path), "alice", "--role", "operator", "--password-stdin"]) == 0
    assert capsys.readouterr().out == f"added operator alice (every IOC) in {path}\n"
    text = path.read_text()
    assert text.startswith("# pyprocserv web console users")
    user = parse(text)["alice"]
    assert user.role == "operator" and user.iocs == ()
    assert verify_password(user.password_hash, "s3cret pass")
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["web-users"]  # no temporary left behind


def test_a_user_added_on_the_terminal_is_asked_twice(tmp_path, terminal, capsys):
    path = tmp_path / "web-users"
    terminal += ["pw", "pw"]
    assert app.main(["add", "--file", str(path), "bob", "--role", "viewer", "--iocs", "ioc1,ioc2"]) == 0
    user = parse(path.read_text())["bob"]
    assert (user.role, user.iocs) == ("viewer", ("ioc1", "ioc2"))
    assert verify_password(user.password_hash, "pw")
    assert terminal == []


def test_replacing_a_user_keeps_comments_and_others_in_place_and_tightens_the_mode(tmp_path, stdin, capsys):
    path = tmp_path / "web-users"
    path.write_text(f"# ours\r\nalice:viewer:{OLD_HASH}\r\n# bob\nbob:viewer:{OLD_HASH}:x\n")
    path.chmod(0o644)
    stdin("new\r\n")
    assert app.main(["add", "--file", str(path), "alice", "--role", "operator", "--password-stdin"]) == 0
    assert "replaced operator alice" in capsys.readouterr().out
    lines = path.read_bytes().decode().split("\n")
    assert lines[0] == "# ours\r" and lines[2:] == ["# bob", f"bob:viewer:{OLD_HASH}:x", ""]
    alice = parse(path.read_text())["alice"]
    assert alice.role == "operator" and verify_password(alice.password_hash, "new")
    assert _mode(path) == 0o600


def _refused(capsys, code: int, argv: list[str], says: str) -> None:
    assert app.main(argv) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    if code == 1:
        assert err.startswith("pyprocserv-manage web-user: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["al ice", "--role", "viewer"], "user name 'al ice': use 1 to 64 of the characters"),
        (["alice", "--role", "viewer", "--iocs", "a,,b"], "IOC name ''"),
        (["alice", "--role", "viewer", "--iocs", "a:b"], "IOC name 'a:b'"),
        (["alice", "--role", "viewer", "--iocs", ""], "the IOC list is empty"),
    ],
)
def test_a_bad_name_or_ioc_list_is_refused_before_the_password_is_asked(tmp_path, terminal, capsys, extra, says):
    path = tmp_path / "web-users"
    _refused(capsys, 1, ["add", "--file", str(path), *extra], says)
    assert not path.exists()


def test_an_unknown_role_or_missing_option_is_a_usage_error(tmp_path, terminal, capsys):
    _refused(capsys, 2, ["add", "--file", str(tmp_path / "f"), "alice", "--role", "admin"], "invalid choice: 'admin'")
    _refused(capsys, 2, ["add", "alice", "--role", "viewer"], "--file")
    _refused(capsys, 2, [], "COMMAND")


def test_differing_passwords_write_nothing(tmp_path, terminal, capsys):
    path = tmp_path / "web-users"
    terminal += ["one", "two"]
    _refused(capsys, 1, ["add", "--file", str(path), "alice", "--role", "viewer"], "the two passwords differ")
    assert not path.exists()


def test_without_a_terminal_it_says_to_use_password_stdin(tmp_path, monkeypatch, capsys):
    def no_terminal(prompt: str = "") -> str:
        import warnings
        warnings.warn("Can not control echo on the terminal.", getpass.GetPassWarning, stacklevel=2)
        return "echoed"
    monkeypatch.setattr(app.getpass, "getpass", no_terminal)
    path = tmp_path / "web-users"
    _refused(capsys, 1, ["add", "--file", str(path), "alice", "--role", "viewer"], "--password-stdin")
    assert not path.exists()


@pytest.mark.parametrize(("given", "says"), [("", "no password on standard input"), ("\n", "no password"),
                                              ("x" * 5000, "longer than 4096 bytes")])
def test_an_empty_or_huge_password_on_stdin_is_refused(tmp_path, stdin, capsys, given, says):
    path = tmp_path / "web-users"
    stdin(given)
    _refused(capsys, 1, ["add", "--file", str(path), "alice", "--role", "viewer", "--password-stdin"], says)
    assert not path.exists()


def test_a_file_with_a_bad_line_is_not_rewritten(tmp_path, terminal, capsys):
    path = tmp_path / "web-users"
    original = f"alice:viewer:{OLD_HASH}\nbob:root:{OLD_HASH}\n"
    path.write_text(original)
    _refused(capsys, 1, ["add", "--file", str(path), "carol", "--role", "viewer"],
             f"{path}, line 2: unknown role 'root'; use viewer or operator; nothing was written")
    assert path.read_text() == original


def test_a_directory_or_a_file_that_is_not_utf8_is_refused(tmp_path, terminal, capsys):
    _refused(capsys, 1, ["add", "--file", str(tmp_path), "alice", "--role", "viewer"], "is a directory")
    path = tmp_path / "web-users"
    path.write_bytes(b"# caf\xe9\n")
    _refused(capsys, 1, ["add", "--file", str(path), "alice", "--role", "viewer"], "not UTF-8 text (byte 5)")
    assert path.read_bytes() == b"# caf\xe9\n"


def test_a_file_in_a_missing_directory_is_refused_with_the_reason(tmp_path, stdin, capsys):
    stdin("pw\n")
    path = tmp_path / "no" / "web-users"
    _refused(capsys, 1, ["add", "--file", str(path), "alice", "--role", "viewer", "--password-stdin"],
             f"cannot write {path}: No such file or directory")
