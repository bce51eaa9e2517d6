#!/usr/bin/env python3
"""The server's memory with many clients that cannot keep up (issue #9, item 4).

    python bench/memory.py                          # both cases, 100 clients each
    python bench/memory.py --only readers --clients 200
    python bench/memory.py --server-root /tmp/old   # measure another source tree

Each case starts a fresh pyprocserv daemon (``python -m pyprocserv -q -p PIDFILE``) whose child
writes lines of 80 bytes as fast as the pty takes them, waits for it to settle, reads its RSS
(VmRSS from /proc; the child is not counted) as the baseline, then attaches the clients from a
helper process and samples the RSS every 50 ms:

* ``readers``: N control clients, each reading about ``--rate`` bytes a second (1 MB/s),
  far slower than the child writes. Targets: peak <= 250 MiB; <= baseline + 64 MiB once
  they have left.
* ``loggers``: the server runs with ``--logstamp -l PORT``; N log clients connect and never
  read. Target: peak <= 250 MiB.

The clients use small receive buffers (64 KiB), so what they do not read stays with the server.
After ``--seconds`` the helper closes every connection; ``--settle`` seconds later the RSS is
read again ("after"). The figures go to standard output; the exit code is 0 when every target
was met.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/support: the helpers tests/ and bench/ share
from support.ports import free_port  # noqa: E402
from support.proc import children_of, proc_state, rss_kib  # noqa: E402

HOST = "127.0.0.1"
MIB = 1 << 20
PEAK_TARGET = 250 * MIB
AFTER_SLACK = 64 * MIB
SKIP = b"of output skipped"
# The child: lines of 79 '#' and a newline, in 64 KiB writes, for ever.
STREAMER = "import os\nb = (b'#' * 79 + b'\\n') * 819\nwhile True: os.write(1, b)\n"


# -- the clients (run as a helper process: --role clients) ---------------------------------------

def run_clients(port: int, count: int, rate: float, seconds: float) -> None:
    """Connect ``count`` clients; each reads ``rate`` bytes/s (0: never reads) for ``seconds``."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.connect((HOST, port))
        s.setblocking(False)
        socks.append(s)
    print("connected", flush=True)
    buf = bytearray(1 << 16)
    got = [0] * count
    skipped = [False] * count
    allowance = [0.0] * count
    start = last = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        if rate:
            for i, s in enumerate(socks):
                allowance[i] = min(allowance[i] + rate * (now - last), len(buf))
                if allowance[i] >= 4096:
                    try:
                        n = s.recv_into(buf, int(allowance[i]))
                    except BlockingIOError:
                        continue
                    allowance[i] -= n
                    got[i] += n
                    skipped[i] = skipped[i] or SKIP in buf[:n]
        last = now
        time.sleep(0.01)
    for s in socks:
        s.close()
    mean = sum(got) / max(1, count)
    print(f"done {mean:.0f} {sum(skipped)}", flush=True)


# -- the server ------------------------------------------------------------------------------------

class Server:
    """A pyprocserv daemon with the streaming child; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, root: str, options: list[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="ppsmem")
        self.pidfile = os.path.join(self.dir, "pid")
        self.port = free_port()
        argv = [sys.executable, "-m", "pyprocserv", "-q", "-p", self.pidfile, *options,
                str(self.port), sys.executable, "-c", STREAMER]
        env = dict(os.environ, PYTHONPATH=root)
        code = subprocess.run(argv, env=env, cwd=self.dir, stdin=subprocess.DEVNULL, timeout=30).returncode
        if code:
            raise SystemExit(f"the server did not start (exit code {code})")
        with open(self.pidfile) as f:  # written by the launcher before it exits
            self.pid = int(f.read())

    def rss(self) -> int:
        return rss_kib(self.pid) * 1024

    def stop(self) -> None:
        children = children_of(self.pid)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while proc_state(self.pid) not in (None, "Z", "X") and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in [self.pid, *children]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def peak_while(argv: list[str], what: str, rss, baseline: float) -> tuple[float, str, subprocess.Popen]:
    """Run a load process (this script or another with ``--role ...``) that prints "connected" once
    its clients are in and one summary line when done, sampling the server's ``rss()`` meanwhile.
    Returns the peak, the summary line and the process (still to be waited for)."""
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    if load.stdout.readline().strip() != "connected":
        raise SystemExit(f"the {what} could not connect")
    peak = baseline
    while load.poll() is None:
        peak = max(peak, rss())
        ready, _, _ = select.select([load.stdout], [], [], 0.05)
        if ready:
            break
    return peak, load.stdout.readline(), load


def measure(args: argparse.Namespace, case: str) -> dict[str, float]:
    loggers = case == "loggers"
    log_port = free_port() if loggers else 0
    options = ["--logstamp", "-l", str(log_port)] if loggers else []
    server = Server(args.server_root, options)
    try:
        time.sleep(args.settle)
        baseline = server.rss()
        peak, line, clients = peak_while(
            [sys.executable, os.path.abspath(__file__), "--role", "clients",
             "--port", str(log_port or server.port), "--clients", str(args.clients),
             "--rate", str(0 if loggers else args.rate), "--seconds", str(args.seconds)],
            "clients", server.rss, baseline)
        summary = line.split()
        clients.wait(30)
        time.sleep(args.settle)
        after = server.rss()
    finally:
        server.stop()
    mean = float(summary[1]) if len(summary) == 3 else 0.0
    told = int(summary[2]) if len(summary) == 3 else 0
    return {"baseline": baseline, "peak": peak, "after": after, "mean_read": mean, "told": told}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=("readers", "loggers"), default=["readers", "loggers"])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1e6, help="bytes/s each reader reads (default 1e6)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the clients stay")
    parser.add_argument("--settle", type=float, default=3.0, help="wait before the baseline and the after figure")
    parser.add_argument("--server-root", default=ROOT, help="source tree whose pyprocserv runs (default: this one)")
    parser.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "clients":
        run_clients(args.port, args.clients, args.rate, args.seconds)
        return 0
    print(f"server: {args.server_root}; {args.clients} clients for {args.seconds:g} s; {os.cpu_count()} cores")
    met = True
    for case in args.only:
        r = measure(args, case)
        peak_ok = r["peak"] <= PEAK_TARGET
        after_ok = case == "loggers" or r["after"] <= r["baseline"] + AFTER_SLACK
        met = met and peak_ok and after_ok
        what = (f"{args.clients} control clients reading {args.rate / 1e6:g} MB/s each" if case == "readers"
                else f"{args.clients} --logstamp log clients that never read")
        print(f"{case}: {what}")
        print(f"  RSS baseline {r['baseline'] / MIB:6.1f} MiB   peak {r['peak'] / MIB:6.1f} MiB "
              f"(target <= 250: {'met' if peak_ok else 'NOT MET'})   after they left {r['after'] / MIB:6.1f} MiB"
              + ("" if case == "loggers" else f" (target <= baseline + 64: {'met' if after_ok else 'NOT MET'})"))
        if case == "readers":
            print(f"  each client read {r['mean_read'] / 1e6:.1f} MB on average; "
                  f"{r['told']} of {args.clients} were told of skipped output")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
