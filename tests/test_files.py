"""Files without windows: signals at start-up, symlinks planted by other users.

Rules for these tests:
* A signal at any moment of start-up ends the server promptly and leaves no socket, pid or
  info file; the hang (a shutdown asked for before the first start) is proved on the fake clock.
* An attacker is simulated where the old code had a window: a symlink swapped in right after
  ``bind()``, planted at the status file's temporary path, or planted at the pid or info file's
  path in a directory every user can write. The symlink's target keeps its bytes, mode and owner.
* Real processes run under ``trio.fail_after`` or subprocess timeouts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import socket
import stat
import subprocess
import time

import pytest
import trio

from helpers import PY, FakeSpawner, ServerProcess, proc_state, short_tmpdir
from pyprocserv import Config, ProcessServer
from pyprocserv._endpoints import UnixEndpoint
from pyprocserv._listeners import BindError, bind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- shutdown before the first start ---------------------------------------------------------


async def test_shutdown_before_the_first_start_ends_run_instead_of_waiting_for_it(autojump_clock):
    # SIGTERM delivered as soon as trio's receiver is open: shutdown() runs before the
    # supervisor's first turn, so no start will ever come.
    spawner = FakeSpawner()
    server = ProcessServer(Config(command=("/bin/cat",), name="c"), spawn=spawner, bound_endpoints=[])
    server.shutdown()
    with trio.fail_after(5):
        assert await server.run() == 0
    assert spawner.children == []


# -- symlinks planted by other users -----------------------------------------------------------


def victim_file(d: str) -> tuple[str, tuple[bytes, int, int, int]]:
    """A file another user's link may point at, and what must stay as it is: bytes, mode, owner."""
    path = os.path.join(d, "victim")
    Path(path).write_bytes(b"secret\n")
    os.chmod(path, 0o600)
    return path, facts(path)


def facts(path: str) -> tuple[bytes, int, int, int]:
    st = os.stat(path)
    return Path(path).read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def world_writable_dir() -> str:
    d = short_tmpdir()
    os.chmod(d, 0o1777)  # as /tmp
    return d


def test_a_symlink_swapped_in_for_the_socket_after_bind_never_gets_its_owner_or_mode(monkeypatch):
    # The attacker can write the socket's directory and wins every race: right after bind()
    # the socket's path is a symlink to the victim.
    victim, before = victim_file(short_tmpdir())
    path = os.path.join(short_tmpdir(), "ctl")
    real_bind = socket.socket.bind

    def bind_then_swap(sock: socket.socket, address: object) -> None:
        real_bind(sock, address)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(victim, path)

    monkeypatch.setattr(socket.socket, "bind", bind_then_swap)
    owner = "nobody" if os.geteuid() == 0 else None
    with pytest.raises(BindError) as refused:
        bind(UnixEndpoint(path, user=owner, mode=0o666), "control", public=False)
    assert facts(victim) == before
    assert refused.value.strerror == (
        f"cannot listen on unix:{path}: something else was put there while we bound it (left alone)"
    )
    assert os.readlink(path) == victim
    assert os.listdir(os.path.dirname(path)) == ["ctl"], "the private directory is gone"


async def test_the_status_files_temporary_file_never_follows_a_symlink_planted_at_its_old_name():
    victim, before = victim_file(short_tmpdir())
    status = os.path.join(world_writable_dir(), "status")
    os.symlink(victim, status + ".tmp")
    async with ServerProcess(["--status-file", status, "0", "/bin/cat"]) as server:
        with trio.fail_after(10):
            while not (os.path.exists(status) and json.loads(Path(status).read_text())["running"]):
                await trio.sleep(0.02)
        assert json.loads(Path(status).read_text())["server_pid"] == server.pid
        assert facts(victim) == before
        assert not os.path.islink(status)
        assert os.readlink(status + ".tmp") == victim
    assert os.listdir(os.path.dirname(status)) == ["status.tmp"], "no temporary file is left"


