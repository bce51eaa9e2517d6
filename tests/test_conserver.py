"""conserver in front of pyprocserv, for real: the console server EPICS sites put before procServ.

procServUtils' story (behaviour §8.4, §8.5): ``manage-procs write-procs-cf`` lists every
instance for conserver, and ``console NAME`` reaches any IOC by its name. Here Debian's conserver
and console (``conserver-server``, ``conserver-client``; ``.ci/run`` installs them) stand in front
of ``pyprocserv-manage run`` (host mode), with the file ``pyprocserv-manage write-procs-cf`` wrote:

* One host: a conserver on 127.0.0.1 serves an instance on a UNIX socket and one on a TCP port.
  The console client, under a pseudo-terminal, replays procServ's greeting, types into each child
  and reads its answer, spies on a console another client writes to, and lists both consoles.
* Two hosts: a network namespace joined by a veth pair is the second host, with its own
  pyprocserv and conserver. The first conserver's config names the second conserver as the
  ``master`` of the second host's IOC (``write-procs-cf --master``), so ``console -M FIRST NAME``
  is redirected there. Needs root and ``ip`` (iproute2). Loopback addresses cannot stand in for
  a second host: Debian's conserver (built with IPv6) takes a console as its own whenever its
  master is an address of any local interface, whatever -M it binds, so two conservers on one
  network stack never redirect to each other. Only the network is separate; both hosts share
  the file system, which UNIX socket paths do not mind.
* A bare TCP port (``port = 20000``) on a host where ``localhost`` resolves to ::1 first: the
  second host, with an IPv6 address and its own /etc/hosts.

Each conserver runs in the foreground (no -d) with its own config, empty password file, console
logs and stderr in a temp dir, on a free port, with the client's address ``trusted`` (no
password). Its pid file is compiled in (/run/conserver/conserver.pid): as root it runs in a private
mount namespace with a temp dir bound over /run/conserver, so a system conserver's pid file is
never touched. The client reads no site or user configuration (-n, -C /dev/null) and both sides
skip TLS (-E). Every process is stopped at the end, and the namespace removed, whatever happens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest
import trio

from support.launch import PY, short_tmpdir
from support.ports import free_port

ptyprocess = pytest.importorskip("ptyprocess")

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # conserver and ip live in sbin
CONSERVER = shutil.which("conserver", path=SEARCH)
CONSOLE = shutil.which("console", path=SEARCH)
IP = shutil.which("ip", path=SEARCH)
UNSHARE = shutil.which("unshare", path=SEARCH)
IN_CI = os.environ.get("CI") == "true"
PIDFILE = Path("/run/conserver/conserver.pid")  # compiled into Debian's conserver; no option changes it
CLIENT = ["-n", "-C", "/dev/null", "-E"]  # no /etc/conserver/console.cf (another master and port), no TLS
DISCONNECT = b"\x05c."  # ^Ec. : console's escape to leave
Binds = tuple[tuple[Path, str], ...]  # (file, path it is seen at) in a private mount namespace

pytestmark = pytest.mark.skipif(
    not (CONSERVER and CONSOLE) and not IN_CI,
    reason="conserver is not installed (apt-get install conserver-server conserver-client); CI installs it",
)


def _needs_conserver() -> None:
    assert CONSERVER and CONSOLE, "CI must install conserver-server and conserver-client"


@functools.cache
def _private_mounts() -> bool:
    """Whether conserver can get a private /run/conserver (root, and mount namespaces work)."""
    if os.geteuid() != 0 or UNSHARE is None or not PIDFILE.parent.is_dir():
        return False
    return subprocess.run([UNSHARE, "--mount", "true"], capture_output=True, timeout=10).returncode == 0


class Terminal:
    """The console client under a pseudo-terminal: types keys and waits to see text."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = ptyprocess.PtyProcess.spawn(argv, dimensions=(24, 80), env=ENV)
        self.seen = b""
        self.eof = False

    async def expect(self, text: bytes, timeout: float = 10) -> bytes:
        """Everything seen so far, once ``text`` is in it."""
        with trio.move_on_after(timeout):
            while text not in self.seen and not self.eof:
                await trio.lowlevel.wait_readable(self.proc.fd)
                try:
                    self.seen += self.proc.read(4096)
                except EOFError:
                    self.eof = True
        assert text in self.seen, f"never saw {text!r}; screen: {self.seen[-800:]!r}"
        return self.seen

    def type(self, keys: bytes) -> None:
        self.proc.write(keys)

    async def leave(self) -> None:
        """^Ec. as a person would; the client says so and exits 0."""
        self.type(DISCONNECT)
        await self.expect(b"[disconnect]")
        with trio.fail_after(10):
            while self.proc.isalive():
                await trio.sleep(0.05)
        assert self.proc.exitstatus == 0, self.seen[-300:]

    def close(self) -> None:
        self.proc.close(force=True)


class Lab:
    """A short temp dir for all files; everything started here is stopped at the end."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.stack = stack
        self.dir = Path(short_tmpdir())
        stack.callback(shutil.rmtree, self.dir, ignore_errors=True)  # registered first: runs last
        self._pidfile_guarded = False

    def output(self, name: str) -> str:
        return (self.dir / f"{name}.out").read_text(errors="replace")

    async def spawn(self, name: str, argv: list[str], *, must_stop: bool = False) -> trio.Process:
        """Start ``argv`` with stdout and stderr in NAME.out; SIGTERM (then SIGKILL) it at the end."""
        with open(self.dir / f"{name}.out", "wb") as out:
            process = await trio.lowlevel.open_process(  # a session of its own: killpg gets its helpers too
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=self.dir,
                start_new_session=True)
        self.stack.push_async_callback(self._stop, name, process, must_stop)
        return process

    async def _stop(self, name: str, process: trio.Process, must_stop: bool) -> None:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
            stuck = process.returncode is None
            if stuck:
                process.kill()
                await process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind (conserver's group processes)
            if stuck and must_stop:
                raise AssertionError(f"{name} did not stop on SIGTERM:\n{self.output(name)}")

    def terminal(self, *args: str) -> Terminal:
        term = Terminal([CONSOLE, *CLIENT, *args])
        self.stack.callback(term.close)
        return term

    def private_mounts(self, directory: Path, argv: list[str], binds: Binds = ()) -> list[str]:
        """``argv`` in a mount namespace of its own: its pid file lands in ``directory``, and each
        (file, path) of ``binds`` is seen at path. Without one, the system's pid file is restored
        afterwards."""
        if _private_mounts():
            words = [str(directory), str(PIDFILE.parent), *(str(word) for pair in binds for word in pair)]
            script = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@"'
            return [UNSHARE, "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", *words, "--",
                    *argv]
        assert not binds, "bind mounts need root and unshare --mount"
        if os.access(PIDFILE.parent, os.W_OK) and not self._pidfile_guarded:
            self._pidfile_guarded = True
            saved = PIDFILE.read_bytes() if PIDFILE.exists() else None

            def restore() -> None:
                if saved is None:
                    PIDFILE.unlink(missing_ok=True)
                else:
                    PIDFILE.write_bytes(saved)

            self.stack.callback(restore)
        return argv


@pytest.fixture
async def lab():
    async with contextlib.AsyncExitStack() as stack:
        yield Lab(stack)


class SecondHost(NamedTuple):
    ns: str  # the network namespace
    here: str  # this host's address on the veth pair
    there: str  # the second host's
    veth: str  # the second host's end of the pair


@pytest.fixture
def second_host():
    """A second network stack (a network namespace) joined to this one by a veth pair.

    Its addresses come from TEST-NET-2 (198.51.100.0/24, documentation only), one random /30.
    """
    if os.geteuid() != 0 or IP is None:
        why = "a network namespace as the second host needs root and ip (iproute2)"
        if IN_CI:
            pytest.fail(f"{why}; CI runs as root and must install iproute2")
        pytest.skip(why)
    tag = str(random.randrange(10**6))
    ns, veth_here, veth_there = f"pps{tag}", f"ppsa{tag}", f"ppsb{tag}"
    k = random.randrange(64)
    here, there = f"198.51.100.{4 * k + 1}", f"198.51.100.{4 * k + 2}"
    steps = [
        ["netns", "add", ns],
        ["link", "add", veth_here, "type", "veth", "peer", "name", veth_there, "netns", ns],
        ["addr", "add", f"{here}/30", "dev", veth_here],
        ["link", "set", veth_here, "up"],
        ["-n", ns, "addr", "add", f"{there}/30", "dev", veth_there],
        ["-n", ns, "link", "set", veth_there, "up"],
        ["-n", ns, "link", "set", "lo", "up"],
    ]

    def ip(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)

    try:
        for step in steps:
            result = ip(step)
            if result.returncode:
                why = f"no network namespace for the second host: `ip {' '.join(step)}`: {result.stderr.strip()}"
                if IN_CI:
                    pytest.fail(why)
                pytest.skip(why)
        yield SecondHost(ns, here, there, veth_there)
    finally:
        for pid in ip(["netns", "pids", ns]).stdout.split():  # anything left in it is ours
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip(["netns", "delete", ns])  # takes the veth pair with it
        ip(["link", "delete", veth_here])


# -- pyprocserv and conserver ----------------------------------------------------------------


async def manage(conf: Path, *args: str) -> str:
    result = await trio.run_process([PY, "-m", "pyprocserv._apps.manage", "--conf-dir", str(conf), *args],
                                    capture_stdout=True, capture_stderr=True, check=False, env=ENV)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


async def serve(lab: Lab, name: str, conf: Path, instances: list[str], netns: str | None = None) -> dict[str, int]:
    """Host mode for ``conf`` (in ``netns`` if given); the child pids once every instance serves."""
    argv = [PY, "-m", "pyprocserv._apps.manage", "--conf-dir", str(conf), "run"]
    await lab.spawn(name, [IP, "netns", "exec", netns, *argv] if netns else argv, must_stop=True)
    with trio.move_on_after(15):
        while True:
            pids = {}
            for instance in instances:
                run = conf / "run" / f"procserv-{instance}"
                try:
                    info = (run / "info").read_text().splitlines()
                    pid = json.loads((run / "status").read_text()).get("pid")
                except (OSError, ValueError):
                    continue
                if len(info) >= 2 and pid:
                    pids[instance] = pid
            if len(pids) == len(instances):
                return pids
            await trio.sleep(0.05)
    raise AssertionError(f"{name} never served {instances}:\n{lab.output(name)}")


async def query(master: str, port: int, *args: str) -> str:
    """A one-shot console command (-u, -i, -x): its stdout."""
    result = await trio.run_process([CONSOLE, *CLIENT, "-M", master, "-p", str(port), *args],
                                    capture_stdout=True, capture_stderr=True, check=False, env=ENV)
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def states(listing: str) -> dict[str, str]:
    """``console -u`` lines (`` NAME   up   <none>``) as NAME: state."""
    return {words[0]: words[1] for words in map(str.split, listing.splitlines()) if len(words) >= 2}


def details(listing: str) -> dict[str, list[str]]:
    """``console -i`` lines as NAME: fields (host,pid,fd : type : details : users : state : perm : log...)."""
    return {line.split(":")[0]: line.split(":") for line in listing.splitlines() if line.count(":") > 8}


class ConsoleDown(AssertionError):
    """conserver gave up on a console ("forcing down"); it retries once a minute only."""


async def start_conserver(lab: Lab, name: str, *, address: str, port: int, includes: list[Path],
                          trusted: list[str], consoles: list[str], netns: str | None = None,
                          binds: Binds = ()) -> Path:
    """A conserver on ``address``:``port``, returned once ``console -u`` shows ``consoles`` up."""
    directory = lab.dir / name
    directory.mkdir()
    config = directory / "conserver.cf"
    config.write_text(textwrap.dedent(f"""\
        # procServ's conserver.cf.example, with everything private to {directory}
        default full {{ rw *; }}
        default * {{ logfile {directory}/&.log; timestamp ""; include full; }}
        access * {{ trusted {",".join(trusted)}; }}
    """) + "".join(f"#include {path}\n" for path in includes))
    passwd = directory / "conserver.passwd"
    passwd.write_text("")
    argv = [CONSERVER, "-C", str(config), "-P", str(passwd), "-p", str(port), "-M", address, "-E"]
    argv = lab.private_mounts(directory, argv, binds)
    await lab.spawn(name, [IP, "netns", "exec", netns, *argv] if netns else argv)
    with trio.move_on_after(15):
        while True:
            await trio.sleep(0.1)
            listing = await query(address, port, "-u")
            if all(states(listing).get(c) == "up" for c in consoles):
                return directory
            if "forcing down" in lab.output(name):
                raise ConsoleDown(f"{name}: console -u said {listing!r}; conserver said:\n{lab.output(name)}")
    raise AssertionError(f"{name}: {consoles} never all up; console -u said {listing!r}; conserver said:\n"
                         f"{lab.output(name)}")


# -- the tests -------------------------------------------------------------------------------


async def test_conserver_reaches_a_unix_socket_and_a_tcp_instance_by_name(lab):
    _needs_conserver()
    conf = lab.dir / "host"
    tcp = free_port()
    await manage(conf, "--no-systemd", "add", "-C", "/tmp", "cat1", "/bin/cat")
    await manage(conf, "--no-systemd", "add", "-C", "/tmp", "-P", str(tcp), "echo2",
                 "/bin/sh", "-c", 'while read line; do echo "$IOCNAME got: $line"; done')
    procs = lab.dir / "procs.cf"
    await manage(conf, "write-procs-cf", "-f", str(procs))  # procServUtils' default master: localhost
    children = await serve(lab, "pyprocserv", conf, ["cat1", "echo2"])
    port = free_port()
    logs = await start_conserver(lab, "conserver", address="127.0.0.1", port=port, includes=[procs],
                                 trusted=["127.0.0.1"], consoles=["cat1", "echo2"])

    # conserver uses the endpoints the generated file names: the UNIX socket, the TCP port (telnet)
    info = details(await query("127.0.0.1", port, "-i"))
    assert info["cat1"][2] == "%" and info["cat1"][3].startswith(f"{conf}/run/procserv-cat1/control,"), info
    assert info["echo2"][2] == "!" and f",{tcp},telnet," in info["echo2"][3], info
    assert {"cat1", "echo2"} <= set(states(await query("127.0.0.1", port, "-x"))), "-x lists both by name"

    # read-write with replay: procServ's greeting came through conserver; a typed line comes back
    writer = lab.terminal("-M", "127.0.0.1", "-p", str(port), "-A", "cat1")
    await writer.expect(b"[replay]")
    await writer.expect(b"@@@ Welcome to procServ")
    await writer.expect(f'@@@ Child "cat1" PID: {children["cat1"]}\r\n'.encode())
    spy = lab.terminal("-M", "127.0.0.1", "-p", str(port), "-S", "cat1")  # spy, with replay
    await spy.expect(b"[replay]")  # sent once the spy is connected ("[Enter..." comes before that)
    writer.type(b"hello through conserver\r")
    await writer.expect(b"hello through conserver\r\nhello through conserver\r\n")  # pty echo, then cat
    await spy.expect(b"hello through conserver\r\nhello through conserver\r\n")  # a second viewer sees it
    spy.type(b"spy types\r")
    await spy.expect(b"[read-only -- use ^E c ? for help]")
    writer.type(b"writer types\r")
    await spy.expect(b"writer types\r\nwriter types\r\n")
    await writer.expect(b"writer types\r\nwriter types\r\n")
    assert b"spy types" not in writer.seen, "a spy's keys never reach the child"

    # the TCP instance: conserver speaks telnet to it, so no negotiation bytes reach the screen
    echo = lab.terminal("-M", "127.0.0.1", "-p", str(port), "-A", "echo2")
    await echo.expect(f'@@@ Child "echo2" PID: {children["echo2"]}\r\n'.encode())
    echo.type(b"ping\r")
    screen = await echo.expect(b"echo2 got: ping\r\n")
    assert b"\xff" not in screen, screen

    for term in (writer, spy, echo):
        await term.leave()
    assert "hello through conserver" in (logs / "cat1.log").read_text(errors="replace")  # conserver logs it
    assert "echo2 got: ping" in (logs / "echo2.log").read_text(errors="replace")


async def test_console_reaches_an_ioc_on_a_second_host_through_the_first_conserver(second_host, lab):
    _needs_conserver()
    ns, here, there = second_host.ns, second_host.here, second_host.there
    conf_a, conf_b = lab.dir / "host-a", lab.dir / "host-b"
    script = 'while read line; do echo "$IOCNAME in $(readlink /proc/self/ns/net) got: $line"; done'
    await manage(conf_a, "--no-systemd", "add", "-C", "/tmp", "ioc_a", "/bin/sh", "-c", script)
    await manage(conf_b, "--no-systemd", "add", "-C", "/tmp", "ioc_b", "/bin/sh", "-c", script)
    procs_a, procs_b = lab.dir / "procs-a.cf", lab.dir / "procs-b.cf"
    await manage(conf_a, "write-procs-cf", "-f", str(procs_a), "--master", "127.0.0.1")
    await manage(conf_b, "write-procs-cf", "-f", str(procs_b), "--master", there)
    await serve(lab, "pyprocserv-a", conf_a, ["ioc_a"])
    await serve(lab, "pyprocserv-b", conf_b, ["ioc_b"], netns=ns)
    port = free_port()  # both masters listen on it: console follows a redirect to the same port
    # host B's conserver knows its own IOC only, and trusts host A's address on the veth
    logs_b = await start_conserver(lab, "conserver-b", address=there, port=port, includes=[procs_b],
                                   trusted=[here], consoles=["ioc_b"], netns=ns)
    # host A's conserver lists both hosts' IOCs: ioc_b with host B's conserver as its master
    logs_a = await start_conserver(lab, "conserver-a", address="127.0.0.1", port=port,
                                   includes=[procs_a, procs_b], trusted=["127.0.0.1"],
                                   consoles=["ioc_a", "ioc_b"])

    info = details(await query("127.0.0.1", port, "-i"))
    assert info["ioc_a"][7].startswith(f"{logs_a}/ioc_a.log,"), info  # managed (and logged) here
    assert info["ioc_b"][7].startswith(f"{logs_b}/ioc_b.log,"), info  # managed by host B's conserver
    assert info["ioc_b"][3].startswith(f"{conf_b}/run/procserv-ioc_b/control,"), info

    netns_here = os.readlink("/proc/self/ns/net")
    netns_there = await trio.run_process([IP, "netns", "exec", ns, "readlink", "/proc/self/ns/net"],
                                         capture_stdout=True)
    netns_there = netns_there.stdout.decode().strip()
    assert netns_there != netns_here
    for name, netns in (("ioc_b", netns_there), ("ioc_a", netns_here)):  # both by name, from host A
        term = lab.terminal("-M", "127.0.0.1", "-p", str(port), "-A", name)
        await term.expect(f'@@@ Child "{name}" PID: '.encode())  # the replay: connected
        term.type(b"where are you\r")
        await term.expect(f"{name} in {netns} got: where are you\r\n".encode())
        await term.leave()
    assert "ioc_b in" in (logs_b / "ioc_b.log").read_text(errors="replace")
    assert not (logs_a / "ioc_b.log").exists(), "host A's conserver must not open host B's console"


async def test_a_bare_port_console_stays_up_where_localhost_resolves_to_ipv6_first(second_host, lab):
    """``port = 20000`` (procServUtils' usual TCP form) listens on 127.0.0.1 only. On a host with an
    IPv6 address and Debian's ``::1 localhost`` line, ``localhost`` resolves to ::1 first; conserver
    takes a non-blocking connect's EINPROGRESS as success, so when [::1] refuses, it forces the
    console down instead of trying 127.0.0.1. The second host plays such a host (its own /etc/hosts).

    So ``write-procs-cf`` writes ``host 127.0.0.1`` for a bare port, the address pyprocserv binds.
    """
    _needs_conserver()
    address = ["addr", "add", "2001:db8::2/64", "dev", second_host.veth, "nodad"]  # documentation prefix
    ipv6 = await trio.run_process([IP, "-n", second_host.ns, *address], capture_stderr=True, check=False)
    if ipv6.returncode:  # no IPv6 here: then localhost never resolves to ::1 (AI_ADDRCONFIG)
        pytest.skip(f"no IPv6 address for the second host: {ipv6.stderr.decode().strip()}")
    conf = lab.dir / "host"
    tcp = free_port()
    await manage(conf, "--no-systemd", "add", "-C", "/tmp", "-P", str(tcp), "tcpioc", "/bin/cat")
    procs = lab.dir / "procs.cf"
    await manage(conf, "write-procs-cf", "-f", str(procs), "--master", second_host.there)
    await serve(lab, "pyprocserv", conf, ["tcpioc"], netns=second_host.ns)
    hosts = lab.dir / "hosts"
    hosts.write_text("::1 localhost ip6-localhost ip6-loopback\n127.0.0.1 localhost\n")
    assert "    host 127.0.0.1;\n" in procs.read_text()
    await start_conserver(lab, "conserver", address=second_host.there, port=free_port(), includes=[procs],
                          trusted=[second_host.here], consoles=["tcpioc"], netns=second_host.ns,
                          binds=((hosts, "/etc/hosts"),))
