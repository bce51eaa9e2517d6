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

from support.fakes import FakeSpawner
from support.launch import PY, ServerProcess, read_info, short_tmpdir
from support.proc import proc_state
from pyprocserv import Config, ProcessServer
from pyprocserv._core.endpoints import UnixEndpoint
from pyprocserv._shell.listeners import BindError, bind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([PY, "-m", "pyprocserv", *args], capture_output=True, text=True, env=env,
                          cwd="/", timeout=20, stdin=subprocess.DEVNULL)


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


# -- signals at every moment of start-up -------------------------------------------------------


def start_server(d: str) -> subprocess.Popen:
    """``pyprocserv -f`` with a UNIX and a TCP control socket, a pid file and an info file in ``d``."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    argv = [PY, "-m", "pyprocserv", "-f", "-q", "-P", f"unix:{d}/ctl", "-P", "0",
            "--pidfile", f"{d}/pid", "-I", f"{d}/info", "/bin/cat"]
    return subprocess.Popen(argv, cwd="/", env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ends_promptly(server: subprocess.Popen) -> int:
    try:
        code = server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        raise AssertionError("the server hangs after the signal") from None
    finally:
        server.stderr.close()
    return code


def signal_and_check(d: str, server: subprocess.Popen, sig: signal.Signals, moment: str) -> None:
    """Send ``sig``: the server ends within seconds, leaves nothing in ``d``, and handles the
    signal (exit 0, not death by it) if any of its files existed when it was sent."""
    had_files = bool(os.listdir(d))
    server.send_signal(sig)
    code = ends_promptly(server)
    assert os.listdir(d) == [], f"left behind after {sig.name} {moment}"
    if had_files:
        assert code == 0, f"{sig.name} {moment}, with files in place: not handled (exit {code})"


def test_a_signal_at_any_moment_of_start_up_ends_the_server_promptly_and_leaves_no_file():
    signals = (signal.SIGTERM, signal.SIGINT)
    # From exec through imports, binding and the first start (~150 ms here): every 25 ms to 300 ms.
    for step in range(13):
        d = short_tmpdir()
        server = start_server(d)
        time.sleep(step * 0.025)
        signal_and_check(d, server, signals[step % 2], f"{step * 25} ms after exec")
    # The windows the old code had are a millisecond wide: the socket exists and trio's receiver
    # does not, or it does and the first start has not begun. Every 0.25 ms to 3.75 ms after the
    # socket appears.
    for step in range(16):
        d = short_tmpdir()
        server = start_server(d)
        deadline = time.monotonic() + 10
        while not os.path.lexists(f"{d}/ctl"):
            assert time.monotonic() < deadline, "no socket after 10 s"
        time.sleep(step * 0.00025)
        signal_and_check(d, server, signals[step % 2], f"{step * 0.25:.2f} ms after the socket appeared")


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


async def test_a_pid_file_symlink_in_a_world_writable_directory_is_refused_with_a_clear_message():
    victim, before = victim_file(short_tmpdir())
    shared = world_writable_dir()
    pidfile = os.path.join(shared, "pid")
    os.symlink(victim, pidfile)
    d = short_tmpdir()
    result = run_cli("-q", "-p", pidfile, "-I", f"{d}/info", "0", "/bin/cat")
    daemon, _ = read_info(f"{d}/info")
    try:
        assert result.returncode == 0
        assert result.stderr == (
            f"pyprocserv: unable to open PID file {pidfile}: it is a symbolic link in {shared}, which "
            "other users can write; remove the link, or put the PID file in a directory only you can write\n"
        )
        assert facts(victim) == before
    finally:
        os.kill(daemon, signal.SIGTERM)
        with trio.fail_after(10):
            while proc_state(daemon) not in (None, "Z"):
                await trio.sleep(0.02)
    assert facts(victim) == before
    assert os.readlink(pidfile) == victim, "a link we did not write is not ours to remove"


def test_pid_and_info_files_in_a_world_writable_directory_replace_a_planted_hard_link():
    victim, before = victim_file(short_tmpdir())
    shared = world_writable_dir()
    for name in ("pid", "info"):
        os.link(victim, os.path.join(shared, name))  # on the same file system: both in /tmp
    server = start_server(shared)
    try:
        deadline = time.monotonic() + 10
        while not Path(f"{shared}/info").read_text().startswith("pid:"):
            assert time.monotonic() < deadline, "no info file after 10 s"
            time.sleep(0.02)
        assert Path(f"{shared}/pid").read_text() == f"{server.pid}\n"
        assert Path(f"{shared}/info").read_text().splitlines()[0] == f"pid:{server.pid}"
        assert facts(victim) == before
    finally:
        server.terminate()
        assert ends_promptly(server) == 0
    assert os.listdir(shared) == []
    assert facts(victim) == before
