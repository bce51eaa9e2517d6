"""The ``pyprocserv`` command as a unit file or a person runs it: real processes and sockets.

Proves daemon mode (truthful errors from the parent naming the program, not its path; one
message for a log file that cannot be opened; a warning for an info file that cannot be
written; the daemon's pid in the PID file, the
info file in procServ's order, files removed on SIGTERM and ^Q), foreground mode with a
console on a real terminal (raw mode restored), SIGHUP log reopening, oneshot exit codes,
the security rules for endpoints (loopback unless --allow, IPv6, UNIX socket owner and mode),
and the data plane against real sockets: a stalled client and a child that does not read
stall nobody, and no SIGPIPE message ever reaches the console.
"""

from __future__ import annotations

import os
import re
import select
from pathlib import Path
import signal
import socket
import stat
import subprocess
import time

import pytest
import trio

from support.client import OFFER, close_at_end, connect, tcp_address
from support.launch import PY, ServerProcess, read_info, short_tmpdir
from support.ports import free_port
from support.proc import children_of, proc_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, cwd: str | None = None, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [PY, "-m", "pyprocserv", *args], capture_output=True, text=True, cwd=cwd, env=full_env,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while proc_state(pid) not in (None, "Z"):
        assert time.monotonic() < deadline, f"process {pid} still there"
        time.sleep(0.02)


# -- daemon mode -------------------------------------------------------------------------------


async def test_daemon_mode_reports_the_daemon_writes_files_and_cleans_up_on_sigterm():
    with trio.fail_after(30):
        d = short_tmpdir()
        port = free_port()
        result = run_cli(
            "-p", "pid", "-I", "info", "-L", "log", "-P", str(port), "-P", f"unix:{d}/ctl", "-l", "0",
            "/bin/cat", cwd=d,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        daemon = int(Path(f"{d}/pid").read_text())
        assert result.stderr == f"pyprocserv: spawning daemon process: {daemon}\n"
        info = Path(f"{d}/info").read_text().splitlines()
        assert info[0] == f"pid:{daemon}"
        assert info[1].startswith("tcp:0.0.0.0:") and info[1] != "tcp:0.0.0.0:0"
        assert info[2:] == [f"unix:{d}/ctl", f"tcp:127.0.0.1:{port}"]
        assert stat.S_IMODE(os.stat(f"{d}/ctl").st_mode) == 0o666
        client = await connect(f"tcp:127.0.0.1:{port}")
        greeting = await client.expect(OFFER)
        assert b"@@@ procServ server PID: %d\r\n" % daemon in greeting
        assert b"@@@ Child started as: /bin/cat\r\n" in greeting
        child = int(greeting.split(b'PID: ')[2].split(b"\r\n")[0])
        os.kill(daemon, signal.SIGTERM)
        await client.expect_eof()
        await client.aclose()
        wait_gone(daemon)
        wait_gone(child)
        assert sorted(os.listdir(d)) == ["log"], "pid, info and socket files are removed"
        assert b"@@@ Child process is shutting down" in Path(f"{d}/log").read_bytes()


async def test_daemon_parent_reports_a_port_in_use_truthfully():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = short_tmpdir()
        result = run_cli("-p", "pid", str(port), "/bin/cat", cwd=d)
    assert result.returncode == 98
    assert result.stderr == (
        f"Caught an exception creating the initial control telnet port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use\npyprocserv: Exiting with error code: 98\n"
    )
    assert os.listdir(d) == []


async def test_daemon_warns_about_a_missing_log_like_procserv():
    d = short_tmpdir()
    result = run_cli("-p", "pid", "0", "/bin/cat", cwd=d)
    assert result.returncode == 0
    daemon = int(Path(f"{d}/pid").read_text())
    try:
        assert result.stderr == (
            f"pyprocserv: spawning daemon process: {daemon}\n"
            "Warning: No log file and no port for log connections specified.\n"
        )
    finally:
        os.kill(daemon, signal.SIGTERM)
        wait_gone(daemon)
    quiet = run_cli("-q", "-p", "pid2", "0", "/bin/cat", cwd=d)
    daemon = int(Path(f"{d}/pid2").read_text())
    os.kill(daemon, signal.SIGTERM)
    wait_gone(daemon)
    assert quiet.stderr == ""


def run_as_script(script: str, *args: str, cwd: str) -> subprocess.CompletedProcess:
    """pyprocserv as pip's console script runs it: argv[0] is the script's full path."""
    code = f"import sys; sys.argv[0] = {script!r}; from pyprocserv._apps.main import entrypoint; entrypoint()"
    return subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=20,
                          env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL)


async def test_messages_name_the_program_not_the_path_of_its_script():
    d = short_tmpdir()
    script = "/long/venv/bin/pyprocserv"
    bad = run_as_script(script, "--holdoff", "abc", "0", "/bin/cat", cwd=d)
    assert bad.stderr.startswith("pyprocserv: invalid --holdoff value 'abc'"), bad.stderr
    assert run_as_script(script, "--help", cwd=d).stdout.startswith("Usage: pyprocserv [options] -P")
    result = run_as_script(script, "-q", "-p", "pid", "0", "/bin/cat", cwd=d)
    daemon = int(Path(f"{d}/pid").read_text())
    os.kill(daemon, signal.SIGTERM)
    wait_gone(daemon)
    result = run_as_script(script, "-p", "pid", "-l", "0", "0", "/bin/cat", cwd=d)
    daemon = int(Path(f"{d}/pid").read_text())
    os.kill(daemon, signal.SIGTERM)
    wait_gone(daemon)
    assert result.stderr == f"pyprocserv: spawning daemon process: {daemon}\nWarning: No log file specified.\n"


async def test_a_log_file_that_cannot_be_opened_is_one_message():
    d = short_tmpdir()
    result = run_cli("-p", "pid", "-L", f"{d}/no/dir/log", "0", "/bin/cat", cwd=d)
    daemon = int(Path(f"{d}/pid").read_text())
    os.kill(daemon, signal.SIGTERM)
    wait_gone(daemon)
    assert result.returncode == 0
    assert result.stderr == (
        f"pyprocserv: unable to open log file {d}/no/dir/log: No such file or directory "
        "(serving without it; SIGHUP tries again)\n"
        f"pyprocserv: spawning daemon process: {daemon}\n"
    )


async def test_an_info_file_in_a_missing_directory_is_a_warning_and_the_server_still_starts():
    with trio.fail_after(30):
        d = short_tmpdir()
        port = free_port()
        result = run_cli("-q", "-p", "pid", "-I", f"{d}/no/dir/info", "-P", str(port), "/bin/cat", cwd=d)
        daemon = int(Path(f"{d}/pid").read_text())
        try:
            assert result.returncode == 0
            assert result.stderr == (
                f"pyprocserv: cannot write the info file {d}/no/dir/info: no directory {d}/no/dir "
                "(create it, or choose another path); serving without it\n"
            )
            client = await connect(f"tcp:127.0.0.1:{port}")
            await client.expect(OFFER)
            await client.aclose()
        finally:
            os.kill(daemon, signal.SIGTERM)
            wait_gone(daemon)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-P", "70000", "/bin/cat"], 1, "pyprocserv: invalid control port 70000 (must be <65536)\n"),
        (["-P", "foo", "/bin/cat"], 1, "Invalid socket spec 'foo'\n"),
        (["unix:a:b:/x", "/bin/cat"], 1, "Unix path+permissions spec unparsable 'a:b:/x'\n"),
        (["unix:nosuchuser::0600:/tmp/x.sock", "/bin/cat"], 1, "Unknown user 'nosuchuser'\n"),
        (["unix::nosuchgroup::/tmp/x.sock", "/bin/cat"], 1, "Unknown group 'nosuchgroup'\n"),
        (["unix:/" + "x" * 120, "/bin/cat"], 1, "Unix path is too long (must be <108)\n"),
        (["--holdoff", "abc", "0", "/bin/cat"], 1,
         "pyprocserv: invalid --holdoff value 'abc': expected a number of seconds, 0 or more\n"),
        (["--killsig", "NOPE", "0", "/bin/cat"], 1,
         "pyprocserv: invalid --killsig 'NOPE': expected a signal number or name such as 15 or TERM\n"),
        (["0", "/no/such/program"], 1, "pyprocserv: /no/such/program: No such file or directory\n"),
        (["0", "no-such-program-anywhere"], 1, "pyprocserv: no-such-program-anywhere: command not found in PATH\n"),
        (["-c", "/no/such/dir", "0", "/bin/cat"], 1,
         "pyprocserv: cannot start the child in /no/such/dir: no such directory (--chdir)\n"),
    ],
)
async def test_bad_input_exits_non_zero_with_a_message_and_leaves_nothing(args, code, message):
    d = short_tmpdir()
    result = run_cli(*args, cwd=d)
    assert (result.returncode, result.stderr) == (code, message)
    assert os.listdir(d) == []


async def test_a_stale_unix_socket_is_replaced_but_a_live_one_or_a_file_is_not():
    d = short_tmpdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(f"{d}/stale")
    stale.close()  # the file stays, nobody listens: what a killed server leaves
    async with ServerProcess(["-q", f"unix:{d}/stale", "/bin/cat"]) as server:
        client = await connect(server.control())
        await client.expect(OFFER)
        await client.aclose()
        busy = run_cli("-f", "-q", f"unix:{d}/stale", "/bin/cat", cwd=d)
        assert busy.returncode == 98
        assert "another server is listening there" in busy.stderr
    open(f"{d}/plain", "w").close()
    result = run_cli("-f", "-q", f"unix:{d}/plain", "/bin/cat", cwd=d)
    assert result.returncode != 0 and "it exists and is not a socket" in result.stderr
    assert os.path.isfile(f"{d}/plain")


# -- endpoints and security --------------------------------------------------------------------


def listening(pid: int) -> set[str]:
    """Addresses ``pid`` listens on, from /proc/net (so we do not need ss)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, v6 in (("tcp", False), ("tcp6", True)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                host, port = fields[1].split(":")
                raw = bytes.fromhex(host)
                if v6:
                    addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                else:
                    addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
                out.add(f"{addr}:{int(port, 16)}")
    return out


async def test_control_endpoints_stay_on_loopback_whatever_address_is_given():
    port = free_port()
    async with ServerProcess([f"10.1.2.3:{port}", "/bin/cat"]) as server:
        assert listening(server.pid) == {f"127.0.0.1:{port}"}
        assert "is bound to loopback; use --allow" in server.read_stderr()


async def test_allow_opens_control_to_all_interfaces_with_a_warning():
    port = free_port()
    async with ServerProcess(["--allow", str(port), "/bin/cat"]) as server:
        assert listening(server.pid) == {f"0.0.0.0:{port}"}
        assert "--allow: control endpoints accept connections from any host" in server.read_stderr()


async def test_log_port_is_public_unless_restricted():
    async with ServerProcess(["-l", "0", "0", "/bin/cat"]) as server:
        assert any(a.startswith("0.0.0.0:") for a in listening(server.pid))
    async with ServerProcess(["--restrict", "-l", "0", "0", "/bin/cat"]) as server:
        addresses = listening(server.pid)
        assert len(addresses) == 2 and all(a.startswith("127.0.0.1:") for a in addresses)  # control and log


async def test_ipv6_endpoints_work(nursery):
    async with ServerProcess(["-P", "[::1]:0", "-l", "[::]:0", "--restrict", "/bin/cat"]) as server:
        assert server.endpoints[0].startswith("tcp:[::1]:")  # restricted log port: loopback
        assert server.endpoints[1].startswith("tcp:[::1]:")
        client = await connect(server.control())
        close_at_end(nursery, client)
        assert b"@@@ Welcome to procServ" in await client.expect(OFFER)


async def test_unix_socket_gets_the_requested_group_and_mode():
    d = short_tmpdir()
    group = __import__("grp").getgrgid(os.getgid()).gr_name
    async with ServerProcess([f"unix::{group}:0640:{d}/ctl", "/bin/cat"]):
        st = os.stat(f"{d}/ctl")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_gid == os.getgid()
    assert not os.path.exists(f"{d}/ctl")


async def test_abstract_unix_socket(nursery):
    name = f"@pyprocserv-test-{os.getpid()}"
    async with ServerProcess([f"unix:{name}", "/bin/cat"]) as server:
        assert server.endpoints == [f"unix:{name}"]
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)


async def test_shell_metacharacters_are_never_interpreted(nursery):
    d = short_tmpdir()
    async with ServerProcess(["-n", "a;touch x", "-w", "0", "/bin/echo", "$(touch y)", "`touch z`;", "|", "&"],
                             cwd=d) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"\x12")
        assert b"$(touch y) `touch z`; | &\r\n" in await client.expect(b"Normal exit status = 0")
    assert sorted(os.listdir(d)) == ["info", "stderr", "stdout"][:0] or not {"x", "y", "z"} & set(os.listdir(d))


# -- shutdown, quit, oneshot, signals ------------------------------------------------------------


async def test_ctrl_q_after_noautorestart_quits_and_removes_files(nursery):
    d = short_tmpdir()
    server = ServerProcess(["--noautorestart", "-p", f"{d}/pid", f"unix:{d}/ctl", "/bin/sh", "-c", "exit 4"])
    async with server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        greeting = await client.expect(OFFER)
        assert b"is SHUT DOWN" in greeting  # the child ran once and exited
        await client.send(b"\x11")
        await client.expect_eof()
        assert await server.wait() == 0
    assert not os.path.exists(f"{d}/ctl") and not os.path.exists(f"{d}/pid") and not os.path.exists(server.info)


@pytest.mark.parametrize("script, code", [("exit 7", 7), ("kill -9 $$", 137), ("exit 0", 0)])
async def test_oneshot_exits_at_once_with_the_childs_code(script, code):
    start = time.monotonic()
    async with ServerProcess(["-q", "-o", "0", "/bin/sh", "-c", f"sleep 0.3; {script}"]) as server:
        assert await server.wait() == code
    assert time.monotonic() - start < 10  # procServ waits out the 15 s holdoff first


async def test_sigint_is_an_orderly_shutdown_too(nursery):
    async with ServerProcess(["0", "/bin/sh", "-c", "echo up; exec sleep 100"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        child = children_of(server.pid)
        os.kill(server.pid, signal.SIGINT)
        assert await server.wait() == 0
        for pid in child:
            wait_gone(pid)
        assert not os.path.exists(server.info)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period():
    async with ServerProcess(
        ["--killsig", "TERM", "-G", "1", "0", "/bin/sh", "-c", "trap '' TERM; echo up; while :; do sleep 1; done"]
    ) as server:
        await trio.sleep(0.5)
        kids = children_of(server.pid)
        start = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        assert await server.wait() == 0
        assert 0.9 < time.monotonic() - start < 8
        for pid in kids:
            wait_gone(pid)


async def test_sighup_reopens_the_log_after_a_rename(nursery):
    d = short_tmpdir()
    async with ServerProcess(["-L", f"{d}/log", "0", "/bin/cat"]) as server:
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(OFFER)
        await client.send(b"before\r")
        await client.expect(b"before\r\nbefore\r\n")
        os.rename(f"{d}/log", f"{d}/log.1")
        os.kill(server.pid, signal.SIGHUP)
        with trio.fail_after(5):
            while not os.path.exists(f"{d}/log"):
                await trio.sleep(0.02)
        await client.send(b"after\r")
        await client.expect(b"after\r\nafter\r\n")
    assert b"before" in Path(f"{d}/log.1").read_bytes() and b"after" not in Path(f"{d}/log.1").read_bytes()
    assert b"after\r\nafter\r\n" in Path(f"{d}/log").read_bytes()


async def test_clients_that_vanish_mid_stream_cause_no_sigpipe_message(nursery):
    d = short_tmpdir()
    async with ServerProcess(["-L", f"{d}/log", "0", "/bin/sh", "-c", "while :; do echo spam; done"]) as server:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", int(server.control().rsplit(":", 1)[1])))
            sock.recv(100)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # reset: the server's next write fails with EPIPE/ECONNRESET
        client = await connect(server.control())
        close_at_end(nursery, client)
        await client.expect(b"spam\r\nspam\r\n")
    assert b"sigPipe" not in Path(f"{d}/log").read_bytes()
    assert "Traceback" not in server.read_stderr()


# -- the data plane against real sockets -------------------------------------------------------


async def test_a_stalled_client_does_not_slow_a_reading_client(nursery):
    total = 30_000_000
    code = f"import sys\nb = b'x' * 65535 + b'\\n'\nfor _ in range({total} // 65536): sys.stdout.buffer.write(b)\nsys.stdout.flush()\n"
    async with ServerProcess(["-w", "0", PY, "-c", code]) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(tcp_address(server.control()))  # never reads
        try:
            reader = await connect(server.control())
            close_at_end(nursery, reader)
            await reader.expect(OFFER)
            await reader.send(b"\x12")
            stream = bytearray()
            with trio.fail_after(60):  # procServ stalls 10 s per blocked write to the stalled client
                while b"Normal exit status = 0" not in stream[-200:]:
                    data = await reader.stream.receive_some(1 << 20)
                    assert data, "connection closed"
                    assert b"bytes of output skipped" not in data
                    stream += data
            # Every x the child wrote, counted without the server's @@@ lines (they name the child's
            # path, which may hold an x of its own).
            output = re.sub(rb"@@@[^\n]*\n?", b"", bytes(stream))
            assert output.count(b"x") == (total // 65536) * 65535
        finally:
            stalled.close()


async def test_a_child_that_does_not_read_never_blocks_the_server(nursery):
    async with ServerProcess(["0", "/bin/sleep", "1000"]) as server:
        typist = await connect(server.control())
        close_at_end(nursery, typist)
        await typist.expect(OFFER)
        with trio.fail_after(20):
            for _ in range(100):
                await typist.send(b"y" * 10_000 + b"\r")
            await typist.expect(b"the child is not reading")
            other = await connect(server.control())
            close_at_end(nursery, other)
            assert b"Welcome" in await other.expect(OFFER)
        os.kill(server.pid, signal.SIGTERM)
        assert await server.wait(timeout=10) == 0


# -- foreground mode with a terminal ------------------------------------------------------------


async def test_foreground_console_on_a_terminal_types_to_the_child_and_restores_the_tty():
    ptyprocess = pytest.importorskip("ptyprocess")
    d = short_tmpdir()
    probe = os.path.join(d, "stty")
    env = dict(os.environ, PYTHONPATH=ROOT)
    term = ptyprocess.PtyProcessUnicode.spawn(
        ["/bin/sh", "-c", f"stty -a > {probe}.before; {PY} -m pyprocserv -f -q --holdoff 0 0 /bin/cat; stty -a > {probe}.after"],
        cwd=d, env=env, dimensions=(24, 80),
    )
    try:
        seen = ""
        deadline = time.monotonic() + 20

        def read_until(text: str) -> None:
            nonlocal seen
            while text not in seen:
                assert time.monotonic() < deadline, f"waiting for {text!r}; got {seen[-300:]!r}"
                if select.select([term.fd], [], [], 0.2)[0]:
                    seen += term.read(4096)

        read_until("@@@ Welcome to procServ")
        read_until("plus you)")
        term.write("typed\r")
        read_until("typed\r\ntyped\r\n")  # pty echo, then cat
        term.write("\x18")
        read_until("Restarting child")
        term.write("\x14")
        read_until("Toggled auto restart to OFF")
        assert "\xff" not in seen  # no raw telnet bytes on a terminal
        for pid in children_of(term.pid):
            os.kill(pid, signal.SIGTERM)
        with trio.fail_after(10):
            while not os.path.exists(probe + ".after"):
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        assert Path(probe + ".after").read_text() == Path(probe + ".before").read_text()
    finally:
        term.close(force=True)


async def test_history_replays_the_last_lines_to_a_new_client(nursery):
    async with ServerProcess(["--history", "2", "0", "/bin/sh", "-c", "printf 'one\\ntwo\\nthree\\n'; exec sleep 100"]) as server:
        first = await connect(server.control())
        close_at_end(nursery, first)
        await first.expect(b"three\r\n")  # live or from the history: the child has printed
        late = await connect(server.control())
        close_at_end(nursery, late)
        await late.expect(b"(plus you)\r\n" + OFFER)
        assert await late.quiet() == b"two\r\nthree\r\n"


async def test_daemon_mode_writes_no_pid_txt_by_default():
    d = short_tmpdir()
    result = run_cli("-I", "info", "0", "/bin/cat", cwd=d)
    assert result.returncode == 0
    daemon, _ = read_info(f"{d}/info")
    try:
        assert "pid.txt" not in os.listdir(d)
    finally:
        os.kill(daemon, signal.SIGTERM)
        wait_gone(daemon)


async def test_debug_mode_copies_the_log_to_stdout_and_logfile_dash_is_stdout():
    for args, foreground in ((["-d", "-q"], False), (["-L", "-"], True)):
        server = ServerProcess(
            [*args, "--timefmt", "%Y", "0", "/bin/sh", "-c", "echo from-child; exec sleep 100"], foreground=foreground
        )
        async with server:
            with trio.fail_after(10):
                while b"from-child\r\n" not in Path(server.stdout).read_bytes():
                    await trio.sleep(0.02)
        out = Path(server.stdout).read_bytes()
        year = time.strftime("%Y").encode()
        assert b'@@@ Restarting child "/bin/sh"\r\n' in out
        assert b"@@@ Current time: " + year + b"\r\n" in out  # --timefmt, written at SIGTERM
        assert b"Welcome" not in out  # no console on stdout: -d has none, -L - replaces it
