#!/usr/bin/env python3
"""pyprocserv against procServ 2.7.0, side by side on this machine, in the same run.

    python bench/compare.py                  # 3 rounds, every figure (about 5 minutes)
    python bench/compare.py --quick          # smoke test, under a minute
    python bench/compare.py --only tput1 echo --rounds 5
    python bench/compare.py --chart bench/out/throughput.png
    python bench/compare.py --procserv none  # pyprocserv's figures alone

Every measurement starts a fresh server as a real process on 127.0.0.1 (both in daemon mode
with ``-q -p PIDFILE``), alternating procServ and pyprocserv within each round (the order
flips every round), and stops it (SIGTERM, then SIGKILL, and its children) whatever happens.
Clients are raw sockets in helper processes (bench/_client.py: epoll, recv_into a 1 MiB
buffer, bytearray.count), so they are not the bottleneck. Each figure is the median over the
rounds; raw results go to bench/out/results-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))  # the support layer that tests and bench share
from support.client import OFFER  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.proc import alive, cpu_ticks, descendants, status_kib  # noqa: E402

WRITER = os.path.join(HERE, "_writer.py")
CLIENT = os.path.join(HERE, "_client.py")
OUT = os.path.join(HERE, "out")

PAYLOAD = ord("#")  # in no @@@ message of either server, nor in the child's command line
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PS, PY = "procServ", "pyprocserv"
ECHO_CHILD = ["/bin/sh", "-c", "stty -icanon; exec cat >/dev/null"]
IDLE_CHILD = ["/bin/cat"]


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- processes ------------------------------------------------------------------------------


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """CPU time of each live thread in ns, from schedstat (finer than the 10 ms ticks of stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_delta_ns(before: dict[str, int], after: dict[str, int]) -> int:
    """CPU used between two samples: threads that ended meanwhile (trio's idle worker threads
    leave after 10 s) took their total with them, so only threads in both samples count, plus
    new threads' whole time."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


def kill_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def reap(proc: subprocess.Popen, timeout: float = 5.0) -> float:
    """Wait for a helper (SIGKILL after ``timeout``); its user+system CPU seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.wait()
            return 0.0
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.005)


def cpu_busy(seconds: float = 0.3) -> float:
    """Fraction of the machine's CPU time spent busy over ``seconds`` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError):
        return float("nan")
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def recv_greeting(sock: socket.socket, deadline: float) -> bytes:
    buf = b""
    while OFFER not in buf:  # IAC WILL ECHO, IAC DO LINEMODE: the end of every greeting
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError("no greeting in time")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            raise BenchError("connection closed before the greeting ended")
        buf += data
    return buf


@dataclass
class Server:
    """One server process, started in daemon mode with a pid file and stopped for sure."""

    kind: str
    argv_prefix: list[str]
    workdir: str
    port: int
    child: list[str]
    options: list[str] = field(default_factory=list)
    stop_timeout: float = 5.0
    env: dict[str, str] | None = None
    pid: int | None = None
    launcher: subprocess.Popen | None = None
    known: set[int] = field(default_factory=set)

    @property
    def pidfile(self) -> str:
        return os.path.join(self.workdir, f"{self.kind}-{self.port}.pid")

    @property
    def logfile(self) -> str:
        return os.path.join(self.workdir, f"{self.kind}-{self.port}.out")

    def argv(self) -> list[str]:
        return [*self.argv_prefix, "-q", "-p", self.pidfile, *self.options, "-n", "bench", str(self.port), *self.child]

    def launch(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.pidfile)
        with open(self.logfile, "ab") as out:
            self.launcher = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
                env={**os.environ, **self.env} if self.env else None,
            )

    def wait_pid(self, timeout: float = 15.0) -> int:
        """Wait for the launcher (the daemon's parent) to exit and the pid file to name the daemon."""
        assert self.launcher is not None
        try:
            code = self.launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.kind} did not daemonize within {timeout} s") from None
        if code != 0:
            raise BenchError(f"{self.kind} exited with {code}: {self.output()}")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                with open(self.pidfile) as f:
                    text = f.read().strip()
                if text:
                    self.pid = int(text)
                    self.known.add(self.pid)
                    return self.pid
            except (OSError, ValueError):
                pass
            time.sleep(0.002)
        raise BenchError(f"{self.kind} wrote no pid file")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """A first client gets the whole greeting (then leaves)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                    recv_greeting(s, deadline)
                    return
            except (ConnectionRefusedError, socket.timeout):
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.kind} never served port {self.port}") from None
                time.sleep(0.005)

    def start(self) -> "Server":
        self.launch()
        self.wait_pid()
        self.wait_ready()
        self.remember_children()
        return self

    def remember_children(self) -> None:
        if self.pid is not None:
            self.known.update(descendants(self.pid))

    def output(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read().strip()[-2000:]
        except OSError:
            return ""

    def stop(self) -> dict[str, Any]:
        """SIGTERM, SIGKILL after stop_timeout, then SIGKILL to every child it had."""
        info: dict[str, Any] = {}
        self.remember_children()
        if self.pid is not None:
            info["alive_at_stop"] = alive(self.pid)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if alive(self.pid):
                info["sigkill"] = True
                kill_all([self.pid])
        if self.launcher is not None and self.launcher.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.launcher.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.launcher.wait(5)
        leftovers = [p for p in self.known if p != self.pid and alive(p)]
        kill_all(leftovers)
        deadline = time.monotonic() + 2.0
        while any(alive(p) for p in leftovers) and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            os.unlink(self.pidfile)
        return info


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="pyprocserv-bench-")
        self.servers: dict[str, list[str]] = {}
        if args.procserv:
            self.servers[PS] = [args.procserv]
        self.servers[PY] = args.pyprocserv_cmd
        self.py = [sys.executable, "-I", "-S"]  # a quick start for the writer child

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def server(self, kind: str, child: list[str], options: list[str] = (),
               env: dict[str, str] | None = None) -> Iterator[Server]:
        srv = Server(kind, self.servers[kind], self.workdir, free_port(), child, list(options),
                     stop_timeout=self.args.stop_timeout, env=env)
        try:
            srv.start()
            yield srv
        finally:
            srv.stop()

    def writer(self, nbytes: int) -> list[str]:
        return [*self.py, WRITER, str(nbytes), str(PAYLOAD)]

    @staticmethod
    def expected(nbytes: int) -> int:
        return nbytes // 80 * 79

    def clients(self, port: int, nconn: int, expect: int, procs: int, *, idle: float,
                timeout: float, connect_timeout: float = 20.0, window: int = 0,
                rcvbuf: int = -1) -> list[subprocess.Popen]:
        procs = max(1, min(procs, nconn))
        share = [nconn // procs + (1 if i < nconn % procs else 0) for i in range(procs)]
        return [
            subprocess.Popen(
                [sys.executable, CLIENT, "--port", str(port), "--conns", str(k), "--byte", str(PAYLOAD),
                 "--expect", str(expect), "--idle", str(idle), "--timeout", str(timeout),
                 "--connect-timeout", str(connect_timeout), "--window", str(window), "--rcvbuf", str(rcvbuf)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            for k in share
        ]

    @staticmethod
    def read_line(proc: subprocess.Popen, deadline: float) -> dict[str, Any]:
        assert proc.stdout is not None
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise BenchError("a client helper did not answer in time")
        line = proc.stdout.readline()
        if not line:
            raise BenchError(f"a client helper died (exit {proc.wait()})")
        return json.loads(line)

    def run_clients(self, srv: Server, nconn: int, expect: int, *, procs: int, idle: float,
                    timeout: float, connect_timeout: float = 20.0, window: int = 0, rcvbuf: int = -1,
                    before_go: Callable[[], None] | None = None) -> dict[str, Any]:
        """Connect ``nconn`` readers, start the child with ^R, and collect what each read."""
        helpers = self.clients(srv.port, nconn, expect, procs, idle=idle, timeout=timeout,
                               connect_timeout=connect_timeout, window=window, rcvbuf=rcvbuf)
        try:
            deadline = time.monotonic() + connect_timeout + 10
            ready = [self.read_line(h, deadline) for h in helpers]
            greeted = sum(r["greeted"] for r in ready)
            alive_after_connect = srv.pid is not None and alive(srv.pid)
            if before_go is not None:
                before_go()
            cpu0 = thread_cpu_ns(srv.pid) if srv.pid and alive(srv.pid) else None
            starter = next((i for i, r in enumerate(ready) if r["greeted"]), None)
            order = [i for i in range(len(helpers)) if i != starter] + ([starter] if starter is not None else [])
            for i in order:
                assert helpers[i].stdin is not None
                helpers[i].stdin.write("go r\n" if i == starter else "go\n")
                helpers[i].stdin.flush()
            deadline = time.monotonic() + timeout + 15
            done = [self.read_line(h, deadline) for h in helpers]
            cpu1 = thread_cpu_ns(srv.pid) if srv.pid and alive(srv.pid) else None
            srv.remember_children()
        finally:
            client_cpu = 0.0
            for h in helpers:
                with contextlib.suppress(OSError):
                    h.stdin.close()  # type: ignore[union-attr]
                client_cpu += reap(h)
        conns = [c for d in done for c in d["conns"]]
        errors: dict[str, int] = {}
        for r in done:  # a helper's errors include those of its connect phase
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {
            "t_go": min(d["t_go"] for d in done),
            "conns": conns,
            "greeted": greeted,
            "connect_s": max(r["connect_s"] for r in ready),
            "errors": errors,
            "server_alive_after_connect": alive_after_connect,
            "server_alive_at_end": srv.pid is not None and alive(srv.pid),
            "clients_cpu_s": client_cpu,
            "server_cpu_s": cpu_delta_ns(cpu0, cpu1) / 1e9 if cpu0 is not None and cpu1 is not None else None,
        }

    # -- the figures ------------------------------------------------------------------------

    def m_ceiling(self, nbytes: int) -> dict[str, Any]:
        """A bare reader on a pty: the same child, 64 KiB reads; the physical limit."""
        master, slave = os.openpty()
        proc = subprocess.Popen(self.writer(nbytes), stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True)
        os.close(slave)
        expect, count, reads = self.expected(nbytes), 0, 0
        first = last = None
        try:
            deadline = time.monotonic() + 120
            while count < expect and time.monotonic() < deadline:
                if not select.select([master], [], [], 5.0)[0]:
                    break
                data = os.read(master, 65536)
                if not data:
                    break
                reads += 1
                c = data.count(b"#")
                if c:
                    now = time.monotonic()
                    first = first or now
                    last = now
                    count += c
        finally:
            proc.kill()
            proc.wait()
            os.close(master)
        if count < expect:
            raise BenchError(f"ceiling reader got {count} of {expect}")
        return {"mbps": nbytes / 1e6 / (last - first), "seconds": last - first, "reads": reads,
                "mean_read": nbytes * 81 / 80 / reads}

    def m_throughput(self, kind: str, nconn: int, nbytes: int, *, stalled: bool = False) -> dict[str, Any]:
        expect = self.expected(nbytes)
        with self.server(kind, self.writer(nbytes), ["-w", "--noautorestart"]) as srv:
            stall = None
            try:
                if stalled:  # connects first, never reads a byte
                    stall = socket.create_connection((HOST, srv.port), timeout=5)
                procs = self.args.client_procs or os.cpu_count() or 1
                # Two handshakes in flight per helper: procServ listens with a backlog of 5.
                res = self.run_clients(srv, nconn, expect, procs=procs, window=2,
                                       idle=self.args.stall_idle if stalled else 5.0,
                                       timeout=self.args.client_timeout)
            finally:
                if stall is not None:
                    stall.close()
        conns = res.pop("conns")
        complete = [c for c in conns if c[0] >= expect]
        res.update(clients=nconn, bytes=nbytes, complete=len(complete),
                   skipped=sum(1 for c in conns if c[5]),
                   received=[c[0] for c in conns if c[0] < expect][:20])
        if len(complete) != nconn or not complete:
            res["mbps"] = None
            res["error"] = f"{len(complete)} of {nconn} clients got all {expect} payload bytes"
            return res
        first = min(c[1] for c in conns)
        last = max(c[2] for c in conns)
        res["seconds"] = last - first
        res["mbps"] = nbytes / 1e6 / (last - first)
        res["mbps_from_ctrl_r"] = nbytes / 1e6 / (last - res["t_go"])
        per_client = sorted(nbytes / 1e6 / (c[2] - c[1]) for c in conns)
        res["mbps_slowest_client"] = per_client[0]
        if res["server_cpu_s"] is not None:
            res["server_cpu_s_per_100MB_per_client"] = res["server_cpu_s"] / (nbytes * nconn / 1e8)
        return res

    def m_echo(self, kind: str, keys: int) -> dict[str, Any]:
        with self.server(kind, ECHO_CHILD) as srv:
            with socket.create_connection((HOST, srv.port), timeout=5) as s:
                recv_greeting(s, time.monotonic() + 5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(2.0)
                time.sleep(0.3)  # stty -icanon has run
                samples = []
                warm = 50
                for i in range(warm + keys):
                    ch = b"abcdefghijklmnopqrstuvwxyz"[i % 26: i % 26 + 1]
                    t0 = time.perf_counter_ns()
                    s.sendall(ch)
                    while True:
                        data = s.recv(256)
                        if not data:
                            raise BenchError("connection closed during the echo test")
                        if ch in data:
                            break
                    if i >= warm:
                        samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        return {"keys": keys, "p50_us": pct(samples, 50), "p90_us": pct(samples, 90),
                "p99_us": pct(samples, 99), "max_us": samples[-1]}

    def m_greeting(self, kind: str, connects: int) -> dict[str, Any]:
        with self.server(kind, IDLE_CHILD) as srv:
            samples = []
            for i in range(connects + 2):
                t0 = time.perf_counter()
                with socket.create_connection((HOST, srv.port), timeout=5) as s:
                    recv_greeting(s, time.monotonic() + 5)
                    dt = time.perf_counter() - t0
                if i >= 2:
                    samples.append(dt * 1000)
                time.sleep(0.02)
        samples.sort()
        return {"connects": connects, "median_ms": statistics.median(samples), "max_ms": samples[-1]}

    def m_startup(self, kind: str, starts: int) -> dict[str, Any]:
        listen, greet = [], []
        for _ in range(starts):
            srv = Server(kind, self.servers[kind], self.workdir, free_port(), IDLE_CHILD,
                         stop_timeout=self.args.stop_timeout)
            try:
                t0 = time.monotonic()
                srv.launch()
                deadline = t0 + 15
                t_conn = None
                while True:
                    s = socket.socket()
                    try:
                        s.settimeout(1.0)
                        s.connect((HOST, srv.port))
                        t_conn = time.monotonic()
                        recv_greeting(s, deadline)
                        t_greet = time.monotonic()
                        break
                    except (ConnectionRefusedError, socket.timeout):
                        if time.monotonic() > deadline:
                            raise BenchError(f"{kind} did not start listening") from None
                        time.sleep(0.001)
                    finally:
                        s.close()
                listen.append((t_conn - t0) * 1000)
                greet.append((t_greet - t0) * 1000)
                srv.wait_pid()
            finally:
                srv.stop()
        return {"starts": starts, "listen_ms": statistics.median(listen), "greeting_ms": statistics.median(greet),
                "listen_all_ms": listen, "greeting_all_ms": greet}

    def pv_supported(self) -> bool:
        try:
            out = subprocess.run([*self.args.pyprocserv_cmd, "-h"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return "--pv-prefix" in out.stdout + out.stderr

    def m_idle(self, kind: str, seconds: float, *, pvs: bool = False) -> dict[str, Any]:
        options: list[str] = []
        env = None
        if pvs:  # a private CA port on loopback, so nothing else on the machine sees these PVs
            options = shlex.split(self.args.pv_options)
            ca_port = str(free_port(udp=True))  # TCP and UDP
            env = {"EPICS_CA_SERVER_PORT": ca_port, "EPICS_CA_REPEATER_PORT": str(free_port(udp=True)),
                   "EPICS_CAS_SERVER_PORT": ca_port}
        with self.server(kind, IDLE_CHILD, options, env=env) as srv:
            assert srv.pid is not None
            with socket.create_connection((HOST, srv.port), timeout=5) as s:
                recv_greeting(s, time.monotonic() + 5)
                time.sleep(1.0)
                t0, n0 = cpu_ticks(srv.pid), thread_cpu_ns(srv.pid)
                threads0 = len(n0)
                time.sleep(seconds)
                t1, n1 = cpu_ticks(srv.pid), thread_cpu_ns(srv.pid)
                rss = status_kib(srv.pid, "VmRSS")
                hwm = status_kib(srv.pid, "VmHWM")
                startup_cpu = sum(n0.values()) / 1e9
        return {"seconds": seconds, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024,
                "cpu_s": cpu_delta_ns(n0, n1) / 1e9, "cpu_ticks_s": (t1 - t0) / CLK_TCK,
                "threads_before": threads0, "threads_after": len(n1), "cpu_s_until_idle": startup_cpu}

    def m_many(self, kind: str, nconn: int, nbytes: int) -> dict[str, Any]:
        expect = self.expected(nbytes)
        with self.server(kind, self.writer(nbytes), ["-w", "--noautorestart"]) as srv:
            # Two helpers, two handshakes in flight each: procServ's listen backlog is 5, and a
            # burst of 1000 SYNs would measure SYN retransmission, not serving.
            # Receive buffers autotuned (not 8 MiB each): 1000 of those could pin gigabytes.
            res = self.run_clients(srv, nconn, expect, procs=2, idle=5.0, window=2, rcvbuf=0,
                                   timeout=self.args.client_timeout, connect_timeout=60.0)
            stop = srv.stop()
        conns = res.pop("conns")
        served = sum(1 for c in conns if c[0] >= expect)
        res.update(clients=nconn, bytes=nbytes, served=served, skipped=sum(1 for c in conns if c[5]),
                   closed_early=sum(1 for c in conns if c[4] and c[0] < expect), stop=stop)
        if served == nconn:
            res["seconds"] = max(c[2] for c in conns) - min(c[1] for c in conns)
        return res


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# -- the table of figures ---------------------------------------------------------------------
#
# Each figure is one entry: what it measures, how one run of it is made, which servers run it,
# and the lines it adds to the printed table (each with its unit, format, target and check).
# The main loop, the summary and --only all walk this table; adding a figure is adding an entry.

Check = Callable[[float | None, float | None, dict[str, float | None], argparse.Namespace], bool | None]


@dataclass(frozen=True)
class Line:
    """One line of the printed table: a value picked from each run of its figure, as a median."""

    key: str  # in the JSON table; checks find other lines' pyprocserv medians by it
    label: str  # may name options, e.g. "{a.idle_seconds:g}"
    unit: str  # printed in parentheses after the label ("" for none)
    pick: Callable[[dict[str, Any]], float | None]
    fmt: str
    target: str  # "reported": a figure without a target
    check: Check | None = None

    def title(self, args: argparse.Namespace) -> str:
        label = self.label.format(a=args)
        return f"{label} ({self.unit})" if self.unit else label


NO_SERVER = "-"  # the server column of a figure that measures no server (the pty ceiling)


@dataclass(frozen=True)
class Figure:
    name: str  # for --only, and the "figure" of each run in the JSON
    what: str  # one line for --help
    measure: Callable[["Bench", str, Any], dict[str, Any]]  # (bench, server, one of each(args)): one run
    lines: tuple[Line, ...] = ()
    servers: str = "both"  # "both", PY (pyprocserv only) or NO_SERVER
    each: Callable[[argparse.Namespace], list[Any]] = lambda a: [None]  # one run per item, per server and round
    curve: bool = False  # its runs are points of "throughput against clients" (and the chart)
    skip: Callable[["Bench"], str | None] = lambda b: None  # why this figure cannot run here, if it cannot
    quick: bool = True  # run by --quick (at its small sizes)

    def kinds(self, order: list[str]) -> list[str]:
        if self.servers == NO_SERVER:
            return [NO_SERVER]
        return [k for k in order if self.servers == "both" or k == self.servers]


def ratio_at_least(x: float) -> Check:
    return lambda ps, py, med, args: None if ps is None or py is None else py / ps >= x


def ratio_at_most(x: float) -> Check:
    return lambda ps, py, med, args: None if ps is None or py is None else py / ps <= x


def at_most(x: float) -> Check:
    return lambda ps, py, med, args: None if py is None else py <= x


def stalled_check(ps: float | None, py: float | None, med: dict[str, float | None],
                  args: argparse.Namespace) -> bool | None:
    own = med.get("tput1")  # None when tput1 was not measured: judge the ratio alone
    if py is None:
        return None
    checks = []
    if ps is not None:
        checks.append(py / ps >= 10)
    if own is not None:
        checks.append(py >= 0.7 * own)
    return all(checks) if checks else None


def all_served(ps: float | None, py: float | None, med: dict[str, float | None],
               args: argparse.Namespace) -> bool | None:
    return None if py is None else py >= args.many


def whole_lines(mb: float) -> int:
    """``mb`` MB of the writer's 80-byte lines, in bytes."""
    return int(mb * 1e6) // 80 * 80


def scaling_counts(args: argparse.Namespace) -> list[int]:
    return sorted(set(args.clients) | {1, 20})


def mbps(r: dict[str, Any]) -> float | None:
    return r["mbps"]


FIGURES: tuple[Figure, ...] = (
    Figure("ceiling", "a bare reader on the pty (os.openpty, the same child): the physical limit",
           lambda b, kind, _: b.m_ceiling(whole_lines(b.args.mb)),
           (Line("ceiling", "pty ceiling: bare reader", "MB/s", mbps, "{:.0f}", "reported"),),
           servers=NO_SERVER),
    Figure("tput1", "throughput, 1 client, --mb MB",
           lambda b, kind, n: b.m_throughput(kind, n, whole_lines(b.args.mb)),
           (Line("tput1", "throughput, 1 client", "MB/s", mbps, "{:.1f}", ">= 1.2x", ratio_at_least(1.2)),),
           each=lambda a: [1], curve=True),
    Figure("tput20", "throughput, 20 clients, each gets all --mb MB",
           lambda b, kind, n: b.m_throughput(kind, n, whole_lines(b.args.mb)),
           (Line("tput20", "throughput, 20 clients", "MB/s each", mbps, "{:.1f}", ">= 1.5x", ratio_at_least(1.5)),),
           each=lambda a: [20], curve=True),
    Figure("scaling", "the same for the other --clients counts, for the curve and the chart",
           lambda b, kind, n: b.m_throughput(kind, n, whole_lines(b.args.mb)),
           each=lambda a: [n for n in scaling_counts(a) if n not in (1, 20)], curve=True),
    Figure("stalled", "one client connects first and never reads; another reads --stalled-mb MB",
           lambda b, kind, _: b.m_throughput(kind, 1, whole_lines(b.args.stalled_mb), stalled=True),
           (Line("stalled", "1 stalled + 1 reader", "MB/s", mbps, "{:.1f}", ">= 10x, >= 0.7x own 1-client",
                 stalled_check),)),
    Figure("echo", "keystroke echo through the pty, one byte at a time (--keys)",
           lambda b, kind, _: b.m_echo(kind, b.args.keys),
           (Line("echo_p50", "keystroke echo p50", "us", lambda r: r["p50_us"], "{:.0f}", "<= 1.5x", ratio_at_most(1.5)),
            Line("echo_p99", "keystroke echo p99", "us", lambda r: r["p99_us"], "{:.0f}", "<= 2x", ratio_at_most(2.0)))),
    Figure("greeting", "connect() to the end of the greeting, sequential connects (--connects)",
           lambda b, kind, _: b.m_greeting(kind, b.args.connects),
           (Line("greeting", "connect to full greeting, median", "ms", lambda r: r["median_ms"], "{:.2f}",
                 "<= 2 ms", at_most(2.0)),)),
    Figure("startup", "spawning the server to a connect() that succeeds and to a full greeting (--starts)",
           lambda b, kind, _: b.m_startup(kind, b.args.starts),
           (Line("startup_listen", "start to listening: connect ok", "ms", lambda r: r["listen_ms"], "{:.0f}",
                 "<= 400 ms", at_most(400)),
            Line("startup_greet", "start to serving: first greeting", "ms", lambda r: r["greeting_ms"], "{:.0f}",
                 "<= 400 ms", at_most(400)))),
    Figure("idle", "one client attached: the server's RSS, and its CPU over --idle-seconds",
           lambda b, kind, _: b.m_idle(kind, b.args.idle_seconds),
           (Line("idle_rss", "idle RSS, 1 client", "MiB", lambda r: r["rss_mib"], "{:.1f}", "<= 30 MiB", at_most(30)),
            Line("idle_cpu", "idle CPU over {a.idle_seconds:g} s", "s", lambda r: r["cpu_s"], "{:.4f}", "<= 0.01 s",
                 at_most(0.01)))),
    Figure("idlepv", "the same with PVs on (--pv-options); pyprocserv only",
           lambda b, kind, _: b.m_idle(kind, b.args.idle_seconds, pvs=True),
           (Line("idlepv_rss", "idle RSS with PVs on", "MiB", lambda r: r["rss_mib"], "{:.1f}", "<= 45 MiB", at_most(45)),
            Line("idlepv_cpu", "idle CPU with PVs on, {a.idle_seconds:g} s", "s", lambda r: r["cpu_s"], "{:.4f}",
                 "reported")),
           servers=PY, skip=lambda b: None if b.pv_supported() else "this pyprocserv has no --pv-prefix"),
    Figure("many", "--many control clients, then a --many-mb MB burst: how many got all of it",
           lambda b, kind, _: b.m_many(kind, b.args.many, whole_lines(b.args.many_mb)),
           (Line("many", "{a.many} clients x {a.many_mb:g} MB: served", "", lambda r: r["served"], "{:.0f}",
                 "all served", all_served),)),
)
BY_NAME = {f.name: f for f in FIGURES}


def median_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(args: argparse.Namespace, results: dict[str, Any], servers: list[str]) -> list[dict[str, Any]]:
    def values(figure: str, kind: str, pick: Callable[[dict[str, Any]], Any]) -> list[float | None]:
        out = []
        for run in results["runs"]:
            if run["figure"] == figure and run["server"] == kind:
                try:
                    out.append(pick(run["result"]) if "result" in run else None)
                except (KeyError, TypeError):
                    out.append(None)
        return out

    med: dict[str, float | None] = {}
    table = []
    for fig in FIGURES:
        if fig.name not in results["figures"]:
            continue
        for line in fig.lines:
            if fig.servers == NO_SERVER:
                ps_vals: list[float | None] = []
                py_vals = values(fig.name, NO_SERVER, line.pick)
            else:
                ps_vals = values(fig.name, PS, line.pick) if PS in servers else []
                py_vals = values(fig.name, PY, line.pick)
            ps_med, py_med = median_or_none(ps_vals), median_or_none(py_vals)
            med[line.key] = py_med
            ratio = py_med / ps_med if ps_med and py_med is not None else None
            met = line.check(ps_med, py_med, med, args) if line.check else None
            notes = []
            for kind, vals in ((PS, ps_vals), (PY, py_vals)):
                failed = sum(1 for v in vals if v is None)
                if failed:
                    notes.append(f"{kind}: {failed} of {len(vals)} runs failed")
            if any(v is None for v in py_vals) and line.check is not None:
                met = False  # a run that lost bytes or broke does not meet any target
            table.append({"key": line.key, "label": line.title(args), "procServ": ps_med, "pyprocserv": py_med,
                          "ratio": ratio, "target": line.target, "met": met, "fmt": line.fmt,
                          "notes": "; ".join(notes), "procServ_runs": ps_vals, "pyprocserv_runs": py_vals})
    curve = {f.name for f in FIGURES if f.curve}
    if curve & set(results["figures"]):
        for n in scaling_counts(args):
            points = [r for r in results["runs"]
                      if r["figure"] in curve and "result" in r and r["result"].get("clients") == n]
            ps_vals = [r["result"].get("mbps") for r in points if r["server"] == PS]
            py_vals = [r["result"].get("mbps") for r in points if r["server"] == PY]
            if not (ps_vals or py_vals):
                continue
            ps_med, py_med = median_or_none(ps_vals), median_or_none(py_vals)
            results.setdefault("scaling", []).append({"clients": n, "procServ": ps_med, "pyprocserv": py_med,
                                                      "procServ_runs": ps_vals, "pyprocserv_runs": py_vals})
    return table


def print_table(table: list[dict[str, Any]], results: dict[str, Any], servers: list[str]) -> None:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    head = ["figure", "procServ" if PS in servers else "procServ (absent)", "pyprocserv", "ratio", "target", "met", "notes"]
    lines = []
    for t in table:
        met = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        if t["target"] == "reported":
            met = ""
        lines.append([t["label"], f(t["procServ"], t["fmt"]), f(t["pyprocserv"], t["fmt"]),
                      "-" if t["ratio"] is None else f"{t['ratio']:.2f}x", t["target"], met, t["notes"]])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    sep = "  "
    print(sep.join(h.ljust(w) for h, w in zip(head, widths)))
    print(sep.join("-" * w for w in widths))
    for line in lines:
        print(sep.join(str(x).ljust(w) if i == 0 else str(x).rjust(w) if i < 4 else str(x).ljust(w)
                       for i, (x, w) in enumerate(zip(line, widths))))
    if results.get("scaling"):
        print()
        print("throughput against clients (MB/s per client, every client gets every byte):")
        for s in results["scaling"]:
            ps = "-" if s["procServ"] is None else f"{s['procServ']:.1f}"
            py = "-" if s["pyprocserv"] is None else f"{s['pyprocserv']:.1f}"
            ratio = f"{s['pyprocserv'] / s['procServ']:.2f}x" if s["procServ"] and s["pyprocserv"] else "-"
            print(f"  {s['clients']:>4} clients: procServ {ps:>7}  pyprocserv {py:>7}  ratio {ratio}")
    busy = [r for r in results["runs"] if r.get("busy_before", 0) > 0.15]
    if busy:
        print()
        print(f"warning: {len(busy)} of {len(results['runs'])} runs started while the machine was more than 15% busy "
              f"with other work (max {max(r['busy_before'] for r in busy):.0%}): figures are noisy; "
              "rerun on a quiet machine")
    problems = [r for r in results["runs"] if r.get("error") or (r.get("result") or {}).get("error")]
    if problems:
        print()
        print("runs with problems:")
        for r in problems:
            print(f"  round {r['round']} {r['figure']} {r['server']}: {r.get('error') or r['result'].get('error')}")


# -- machine and chart ------------------------------------------------------------------------


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    mem = "?"
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "os": platform.platform(), "python": platform.python_version(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "loadavg_at_start": loadavg(),
    }
    with contextlib.suppress(Exception):
        import trio

        info["trio"] = trio.__version__
    with contextlib.suppress(Exception):
        out = subprocess.run([*args.pyprocserv_cmd, "-V"], capture_output=True, text=True, timeout=20)
        info["pyprocserv"] = (out.stdout or out.stderr).strip().splitlines()[0]
    if args.procserv:
        with contextlib.suppress(Exception):
            out = subprocess.run([args.procserv, "-V"], capture_output=True, text=True, timeout=10)
            info["procServ"] = (out.stdout or out.stderr).strip().splitlines()[0]
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "pyprocserv"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["commit"] = head + ("+dirty" if dirty else "")
    return info


def chart(path: str, results: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("--chart: matplotlib is not installed (pip install matplotlib); no chart written")
        return
    scaling = results.get("scaling") or []
    if not scaling:
        log("--chart: no throughput figures to plot")
        return
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    xs = [s["clients"] for s in scaling]
    for kind, style in ((PS, "o-"), (PY, "s-")):
        pts = [(s["clients"], s[kind]) for s in scaling if s.get(kind) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=kind)
    ceiling = [t for t in results.get("table", []) if t["key"] == "ceiling" and t["pyprocserv"]]
    if ceiling:
        ax.axhline(ceiling[0]["pyprocserv"], color="grey", ls="--", lw=1,
                   label=f"pty ceiling, bare reader ({ceiling[0]['pyprocserv']:.0f} MB/s)")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel("telnet clients, each receiving every byte")
    ax.set_ylabel("MB/s per client (child's output, median of rounds)")
    ax.set_ylim(bottom=0)
    m = results["machine"]
    ax.set_title(f"Console throughput: {results['bytes_mb']:g} MB through the pty, {results['rounds']} rounds", fontsize=11)
    short = lambda v: " ".join(str(v).split()[:2])  # noqa: E731  "pyprocserv 0.1.0 (a drop-in ...)"
    fig.text(0.01, 0.01, f"measured on {m.get('cpu')} x{m.get('cores')} cores, {m.get('memory')}, Linux {m.get('kernel')}, "
             f"Python {m.get('python')}, trio {m.get('trio')}\n{m.get('procServ', 'procServ absent')} (Debian) vs "
             f"{short(m.get('pyprocserv', 'pyprocserv'))} ({m.get('commit', '?')}), {results['date'][:10]}, "
             f"{results['bytes_mb']:g} MB of 80-byte lines, telnet clients on 127.0.0.1", fontsize=7, color="dimgray")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    log(f"chart written to {path}")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    width = max(len(f.name) for f in FIGURES)
    epilog = "figures (--only), in the order they run:\n" + "\n".join(f"  {f.name:<{width}}  {f.what}" for f in FIGURES)
    p = argparse.ArgumentParser(description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="rounds, each server once per figure (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test under a minute")
    p.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="NAME",
                   help=f"only these figures: {', '.join(BY_NAME)}")
    p.add_argument("--pyprocserv-cmd", default=f"{shlex.quote(sys.executable)} -m pyprocserv",
                   help="how to run pyprocserv (default: %(default)s)")
    p.add_argument("--procserv", default=shutil.which("procServ") or "",
                   help="procServ binary (default: procServ on PATH; 'none' for pyprocserv alone)")
    p.add_argument("--mb", type=float, default=None, help="MB the child writes for throughput (default 50)")
    p.add_argument("--stalled-mb", type=float, default=None, help="MB for the stalled-client figure (default 30)")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="client counts for the scaling curve (default 1,2,5,10,20,50)")
    p.add_argument("--keys", type=int, default=None, help="keystrokes for the echo figure (default 2000)")
    p.add_argument("--connects", type=int, default=20, help="connects for the greeting figure")
    p.add_argument("--starts", type=int, default=None, help="server starts per round for start-up (default 5)")
    p.add_argument("--idle-seconds", type=float, default=None, help="idle period (default 10)")
    p.add_argument("--pv-options", default="--pv-prefix BENCH: --pv-interface 127.0.0.1",
                   help="pyprocserv options that turn PVs on, for idlepv (default: %(default)s)")
    p.add_argument("--many", type=int, default=1000, help="clients for the many-clients figure")
    p.add_argument("--many-mb", type=float, default=1.0, help="MB of the burst every one of them gets")
    p.add_argument("--client-procs", type=int, default=0, help="client helper processes (default: cores)")
    p.add_argument("--client-timeout", type=float, default=120.0, help="max seconds of one transfer")
    p.add_argument("--stall-idle", type=float, default=25.0, help="silence a reader tolerates in the stalled figure")
    p.add_argument("--stop-timeout", type=float, default=5.0, help="SIGTERM to SIGKILL, seconds")
    p.add_argument("--chart", metavar="PNG", help="also draw throughput against clients (needs matplotlib)")
    p.add_argument("--out", default=OUT, help="directory of the JSON results (default bench/out)")
    p.add_argument("--from-json", metavar="FILE", help="measure nothing: print the table (and --chart) of an earlier run")
    a = p.parse_args(argv)
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.mb = a.mb or (5 if q else 50)
    a.stalled_mb = a.stalled_mb or (5 if q else 30)
    a.clients = a.clients or ([1, 20] if q else [1, 2, 5, 10, 20, 50])
    a.keys = a.keys or (300 if q else 2000)
    a.starts = a.starts or (2 if q else 5)
    a.idle_seconds = a.idle_seconds or (2 if q else 10)
    if q and a.connects == 20:
        a.connects = 10
    if q and a.many == 1000:
        a.many, a.many_mb = 1100, 0.1
    a.pyprocserv_cmd = shlex.split(a.pyprocserv_cmd)
    if a.procserv.lower() in ("none", "no", ""):
        a.procserv = ""
    elif not os.access(a.procserv, os.X_OK):
        found = shutil.which(a.procserv)
        if not found:
            p.error(f"--procserv: {a.procserv} not found")
        a.procserv = found
    return a


def report(args: argparse.Namespace, results: dict[str, Any], servers: list[str], path: str | None) -> None:
    table = summarize(args, results, servers)
    results["table"] = [{k: v for k, v in t.items() if k != "fmt"} for t in table]
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    m = results["machine"]
    print()
    print(f"{m['cpu']} x{m['cores']}, Linux {m['kernel']}, Python {m['python']}, trio {m.get('trio')}; "
          f"{m.get('procServ', 'procServ absent')} vs {m.get('pyprocserv')} ({m.get('commit', '?')})")
    print(f"{results['rounds']} round(s), medians; ratio = pyprocserv / procServ; {results.get('wall_s')} s; "
          f"load average {m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end")
    print()
    print_table(table, results, servers)
    print()
    if path:
        print(f"raw results: {os.path.relpath(path)}")
    if args.chart:
        chart(args.chart, results)


def replay(args: argparse.Namespace) -> int:
    with open(args.from_json) as f:
        results = json.load(f)
    old = argparse.Namespace(**{**vars(args), **{k: v for k, v in results["options"].items()
                                                  if k in ("idle_seconds", "many", "many_mb", "clients")}})
    old.chart = args.chart
    results.pop("scaling", None)
    servers = sorted({r["server"] for r in results["runs"] if r["server"] != "-"}, key=lambda k: k != PS)
    report(old, results, servers, None)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return replay(args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.many + 256
    if soft != resource.RLIM_INFINITY and soft < need:  # the servers inherit it
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))
    figures = [BY_NAME[name] for name in args.only or [f.name for f in FIGURES if f.quick or not args.quick]]
    bench = Bench(args)
    servers = list(bench.servers)
    if not args.procserv:
        log("procServ not found (or --procserv none): measuring pyprocserv alone")
    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(args), "rounds": args.rounds, "quick": args.quick, "figures": [f.name for f in figures],
        "bytes_mb": args.mb, "options": {k: v for k, v in vars(args).items()}, "runs": [],
    }
    started = time.monotonic()
    skipped = {f.name: why for f in figures if (why := f.skip(bench))}
    for name, why in skipped.items():
        log(f"{name}: {why}: skipped")

    def record(rnd: int, figure: str, kind: str, fn: Callable[[], dict[str, Any]]) -> None:
        entry: dict[str, Any] = {"round": rnd, "figure": figure, "server": kind,
                                 "busy_before": round(cpu_busy(), 3)}  # other work on the machine
        t0 = time.monotonic()
        try:
            entry["result"] = fn()
        except Exception as exc:  # one failed measurement must not lose the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["wall_s"] = round(time.monotonic() - t0, 3)
        results["runs"].append(entry)
        brief = entry.get("error") or {k: (round(v, 3) if isinstance(v, float) else v)
                                       for k, v in entry["result"].items()
                                       if k in ("mbps", "p50_us", "p99_us", "median_ms", "listen_ms", "greeting_ms",
                                                "rss_mib", "cpu_s", "served", "error", "clients", "complete")}
        log(f"[{time.monotonic() - started:6.1f}s] round {rnd} {figure:<8} {kind:<10} {brief}")

    try:
        for rnd in range(1, args.rounds + 1):
            order = servers if rnd % 2 else servers[::-1]
            for fig in figures:
                if fig.name in skipped:
                    continue
                for kind in fig.kinds(order):
                    for item in fig.each(args):
                        record(rnd, fig.name, kind, lambda: fig.measure(bench, kind, item))
    except KeyboardInterrupt:
        log("interrupted: summarizing what was measured")
    finally:
        shutil.rmtree(bench.workdir, ignore_errors=True)

    results["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_at_end"] = loadavg()
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    report(args, results, servers, os.path.join(args.out, f"results-{stamp}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
