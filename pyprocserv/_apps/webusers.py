"""``pyprocserv-manage web-user add``: add or replace a user of the web console's credentials file.

Usage: ``web-user add --file PATH NAME --role viewer|operator [--iocs A,B] [--password-stdin]``.

Rules:
1. The password is asked twice on the terminal (not echoed), or read once, as the first line of
   standard input, with ``--password-stdin`` (for scripts; never on the command line, where
   ``ps`` shows it). Without a terminal and without that option, nothing is written.
2. Everything is checked before the password is asked: the name, the role, the IOC list and the
   existing file, whose every line must parse (a file with a bad line is not rewritten).
3. The file is replaced atomically (``_shell.files.replace_file``) and created with mode 0600:
   it holds password hashes. Comments and the other users' lines are kept as they are; a user
   of the same name is replaced in place.
4. A refusal is one line on standard error naming what to fix, and exit status 1 (2 for a
   command line argparse cannot read); never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import warnings
from typing import Sequence

from .._core.webusers import MAX_PASSWORD_BYTES, ROLES, CredentialsError, WebUser, check_iocs, check_name
from .._core.webusers import hash_password, parse, set_user
from .._shell.files import replace_file

PROG = "pyprocserv-manage web-user"
HEADER = (
    "# pyprocserv web console users, one a line: NAME:ROLE:HASH[:IOC,IOC...]\n"
    "# ROLE is viewer or operator; add or change a user with 'pyprocserv-manage web-user add'.\n"
)


class Refused(Exception):
    """Nothing was written; ``str()`` is the line for standard error (rule 4)."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description="Manage the web console's users.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = commands.add_parser("add", help="add a user, or replace the user of that name",
                              description="Add a user to the credentials file, or replace the user of that name.")
    add.add_argument("--file", required=True, metavar="PATH", help="the credentials file (created if missing)")
    add.add_argument("name", metavar="NAME", help="the user name: A-Z a-z 0-9 . _ @ + -")
    add.add_argument("--role", required=True, choices=ROLES, help="viewer: status, log, spy; operator: also "
                     "the read-write console and the actions")
    add.add_argument("--iocs", metavar="A,B", help="only these IOCs (default: every IOC)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input instead of the terminal")
    return top


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise Refused(f"{path}: not UTF-8 text (byte {exc.start}); fix or move the file") from None
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror}") from None


def _password_from_stdin() -> str:
    line = sys.stdin.readline(MAX_PASSWORD_BYTES + 3)
    if line.endswith("\n"):
        line = line[:-1].removesuffix("\r")
    elif len(line) > MAX_PASSWORD_BYTES:
        raise Refused(f"the password is longer than {MAX_PASSWORD_BYTES} bytes; choose a shorter one")
    if not line:
        raise Refused("no password on standard input; give it as the first line")
    return line


def _password_from_terminal(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            first = getpass.getpass(f"Password for {name}: ")
            second = getpass.getpass("Again: ")
        except getpass.GetPassWarning:
            raise Refused("no terminal to ask the password on; give it on standard input "
                          "with --password-stdin") from None
        except EOFError:
            raise Refused("no password given") from None
    if first != second:
        raise Refused("the two passwords differ; nothing was written")
    return first


def add_user(args: argparse.Namespace) -> str:
    """Add or replace the user (rules 1 to 3); the line for standard output."""
    try:
        name = check_name(args.name)
        iocs = check_iocs(args.iocs.split(",")) if args.iocs is not None else ()
    except CredentialsError as exc:
        raise Refused(str(exc)) from None
    if os.path.isdir(args.file):
        raise Refused(f"{args.file} is a directory; give the path of the credentials file")
    text = _read_file(args.file)
    try:
        existed = name in parse(text, args.file)
    except CredentialsError as exc:
        raise Refused(f"{exc}; nothing was written") from None
    password = _password_from_stdin() if args.password_stdin else _password_from_terminal(name)
    try:
        user = WebUser(name, args.role, hash_password(password), iocs)
    except CredentialsError as exc:
        raise Refused(str(exc)) from None
    new_text = set_user(text or HEADER, user, args.file)
    old_umask = os.umask(0o077)  # replace_file creates with 0o666 & ~umask: 0600 (rule 3)
    try:
        replace_file(args.file, new_text)
    except OSError as exc:
        raise Refused(f"cannot write {args.file}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    scope = ", ".join(iocs) if iocs else "every IOC"
    return f"{'replaced' if existed else 'added'} {args.role} {name} ({scope}) in {args.file}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    try:
        said = add_user(args)
    except Refused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(said)
    return 0
