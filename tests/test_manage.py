"""Many IOCs: pyprocserv-manage (procServUtils' manage-procs), the launcher, systemd, host mode.

Proves that the manager reads and writes procServUtils' files and prints its outputs, without
its defects (options after NAME COMMAND, a bare command turned into CHDIR/cmd, ExecStart=None,
write-procs-cf listing non-instances, readfp on Python 3.12); that --conf-dir calls no systemctl
unless --systemd, a failing systemctl is one line, add refuses unknown options and --help is
plain (no test reaches the host's systemctl); that generated units pass
``systemd-analyze verify``; that the launcher runs an instance with Type=notify readiness and
socket activation; and that host mode serves every instance from one process, applies a changed
configuration on SIGHUP without touching the others, survives one instance that cannot start,
and drives all instances through the host PVs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.client import OFFER, close_at_end, connect
from support.launch import PY, short_tmpdir

ROOT = Path(__file__).resolve().parent.parent


def manage(conf: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    # never the host's systemctl: a test must not enable units in /etc/systemd/system
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), PYPROCSERV_SYSTEMCTL="/nonexistent/systemctl")
    full_env.update(env or {})
    result = subprocess.run([PY, "-m", "pyprocserv._apps.manage", "--conf-dir", conf, *args], capture_output=True,
                            text=True, env=full_env, timeout=30, stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def fake_systemctl(directory: str) -> tuple[str, Path]:
    """A systemctl that records its arguments (no systemd runs here)."""
    calls = Path(directory) / "systemctl.calls"
    script = Path(directory) / "systemctl"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    script.chmod(0o755)
    return str(script), calls


def test_add_writes_procservutils_format_with_options_after_name_and_command():
    conf = short_tmpdir()
    systemctl, calls = fake_systemctl(conf)
    result = manage(conf, "--systemd", "add", "-C", "/tmp", "ioc1", "/bin/cat", "-P", "20001", "-e", "A=1",
                    env={"PYPROCSERV_SYSTEMCTL": systemctl})
    assert (Path(conf) / "procServ.d" / "ioc1.conf").read_text() == (
        "\n[ioc1]\ncommand = /bin/cat\nchdir = /tmp\nport = 20001\nenvironment = \"A=1\"\n"
    )
    assert result.stdout == f"# pyprocserv-manage --system --conf-dir {conf} --systemd start ioc1\n"
    gendir = Path(conf) / "procServ.d"
    assert calls.read_text().splitlines() == [
        f"--system enable {gendir}/procserv-ioc1.service {gendir}/procserv-ioc1.socket",
        "--system daemon-reload",
    ]
    # everything after -- is the command's, options included; a bare command stays a PATH lookup
    manage(conf, "--no-systemd", "add", "ioc2", "--", "python3", "-P", "x y")
    assert "command = python3 -P 'x y'\n" in (gendir / "ioc2.conf").read_text()
    # after COMMAND, a word that is not add's option is the command's (as with manage-procs)
    manage(conf, "--no-systemd", "add", "ioc4", "/bin/sh", "-c", "echo hi", "-P", "20004")
    assert (gendir / "ioc4.conf").read_text() == (
        "\n[ioc4]\ncommand = /bin/sh -c 'echo hi'\nchdir = " + os.getcwd() + "\nport = 20004\n"
    )
    # a relative path is taken relative to the instance's directory
    manage(conf, "--no-systemd", "add", "-C", "/usr", "ioc3", "bin/env")
    assert "command = /usr/bin/env\n" in (gendir / "ioc3.conf").read_text()
    again = manage(conf, "--no-systemd", "add", "ioc1", "/bin/true", check=False)
    assert again.returncode == 1 and f"Instance already exists @ {gendir}/ioc1.conf" in again.stderr


def test_restart_restarts_the_unit_through_systemctl():
    conf = short_tmpdir()
    systemctl, calls = fake_systemctl(conf)
    manage(conf, "--systemd", "restart", "ioc1", env={"PYPROCSERV_SYSTEMCTL": systemctl})
    assert calls.read_text() == "--system restart procserv-ioc1.service\n"


def test_status_prints_manage_procs_lines_and_a_table():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text(textwrap.dedent("""\
        [running]
        command = /bin/cat
        [dead]
        command = /bin/cat
        [stopped]
        command = /bin/cat
        [notone]
        instance = 0
        command = /bin/cat
    """))
    run = Path(conf) / "run"
    for name, pid in (("running", os.getpid()), ("dead", 2**22 + 12345)):
        (run / f"procserv-{name}").mkdir(parents=True)
        (run / f"procserv-{name}" / "info").write_text(f"pid:{pid}\ntcp:0.0.0.0:20002\nunix:{conf}/ctl\ntcp:127.0.0.1:20001\n")
    (run / "procserv-running" / "status").write_text(json.dumps(
        {"pid": 4321, "running": True, "child_started_at": time.time() - 3700, "start_count": 3, "users": 2}))
    assert manage(conf, "status").stdout == (
        f"running Running\t0.0.0.0:20002 {conf}/ctl 127.0.0.1:20001\n"
        "dead Dead\n"
        "stopped Stopped\n"
    )
    table = manage(conf, "status", "--table").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CLIENTS", "ENDPOINTS"]
    assert table[1].split()[:6] == ["running", "Running", "4321", "1h01m", "2", "2"]
    assert table[2].split()[:2] == ["dead", "Dead"] and table[3].split()[:2] == ["stopped", "Stopped"]


def test_remove_edits_or_deletes_the_config_file():
    conf = short_tmpdir()
    gendir = Path(conf) / "procServ.d"
    gendir.mkdir()
    (gendir / "two.conf").write_text("[keep]\ncommand = /bin/cat\n\n[drop]\ncommand = /bin/cat\n")
    (gendir / "one.conf").write_text("[alone]\ncommand = /bin/cat\n")
    systemctl, calls = fake_systemctl(conf)
    manage(conf, "--systemd", "remove", "-f", "drop", env={"PYPROCSERV_SYSTEMCTL": systemctl})
    text = (gendir / "two.conf").read_text()
    assert "[keep]" in text and "[drop]" not in text
    assert "--system stop procserv-drop.service" in calls.read_text()
    manage(conf, "--no-systemd", "remove", "-f", "alone")
    assert not (gendir / "one.conf").exists()


def test_write_procs_cf_lists_instances_with_their_real_endpoints():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text(
        "[uds]\ncommand = /bin/cat\n[tcp]\ncommand = /bin/cat\nport = 20005\n[off]\ninstance = 0\ncommand = x\n"
    )
    out = Path(conf) / "procs.cf"
    result = manage(conf, "write-procs-cf", "-f", str(out))
    assert result.stdout == "# systemctl --system reload conserver-server.service\n"
    assert out.read_text() == (
        f"\nconsole uds {{\n    master localhost;\n    type uds;\n    uds {conf}/run/procserv-uds/control;\n}}\n"
        "\nconsole tcp {\n    master localhost;\n    type host;\n    host 127.0.0.1;\n    port 20005;\n}\n"
    )


def failing_systemctl(directory: str) -> str:
    """A systemctl that fails the way it does on a machine without systemd."""
    script = Path(directory) / "systemctl"
    script.write_text("#!/bin/sh\necho 'System has not been booted with systemd as init system (PID 1).' >&2\n"
                      "echo 'Failed to connect to bus: Host is down' >&2\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_conf_dir_calls_no_systemctl_unless_asked():
    conf = short_tmpdir()
    systemctl, calls = fake_systemctl(conf)
    env = {"PYPROCSERV_SYSTEMCTL": systemctl}
    added = manage(conf, "add", "ioc1", "/bin/cat", env=env)
    assert added.stdout == f"# pyprocserv-manage --system --conf-dir {conf} run\n"  # no unit to start
    manage(conf, "remove", "-f", "ioc1", env=env)
    manage(conf, "add", "ioc2", "/bin/cat", env=env)
    manage(conf, "write-procs-cf", env=env)
    assert not calls.exists()  # nothing outside DIR: no units enabled into /etc/systemd/system
    assert (Path(conf) / "conserver" / "procs.cf").read_text().startswith("\nconsole ioc2 {")
    refused = manage(conf, "write-procs-cf", "-R", env=env, check=False)
    assert refused.returncode == 1 and not calls.exists()
    assert refused.stderr == "pyprocserv-manage: write-procs-cf -R: no systemctl with --conf-dir (add --systemd)\n"
    manage(conf, "--systemd", "add", "ioc3", "/bin/cat", env=env)
    assert calls.read_text().splitlines()[-1] == "--system daemon-reload"


@pytest.mark.parametrize("words", [
    ["add", "ioc1", "/bin/cat"],
    ["remove", "-f", "ioc0"],
    ["write-procs-cf", "-R"],
    ["start", "ioc0"],
    ["list"],
])
def test_a_failing_systemctl_is_one_line_and_a_non_zero_exit(words):
    for missing in (False, True):
        conf = short_tmpdir()
        (Path(conf) / "procServ.conf").write_text("[ioc0]\ncommand = /bin/cat\n")
        systemctl = os.path.join(conf, "no-such-systemctl") if missing else failing_systemctl(conf)
        result = manage(conf, "--systemd", *words, env={"PYPROCSERV_SYSTEMCTL": systemctl}, check=False)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        ours = [line for line in result.stderr.splitlines() if line.startswith("pyprocserv-manage:")]
        assert len(ours) == 1 and "systemctl" in ours[0], result.stderr


def test_a_file_that_cannot_be_written_is_one_line_not_a_traceback():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text("[ioc0]\ncommand = /bin/cat\n")
    result = manage(conf, "write-procs-cf", "-f", f"{conf}/procServ.conf/procs.cf", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"pyprocserv-manage: {conf}/procServ.conf") and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_list_without_systemd_lists_the_configured_instances():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text("[ioc1]\ncommand = /bin/cat\n[ioc2]\ncommand = /bin/true -x\n")
    env = {"PYPROCSERV_SYSTEMCTL": failing_systemctl(conf)}
    for flags in (["--no-systemd"], []):  # --conf-dir alone calls no systemctl either
        result = manage(conf, *flags, "list", env=env)
        assert result.stderr == ""
        assert result.stdout == "procserv-ioc1.service ioc1 /bin/cat\nprocserv-ioc2.service ioc2 /bin/true -x\n"


@pytest.mark.parametrize("words", [
    ["-p", "21009", "iocx", "python3", "st.py"],
    ["iocx", "--prot=21009", "python3", "st.py"],
])
def test_add_refuses_an_unknown_option(words):
    conf = short_tmpdir()
    result = manage(conf, "add", *words, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"unknown option {words[0] if words[0].startswith('-') else '--prot'} " in result.stderr
    assert "add --help" in result.stderr
    assert not (Path(conf) / "procServ.d").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_add_help_lists_its_options(flag):
    conf = short_tmpdir()
    result = manage(conf, "add", flag)
    for option in ("--chdir", "--port", "--user", "--group", "--environment", "--env-file", "--force",
                   "--autostart"):
        assert option in result.stdout
    assert result.stdout.startswith("usage: pyprocserv-manage add")
    assert not (Path(conf) / "procServ.d").exists()
    manage(conf, "--no-systemd", "add", "ioc1", "/usr/bin/tool", flag)  # after COMMAND: the command's
    assert f"command = /usr/bin/tool {flag}\n" in (Path(conf) / "procServ.d" / "ioc1.conf").read_text()


@pytest.mark.parametrize("words", [["--help"], ["add", "--help"], ["status", "--help"], ["run", "--help"]])
def test_help_texts_are_plain(words):
    result = manage(short_tmpdir(), *words)
    assert "``" not in result.stdout and result.stdout.startswith("usage: pyprocserv-manage")


def test_the_launchers_help_is_plain():
    result = subprocess.run([PY, "-m", "pyprocserv._apps.launch", "--help"], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0 and result.stdout.startswith("usage: pyprocserv-launcher")
    assert "``" not in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
                    reason="systemd-analyze is not installed")
def test_generated_units_pass_systemd_analyze_verify():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text(textwrap.dedent("""\
        [uds]
        command = /bin/cat
        chdir = /tmp
        environment = "A=1" "B=2 3"
        watchdog_sec = 30
        [tcp]
        command = /bin/cat
        chdir = /tmp
        port = 20006
        socket_activation = 0
        host = anyhost
    """))
    outdir = Path(conf) / "units"
    manage(conf, "generate", str(outdir))
    units = sorted(p.name for p in outdir.iterdir())
    assert units == ["procserv-tcp.service", "procserv-uds.service", "procserv-uds.socket"]
    service = (outdir / "procserv-uds.service").read_text()
    assert "Type=notify\n" in service and "ExecReload=/bin/kill -HUP $MAINPID\n" in service
    assert "WatchdogSec=30\n" in service and 'Environment="A=1" "B=2 3"\n' in service
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert "None" not in exec_start and exec_start.endswith(f"--system --conf-dir {conf} uds")
    socket_unit = (outdir / "procserv-uds.socket").read_text()
    assert f"ListenStream={conf}/run/procserv-uds/control\n" in socket_unit
    assert "FileDescriptorName=control\n" in socket_unit
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, sorted(outdir.iterdir()))],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if "Special user nobody" not in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_the_launcher_refuses_unknown_instances_with_procserv_launchers_words():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text("[off]\ninstance = 0\ncommand = x\n[nocmd]\nchdir = /\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name, message in (("nope", "Instance 'nope' not found\n"), ("off", "'off' not an instance\n"),
                          ("nocmd", "instance 'nocmd' missing command=\n")):
        result = subprocess.run([PY, "-m", "pyprocserv._apps.launch", "--conf-dir", conf, name], capture_output=True,
                                text=True, env=env, timeout=30)
        assert (result.returncode, result.stderr) == (1, message)


async def test_the_launcher_tells_systemd_ready_status_and_stopping(nursery):
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_text(f"[ioc]\ncommand = /bin/cat\nchdir = {conf}\n")
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(f"{conf}/notify")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=f"{conf}/notify", WATCHDOG_USEC="400000")
    process = await trio.lowlevel.open_process([PY, "-m", "pyprocserv._apps.launch", "--conf-dir", conf, "ioc"],
                                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    env["WATCHDOG_PID"] = str(process.pid)  # not passed: any pid is ours then
    try:
        messages = []
        with trio.fail_after(20):
            while not any("READY=1" in m for m in messages):
                messages.append((await notify.recv(4096)).decode())
            ready = next(m for m in messages if "READY=1" in m)
            assert "STATUS=ioc: running, pid " in ready
            while not any(m == "WATCHDOG=1" for m in messages):
                messages.append((await notify.recv(4096)).decode())
        info = (Path(conf) / "run" / "procserv-ioc" / "info").read_text().splitlines()
        assert info[0] == f"pid:{process.pid}"  # exec'd: the launcher's pid is the server's (MAINPID)
        client = await connect(info[1])
        close_at_end(nursery, client)
        greeting = await client.expect(OFFER)
        assert b"@@@ Use ^D to logout from procServ server\r\n" in greeting
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            while not any("STOPPING=1" in m for m in messages):
                messages.append((await notify.recv(4096)).decode())
            assert await process.wait() == 0
    finally:
        notify.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_socket_activation_takes_the_socket_systemd_holds(nursery):
    conf = short_tmpdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(f"{conf}/ctl")
    listener.listen()
    os.set_inheritable(listener.fileno(), True)
    # the socket at fd 3, LISTEN_PID set to the server's own pid (bash execs into it)
    command = (f"exec 3<&{listener.fileno()}; LISTEN_FDS=1 LISTEN_FDNAMES=control LISTEN_PID=$$ exec "
               f"{PY} -m pyprocserv -f -q -I {conf}/info -P 20099 /bin/sh -c 'echo ACTIVATED $LISTEN_FDS.'")
    with open(f"{conf}/stderr", "wb") as err:
        process = await trio.lowlevel.open_process(["/bin/bash", "-c", command], pass_fds=(listener.fileno(),),
                                                   env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    listener.close()  # the server has it now, as under systemd
    try:
        with trio.fail_after(20):
            while not os.path.exists(f"{conf}/info"):
                assert process.poll() is None, Path(f"{conf}/stderr").read_text()
                await trio.sleep(0.05)
        assert Path(f"{conf}/info").read_text().splitlines()[1:] == [f"unix:{conf}/ctl"]  # not 20099
        client = await connect(f"unix:{conf}/ctl")
        close_at_end(nursery, client)
        await client.expect(OFFER)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0
        assert os.path.exists(f"{conf}/ctl"), "an activated socket's file belongs to systemd"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- host mode ----------------------------------------------------------------------------------


class HostProcess:
    def __init__(self, conf: str, *args: str, env: dict | None = None) -> None:
        self.conf = conf
        self.args = args
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.process: trio.Process | None = None
        self.stderr = Path(conf) / "host.stderr"

    async def __aenter__(self) -> "HostProcess":
        with open(self.stderr, "wb") as err:
            self.process = await trio.lowlevel.open_process(
                [PY, "-m", "pyprocserv._apps.manage", "--conf-dir", self.conf, "run", *self.args],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(20):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
                raise AssertionError("host mode did not stop on SIGTERM")

    def status(self) -> dict[str, str]:
        out = {}
        for line in manage(self.conf, "status").stdout.splitlines():
            name, state = line.split()[:2]
            out[name] = state
        return out

    def info(self, name: str) -> list[str]:
        return (Path(self.conf) / "run" / f"procserv-{name}" / "info").read_text().splitlines()

    async def wait_for(self, expected: dict[str, str], timeout: float = 20) -> None:
        with trio.fail_after(timeout):
            while self.status() != expected:
                await trio.sleep(0.1)


def write_conf(conf: str, text: str) -> None:
    (Path(conf) / "procServ.conf").write_text(textwrap.dedent(text))


async def test_host_mode_serves_every_instance_and_applies_a_new_config_on_sighup(nursery):
    conf = short_tmpdir()
    write_conf(conf, """\
        [alpha]
        command = /bin/sh -c 'echo alpha up; exec cat'
        [beta]
        command = /bin/cat
        [gamma]
        command = /bin/cat
    """)
    async with HostProcess(conf) as host:
        await host.wait_for({"alpha": "Running", "beta": "Running", "gamma": "Running"})
        client = await connect(host.info("alpha")[1])
        close_at_end(nursery, client)
        greeting = await client.expect(OFFER)
        assert b'@@@ Child "alpha" PID: ' in greeting
        server_pids = {name: int(host.info(name)[0][4:]) for name in ("alpha", "beta", "gamma")}
        assert len(set(server_pids.values())) == 1  # one process serves them all
        beta_child = json.loads((Path(conf) / "run" / "procserv-beta" / "status").read_text())["pid"]
        write_conf(conf, """\
            [alpha]
            command = /bin/sh -c 'echo alpha up; exec cat'
            [beta]
            command = /bin/cat
            [gamma]
            command = /bin/sleep 1000
            [delta]
            command = /bin/cat
        """)  # gamma changed, delta new
        host.process.send_signal(signal.SIGHUP)
        await host.wait_for({"alpha": "Running", "beta": "Running", "gamma": "Running", "delta": "Running"})
        write_conf(conf, """\
            [beta]
            command = /bin/cat
            [gamma]
            command = /bin/sleep 1000
            [delta]
            command = /bin/cat
        """)  # alpha removed
        host.process.send_signal(signal.SIGHUP)
        await client.expect_eof()  # alpha's server stopped; its clients are closed
        await host.wait_for({"beta": "Running", "gamma": "Running", "delta": "Running"})
        status = json.loads((Path(conf) / "run" / "procserv-beta" / "status").read_text())
        assert status["pid"] == beta_child and status["start_count"] == 1, "beta was left alone"
        assert "(as /bin/sleep)" in (Path(conf) / "log" / "gamma.log").read_text()


BAD_CONFIGS = {
    "a key before the first section": b"command = /bin/cat\n[one]\ncommand = /bin/cat\n",
    "log_max_bytes = ten": b"[one]\ncommand = /bin/cat\nlog_max_bytes = ten\n",
    "a duplicate section": b"[one]\ncommand = /bin/cat\n[one]\ncommand = /bin/cat\n",
    "autostart = perhaps": b"[one]\ncommand = /bin/cat\nautostart = perhaps\n",
    "junk bytes": b"[one]\ncommand = /bin/cat\n\xff\xfe\x00\x81junk\n",
}


INI_PIECES = st.sampled_from([
    "[one]\n", "[two]\n", "[one]\n", "command = /bin/cat\n", "autostart = perhaps\n", "autostart = 0\n",
    "instance = maybe\n", "port = 20000\n", "command = %(nope)s\n", "  continued\n", "key\n", "=\n", "; c\n",
    "[\n", "]\n", "\n", "\x00", "\xff",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.one_of(INI_PIECES, st.text(max_size=12)), max_size=12),
       junk=st.binary(max_size=8))
def test_any_config_file_reads_or_fails_with_a_config_error(tmp_path, pieces, junk):
    from pyprocserv._apps.instances import ConfigError, Layout, instances

    (tmp_path / "procServ.conf").write_bytes("".join(pieces).encode("utf-8", "surrogatepass") + junk)
    try:
        found = instances(Layout(conf_dir=str(tmp_path)))
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line, for stderr and HOST:SUMMARY
    else:
        assert all(instance.name for instance in found)


def child_pids(conf: str, *names: str) -> dict[str, int]:
    return {name: json.loads((Path(conf) / "run" / f"procserv-{name}" / "status").read_text())["pid"]
            for name in names}


async def test_host_mode_reload_of_a_bad_config_leaves_every_instance_running_then_applies_a_good_one():
    conf = short_tmpdir()
    write_conf(conf, """\
        [one]
        command = /bin/cat
        [two]
        command = /bin/cat
    """)
    async with HostProcess(conf) as host:
        await host.wait_for({"one": "Running", "two": "Running"})
        before = child_pids(conf, "one", "two")
        for count, (what, text) in enumerate(BAD_CONFIGS.items(), 1):
            (Path(conf) / "procServ.conf").write_bytes(text)
            host.process.send_signal(signal.SIGHUP)
            with trio.fail_after(10):
                while host.stderr.read_text(errors="replace").count("configuration not applied") < count:
                    await trio.sleep(0.05)
            assert host.process.returncode is None, what
            assert child_pids(conf, "one", "two") == before, what
        err = host.stderr.read_text(errors="replace")
        assert "Traceback" not in err
        assert "procServ.conf: File contains no section headers" in err
        assert "[one]: Not a boolean: perhaps" in err
        assert "not UTF-8 text" in err
        assert "[one]: not a size: 'ten'" in err
        write_conf(conf, """\
            [one]
            command = /bin/cat
            [two]
            command = /bin/cat
            [three]
            command = /bin/cat
        """)
        host.process.send_signal(signal.SIGHUP)
        await host.wait_for({"one": "Running", "two": "Running", "three": "Running"})
        assert {k: v for k, v in child_pids(conf, "one", "two").items()} == before


def test_host_mode_refuses_to_start_on_a_bad_config_with_a_clear_message():
    conf = short_tmpdir()
    (Path(conf) / "procServ.conf").write_bytes(BAD_CONFIGS["autostart = perhaps"])
    result = manage(conf, "run", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("pyprocserv-manage: cannot read the configuration: [one]: Not a boolean: perhaps")
    assert "Traceback" not in result.stderr


async def test_host_mode_keeps_serving_when_one_instance_cannot_start():
    conf = short_tmpdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_conf(conf, f"""\
            [good]
            command = /bin/cat
            [blocked]
            command = /bin/cat
            port = {port}
        """)
        async with HostProcess(conf) as host:
            await host.wait_for({"good": "Running", "blocked": "Stopped"})
            with trio.fail_after(10):
                while f"blocked: cannot listen on 127.0.0.1:{port}: Address already in use; retrying" \
                        not in host.stderr.read_text():
                    await trio.sleep(0.1)
            assert "Traceback" not in host.stderr.read_text()


async def test_host_pvs_count_and_drive_the_autostart_instances(ca_env):
    from test_pvs import ca_read, ca_write

    conf = short_tmpdir()
    write_conf(conf, """\
        [one]
        command = /bin/cat
        [two]
        command = /bin/cat
        [once]
        command = /bin/cat
        options = --noautorestart
        [manual]
        command = /bin/cat
        autostart = 0
    """)
    async with HostProcess(conf, "--pv-prefix", "HOSTX:", env=ca_env) as host:
        await host.wait_for({"one": "Running", "two": "Running", "once": "Running", "manual": "Running"})
        with trio.fail_after(20):
            while await _read_or_none(ca_read, "HOSTX:NRUNNING") != 3:
                await trio.sleep(0.2)
        assert await ca_read("HOSTX:NPROCS") == 4
        assert await ca_read("HOSTX:one:STATUS", as_string=True) == "Running"
        assert await ca_read("HOSTX:manual:STATUS", as_string=True) == "Shutdown"  # waits for a start
        await ca_write("HOSTX:ALL", 0)  # Stop: returns once every autostart instance is down
        assert await ca_read("HOSTX:NRUNNING") == 0
        assert await ca_read("HOSTX:two:AUTORESTART", as_string=True) == "Off"
        await ca_write("HOSTX:ALL", 1)  # Run
        assert await ca_read("HOSTX:NRUNNING") == 3
        # Run puts each instance back to its configured restart mode: a crash afterwards restarts
        assert await ca_read("HOSTX:two:AUTORESTART", as_string=True) == "On"
        assert await ca_read("HOSTX:once:AUTORESTART_MODE", as_string=True) == "Off"  # its options say so
        assert await ca_read("HOSTX:manual:PID") == 0  # not marked autostart: untouched
        summary = await read_summary()
        assert b"manual Shutdown -" in summary and b"one Running" in summary
        (Path(conf) / "procServ.conf").write_bytes(BAD_CONFIGS["a duplicate section"])
        host.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while b"\n# configuration not applied: " not in summary:
                await trio.sleep(0.2)
                summary = await read_summary()
        assert b"section 'one' already exists" in summary.rsplit(b"\n", 1)[1], summary
        assert await ca_read("HOSTX:NRUNNING") == 3  # every instance goes on as it was


# 2000 lines in 10 bursts, so the log gets several writes however the pty chunks them
CHATTY = ("/bin/sh -c 'i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); "
          "[ $((i %% 200)) -ne 0 ] || sleep 0.05; done; exec cat'")  # %% is the INI files' %


def read_or_empty(path: Path) -> bytes:
    """A log that is between its rename and its new file reads as empty, as `tail -F` sees it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def test_host_mode_rotates_each_log_by_size_and_loses_no_line():
    conf = short_tmpdir()
    write_conf(conf, f"""\
        [chatty]
        command = {CHATTY}
        log_max_bytes = 2K
        log_backups = 30
        [quiet]
        command = /bin/cat
    """)
    async with HostProcess(conf, "--log-max-bytes", "100M") as host:
        await host.wait_for({"chatty": "Running", "quiet": "Running"})
        logdir = Path(conf) / "log"
        with trio.fail_after(10):
            while b"line 1999" not in read_or_empty(logdir / "chatty.log"):
                await trio.sleep(0.1)
        files = sorted(logdir.glob("chatty.log*"))
        assert len(files) >= 5, files  # 10 bursts of ~2.5 KB past a 2 KB limit
        text = b"".join((logdir / name).read_bytes() for name in
                        [f"chatty.log.{n}" for n in range(len(files) - 1, 0, -1)] + ["chatty.log"])
        lines = [line for line in text.split(b"\r\n") if line.startswith(b"line ")]
        assert lines == [b"line %d" % n for n in range(2000)]  # every line, in order, across rotations
        assert sorted(f.name for f in logdir.glob("quiet.log*")) == ["quiet.log"]  # run's own limit: 100M


TIME_PV_CHILD = """\
import sys, time
from caproto.server import PVGroup, pvproperty, run
class Child(PVGroup):
    t = pvproperty(value=time.time() - 500, name="MAN:timed_time", read_only=True)  # last good work: 500 s ago
print("serving", flush=True)
run(Child(prefix="TGTX:").pvdb, module_name="caproto.asyncio.server", interfaces=["127.0.0.1"])
"""


async def test_manager_pvs_control_and_heartbeat_each_instance_as_the_supervisor_ioc_manager(ca_env):
    from support.ports import free_port
    from test_pvs import ca_read, ca_write

    conf = short_tmpdir()
    child_port = free_port(udp=True)  # the child's own CA server, as the manager's IOCs have
    (Path(conf) / "child.py").write_text(TIME_PV_CHILD)
    write_conf(conf, f"""\
        [quiet]
        command = /bin/sh -c 'echo up; exec cat'
        holdoff = 0
        [ticker]
        command = /bin/sh -c 'while :; do echo tick; sleep 0.2; done'
        [timed]
        command = {PY} {conf}/child.py
        time_pv = TGTX:MAN:timed_time
        environment = "EPICS_CA_SERVER_PORT={child_port}"
        [manual]
        command = /bin/cat
        autostart = 0
    """)
    env = dict(ca_env, EPICS_CA_ADDR_LIST=f"127.0.0.1:{ca_env['EPICS_CA_SERVER_PORT']} 127.0.0.1:{child_port}")
    async with HostProcess(conf, "--manager-pvs", "TGTX", env=env) as host:
        await host.wait_for({"quiet": "Running", "ticker": "Running", "timed": "Running", "manual": "Running"})
        with trio.fail_after(20):
            while await _read_or_none(ca_read, "TGTX:MAN:quiet_control") != "Run":
                await trio.sleep(0.2)
        assert await ca_read("TGTX:MAN:manual_control", as_string=True) == "Stop"  # waits for a start
        assert await ca_read("TGTX:MAN:manual_hb") == 999
        assert await ca_severity("TGTX:MAN:manual_hb") == 2  # MAJOR: no child runs
        assert await ca_severity("TGTX:MAN:manual_control") == 1  # Stop is MINOR, as that manager has it
        assert await ca_severity("TGTX:MAN:quiet_control") == 0
        with trio.fail_after(20):  # the child's _time PV says 500 s ago
            while await ca_read("TGTX:MAN:timed_hb") < 495:
                await trio.sleep(0.2)
        await trio.sleep(2.5)
        assert await ca_read("TGTX:MAN:ticker_hb") <= 1  # output 5 times a second
        assert await ca_read("TGTX:MAN:quiet_hb") >= 2  # silent since its first line

        await ca_write("TGTX:MAN:quiet_control", 0)  # Stop: completes once the child is down
        assert await ca_read("TGTX:MAN:quiet_control", as_string=True) == "Stop"
        assert await ca_severity("TGTX:MAN:quiet_control") == 1
        with trio.fail_after(5):
            while await ca_read("TGTX:MAN:quiet_hb") != 999:
                await trio.sleep(0.2)
        await ca_write("TGTX:MAN:quiet_control", 1)  # Run
        assert await ca_read("TGTX:MAN:quiet_control", as_string=True) == "Run"
        assert await ca_severity("TGTX:MAN:quiet_control") == 0
        first = await child_pid_soon(conf, "quiet")
        await ca_write("TGTX:MAN:quiet_control", 2)  # Reset: a new child; the PV reads Run again
        assert await ca_read("TGTX:MAN:quiet_control", as_string=True) == "Run"
        second = await child_pid_soon(conf, "quiet", not_=first)
        os.kill(second, signal.SIGKILL)  # Run restored auto restart: the crashed child comes back
        await child_pid_soon(conf, "quiet", not_=second)

        await ca_write("TGTX:MAN:all", 0)  # every autostart instance, and only those
        for name in ("quiet", "ticker", "timed"):
            assert await ca_read(f"TGTX:MAN:{name}_control", as_string=True) == "Stop"
        await ca_write("TGTX:MAN:manual_control", 1)
        await ca_write("TGTX:MAN:all", 1)
        for name in ("quiet", "ticker", "manual"):
            assert await ca_read(f"TGTX:MAN:{name}_control", as_string=True) == "Run"


async def test_logs_lists_shows_and_follows_and_restart_gives_a_new_child():
    conf = short_tmpdir()
    write_conf(conf, f"""\
        [chatty]
        command = {CHATTY}
        log_max_bytes = 2K
        holdoff = 0
        [off]
        command = /bin/sh -c 'echo off up; exec cat'
        options = --noautorestart
    """)
    async with HostProcess(conf) as host:
        await host.wait_for({"chatty": "Running", "off": "Running"})
        with trio.fail_after(10):
            while b"line 1999" not in (Path(conf) / "log" / "chatty.log").read_bytes():
                await trio.sleep(0.1)
        listing = manage(conf, "logs").stdout.splitlines()
        assert listing[0].startswith("chatty\tchatty.log ") and "chatty.log.1 " in listing[0]
        assert listing[0].endswith(f"\t{conf}/log") and listing[1].startswith("off\toff.log ")
        assert manage(conf, "logs", "chatty", "-n", "2").stdout == "line 1998\nline 1999\n"  # text mode reads CRLF as LF
        assert manage(conf, "logs", "nosuch", check=False).returncode == 1

        follower = await trio.lowlevel.open_process(
            [PY, "-m", "pyprocserv._apps.manage", "--conf-dir", conf, "logs", "-f", "-n", "1", "off"],
            env=host.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            first = child_pids(conf, "off")["off"]
            result = manage(conf, "--no-systemd", "restart", "off")  # auto restart OFF: ^X, then ^R
            second = await child_pid_soon(conf, "off", not_=first)
            assert result.stdout == f"off: restarted, child PID {second}\n"
            seen = b""
            with trio.fail_after(10):  # -f shows what came after its start
                while b"The PID of new child" not in seen:
                    seen += await follower.stdout.receive_some()
            assert seen.startswith(b"off up\r\n")  # -n 1: the last line before following
            assert b"Received a sigChild" in seen and seen.endswith(b"off up\r\n")
        finally:
            follower.kill()
            await follower.wait()
            await follower.stdout.aclose()
        first = child_pids(conf, "chatty")["chatty"]
        result = manage(conf, "--no-systemd", "restart", "chatty")  # auto restart ON: the server restarts it
        assert result.stdout.startswith("chatty: restarted, child PID ")
        assert await child_pid_soon(conf, "chatty", not_=first) == int(result.stdout.split()[-1])
    assert manage(conf, "--no-systemd", "restart", "off", check=False).returncode == 1  # nothing runs


async def ca_severity(name: str) -> int:
    from caproto import ChannelType
    from caproto.sync.client import read

    response = await trio.to_thread.run_sync(functools.partial(
        read, name, data_type=ChannelType.TIME_STRING, timeout=5, repeater=False))
    return int(response.metadata.severity)


async def child_pid_soon(conf: str, name: str, not_: int | None = None) -> int:
    """The instance's child pid once its status file names one other than ``not_``."""
    with trio.fail_after(20):
        while child_pids(conf, name)[name] in (None, not_):
            await trio.sleep(0.1)
    return child_pids(conf, name)[name]


async def read_summary() -> bytes:
    from caproto.sync.client import read

    response = await trio.to_thread.run_sync(functools.partial(read, "HOSTX:SUMMARY", repeater=False))
    return bytes(response.data).rstrip(b"\0")


async def _read_or_none(read, name):
    try:
        return await read(name)
    except Exception:
        return None


def test_socket_units_listen_where_pyprocserv_would():
    from pyprocserv._apps.instances import Instance, Layout
    from pyprocserv._apps.units import socket_unit

    layout = Layout(conf_dir="/c")

    def listen(**kw) -> str:
        text = socket_unit(Instance(name="x", command="/bin/cat", **kw), layout)
        return next(line for line in text.splitlines() if line.startswith("ListenStream="))

    assert listen(port="20000") == "ListenStream=127.0.0.1:20000"
    assert listen(port="192.0.2.7:20000") == "ListenStream=127.0.0.1:20000"  # control: loopback only
    assert listen(port="192.0.2.7:20000", options="--allow") == "ListenStream=192.0.2.7:20000"
    assert listen(port="[fd00::5]:20001") == "ListenStream=[::1]:20001"
    assert listen(port="[fd00::5]:20001", options="--allow") == "ListenStream=[fd00::5]:20001"
    assert listen() == "ListenStream=/c/run/procserv-x/control"


def test_procserv_version_key_reaches_the_instances_command_line():
    import configparser

    from pyprocserv._core.cli import parse_args
    from pyprocserv._apps.instances import DEFAULTS, Instance, Layout

    parser = configparser.ConfigParser(DEFAULTS)
    parser.read_string("[old]\ncommand = /bin/cat\n[slac]\ncommand = /bin/cat\nprocserv_version = 2.8\n")
    layout = Layout(conf_dir="/c")
    argv = {name: Instance.from_section(parser, name).argv(layout) for name in ("old", "slac")}
    assert "--procserv-version" not in argv["old"]
    assert argv["slac"][argv["slac"].index("--procserv-version") + 1] == "2.8"
    # host mode parses the same command line: the dialect lands in the Config
    assert parse_args(argv["slac"], environ={}, cwd="/").config.procserv_version == "2.8"
