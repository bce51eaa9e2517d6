#!/usr/bin/env python3
"""Host mode's cost: RSS of one pyprocserv serving N instances, and `status` time for all of them.

    python bench/host_memory.py [--instances 50] [--no-pvs] [--manager-pvs]

Writes N instances (child: /bin/sleep) into a temporary --conf-dir, runs
``pyprocserv-manage run`` (with host and instance PVs unless --no-pvs, and the supervisor IOC
manager's ``MAN:`` PVs with --manager-pvs), waits until every
instance runs, then prints the host process's RSS (children not counted: they are the IOCs),
its CPU over 10 idle seconds, and the median wall time of ``pyprocserv-manage status`` and
``status --table`` over 5 calls. Targets (issue #6): RSS <= 80 MB for 50 instances, status < 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/support: the helpers tests/ and bench/ share
from support.ports import free_port  # noqa: E402
from support.proc import cpu_seconds, rss_kib  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--no-pvs", action="store_true")
    parser.add_argument("--manager-pvs", action="store_true", help="also serve BENCH:MAN:NAME_control, _hb, all")
    args = parser.parse_args()
    conf = tempfile.mkdtemp(prefix="pphost", dir="/tmp")
    os.makedirs(f"{conf}/procServ.d")
    for i in range(args.instances):
        with open(f"{conf}/procServ.d/ioc{i:03d}.conf", "w") as f:
            f.write(f"[ioc{i:03d}]\ncommand = /bin/sleep 1000000\nchdir = /tmp\n")
    env = dict(os.environ, PYTHONPATH=ROOT, EPICS_CA_SERVER_PORT=str(free_port()))
    manage = [sys.executable, "-m", "pyprocserv._apps.manage", "--conf-dir", conf]
    run = manage + ["run"] + ([] if args.no_pvs else ["--pv-prefix", "BENCH:HOST:"])
    run += ["--manager-pvs", "BENCH"] if args.manager_pvs else []
    host = subprocess.Popen(run, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            out = subprocess.run(manage + ["status"], env=env, capture_output=True, text=True).stdout
            if out.count(" Running") == args.instances:
                break
            if time.monotonic() > deadline or host.poll() is not None:
                raise SystemExit("host mode did not start every instance:\n" + out)
            time.sleep(0.5)
        time.sleep(2)  # let start-up garbage settle
        rss = rss_kib(host.pid)
        cpu0 = cpu_seconds(host.pid)
        time.sleep(10)
        cpu = cpu_seconds(host.pid) - cpu0
        timings = {}
        for variant in (["status"], ["status", "--table"]):
            samples = []
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run(manage + variant, env=env, capture_output=True, check=True)
                samples.append(time.perf_counter() - t0)
            timings[" ".join(variant)] = statistics.median(samples)
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            host.kill()
        shutil.rmtree(conf, ignore_errors=True)
    pvs = "without PVs" if args.no_pvs else "with host and instance PVs"
    pvs += " and the manager's PVs" if args.manager_pvs else ""
    print(f"host mode, {args.instances} instances, {pvs}, on {os.cpu_count()} cores")
    print(f"  RSS of the host process: {rss / 1024:.1f} MiB (target <= 80 MB for 50)")
    print(f"  CPU over 10 s idle:      {cpu:.2f} s")
    for name, seconds in timings.items():
        print(f"  pyprocserv-manage {name}: {seconds * 1000:.0f} ms median of 5 (target < 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
