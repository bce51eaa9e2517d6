#!/usr/bin/env python3
"""What the CA server costs in the IOC's process, and what it would cost in a helper process.

    python bench/ca_process_cost.py [--runs 5]
    python bench/ca_process_cost.py --oversize [--runs 6]   # RSS after 64 MiB announcements

For the design decision of issue #9 (in-process CA server with per-circuit containment, or a
helper process): the median over ``--runs`` of RSS (once idle) and start time of
(a) ``pyprocserv`` without PVs (start: the info file appears),
(b) ``pyprocserv --pv-prefix`` (start: the info file appears, which is after the CA server
    listens, and the CA port answers a VERSION message),
(c) a bare process that imports caproto and serves the same PVs (``ProcessPVs``' pvproperties),
    i.e. what a helper process would add (start: the CA port answers).

``--oversize`` starts (b) and sends, ``--runs`` times, a header announcing a 64 MiB payload
followed by as much of it as the server takes, then prints the server's RSS before and after.
Run it with PYTHONPATH pointing at another checkout to measure that code.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/support: the helpers tests/ and bench/ share
from support.ports import free_port  # noqa: E402
from support.proc import rss_kib  # noqa: E402

HELLO = struct.pack(">HHHHII", 0, 0, 0, 13, 0, 0)  # VERSION, priority 0, protocol 13

BARE_SERVER = """\
import trio
from caproto.server import PVGroup, pvproperty
from pyprocserv._ca.pvs import ProcessPVs, serve

# ProcessPVs' pvproperties in a group of their own: the same PVs, without a process server.
HelperPVs = type("HelperPVs", (PVGroup,), {name: value for name, value in vars(ProcessPVs).items()
                                           if isinstance(value, pvproperty)})


class Group(HelperPVs):
    async def follow(self):
        await trio.sleep_forever()


trio.run(serve, [Group(prefix="BENCH:")])
"""


def ca_env(port: int) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ROOT), EPICS_CA_SERVER_PORT=str(port),
                EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO", EPICS_CAS_BEACON_ADDR_LIST="127.255.255.255")


def answers_version(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(HELLO)
            return len(sock.recv(16)) > 0
    except OSError:
        return False


def wait_until(ready, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit("not ready in time")
        time.sleep(0.005)


def start(kind: str, workdir: str) -> tuple[subprocess.Popen, float, int]:
    """Start one process of ``kind``; its Popen, its start time in seconds and its CA port."""
    port = free_port()
    info = os.path.join(workdir, f"info-{port}")
    if kind == "bare":
        argv = [sys.executable, "-c", BARE_SERVER]
    else:
        pvs = ["--pv-prefix", "BENCH:"] if kind == "pvs" else []
        argv = [sys.executable, "-m", "pyprocserv", "-q", "-f", "-I", info, *pvs, "0", "/bin/sleep", "1000"]
    began = time.monotonic()
    process = subprocess.Popen(argv, env=ca_env(port), cwd=workdir, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kind != "bare":
        wait_until(lambda: os.path.exists(info) and open(info).read().count("\n") >= 2)
    if kind != "plain":
        wait_until(lambda: answers_version(port))
    return process, time.monotonic() - began, port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(15)


def measure_costs(runs: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        print(f"{'':34} {'RSS MiB':>8} {'start s':>8}   (median of {runs})")
        for kind, label in [("plain", "pyprocserv, no PVs"), ("pvs", "pyprocserv --pv-prefix"),
                            ("bare", "bare caproto process, same PVs")]:
            rss, times = [], []
            for _ in range(runs):
                process, took, _port = start(kind, workdir)
                time.sleep(1.0)  # idle: start-up garbage collected, heartbeat running
                rss.append(rss_kib(process.pid) / 1024)
                times.append(took)
                stop(process)
            print(f"{label:34} {statistics.median(rss):8.1f} {statistics.median(times):8.2f}")


def measure_oversize(runs: int) -> None:
    announced = 64 << 20
    chunk = bytes(256 << 10)
    with tempfile.TemporaryDirectory() as workdir:
        process, _took, port = start("pvs", workdir)
        try:
            time.sleep(1.0)
            before = rss_kib(process.pid)
            taken = []
            for _ in range(runs):
                sent = 0
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    try:
                        sock.sendall(HELLO + struct.pack(">HHHHIIII", 4, 0xFFFF, 0, 0, 1, 1, announced, 0))
                        while sent < announced - len(chunk):
                            sock.sendall(chunk)
                            sent += len(chunk)
                    except OSError:
                        pass  # the server closed the circuit
                taken.append(sent >> 20)
                time.sleep(0.5)
            time.sleep(1.0)
            alive = process.poll() is None
            after = rss_kib(process.pid) if alive else -1
            print(f"{runs} x 64 MiB announced: MiB sent before the server closed: {taken}")
            print(f"server RSS: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after"
                  + ("" if alive else " (the server died)"))
        finally:
            if process.poll() is None:
                stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--oversize", action="store_true")
    args = parser.parse_args()
    if args.oversize:
        measure_oversize(args.runs or 6)
    else:
        measure_costs(args.runs or 5)


if __name__ == "__main__":
    main()
