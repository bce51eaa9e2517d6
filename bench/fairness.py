#!/usr/bin/env python3
"""Fairness: a neighbour's keystroke echo while other clients flood the server with telnet.

    python bench/fairness.py                                   # this checkout only
    python bench/fairness.py --before ../old                   # another checkout too, same run
    python bench/fairness.py --before ../old --before-python ../old/.venv/bin/python

One server process runs two ProcessServers, A and B, in one trio loop (as host mode does),
each with the child ``sh -c 'stty -icanon; exec cat >/dev/null'`` (the pty echoes each key).
Flooders are helper processes that connect to A and send as fast as A takes it, never reading:
``--option-storms`` of them send ``IAC DO x`` / ``IAC WILL x`` for random options, and
``--naws-floods`` of them send ``IAC WILL NAWS`` then window sizes (random, so every one is a
change). A neighbour control client sends one key at a time (TCP_NODELAY) and waits for its
echo: first with no flood (``quiet``), then under the flood on A (``same server``) and on B
(``host``: another instance of the same process). Figures are p50, p99 and max in ms, and how
fast A took the flood in (MB/s, all flooders together). Target (issue #9): p50 <= 20 ms with four
option storms and one NAWS flood, on the same server and across instances.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/support: the helpers tests/ and bench/ share
from support.client import OFFER  # noqa: E402  (IAC WILL ECHO, IAC DO LINEMODE: the end of every greeting)
from support.ports import free_port  # noqa: E402

ECHO_CHILD = ["/bin/sh", "-c", "stty -icanon; exec cat >/dev/null"]
IAC, SB, SE, WILL, DO, NAWS = 255, 250, 240, 251, 253, 31

SERVE = """
import sys, trio
from pyprocserv import ProcessServer
from pyprocserv._core.cli import parse_args

async def main(ports):
    async with trio.open_nursery() as nursery:
        for name, port in zip("AB", ports):
            config = parse_args(["pyprocserv", "-q", "-n", name, port, *sys.argv[3:]]).config
            await nursery.start(ProcessServer(config).run)
        print("ready", flush=True)

trio.run(main, sys.argv[1:3])
"""


# -- helper processes ------------------------------------------------------------------------


def storm(kind: str, rng: random.Random) -> bytes:
    """64 KiB of one flood: random option requests, or random window sizes."""
    out = bytearray()
    if kind == "naws":
        out += bytes((IAC, WILL, NAWS))
    while len(out) < 1 << 16:
        if kind == "options":
            out += bytes((IAC, rng.choice((DO, WILL)), rng.randrange(256)))
        else:
            size = bytes(rng.randrange(1, 255) for _ in range(4))  # no 0xFF: no IAC doubling
            out += bytes((IAC, SB, NAWS)) + size + bytes((IAC, SE))
    return bytes(out)


def flood(kind: str, port: int) -> None:
    """Connect, read the greeting, then send the storm over and over until SIGTERM; print bytes sent."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        recv_greeting(s)
        print("flooding", flush=True)
        data = storm(kind, random.Random())
        sent = 0
        s.settimeout(0.2)
        while not stop:
            try:
                sent += s.send(data)
            except socket.timeout:
                pass
    print(sent, flush=True)


# -- the driver ------------------------------------------------------------------------------


def recv_greeting(s: socket.socket) -> None:
    got = b""
    while OFFER not in got:
        data = s.recv(4096)
        if not data:
            raise SystemExit("connection closed before the greeting ended")
        got += data


def echo_samples(port: int, keys: int, warm: int = 20) -> list[float]:
    """Milliseconds from sending one key to reading its echo, ``keys`` times."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        recv_greeting(s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        time.sleep(0.3)  # stty -icanon has run
        samples = []
        for i in range(warm + keys):
            key = b"abcdefghijklmnopqrstuvwxyz"[i % 26 : i % 26 + 1]
            t0 = time.perf_counter()
            s.sendall(key)
            while key not in s.recv(4096):
                pass
            if i >= warm:
                samples.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)  # a fast typist, not a flood of our own
    return samples


def measure(code: str, python: str, args: argparse.Namespace) -> dict[str, tuple[float, ...]]:
    ports = [free_port(), free_port()]
    env = dict(os.environ, PYTHONPATH=code)
    server = subprocess.Popen([python, "-c", SERVE, *map(str, ports), *ECHO_CHILD], env=env, cwd=code,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    results: dict[str, tuple[float, ...]] = {}
    try:
        if server.stdout is None or server.stdout.readline().strip() != b"ready":
            raise SystemExit(f"the server in {code} did not start")
        results["quiet"] = summary(echo_samples(ports[1], args.keys), 0)
        for case, port in (("same server", ports[0]), ("host", ports[1])):
            kinds = ["options"] * args.option_storms + ["naws"] * args.naws_floods
            flooders = [
                subprocess.Popen([sys.executable, __file__, "--flood", kind, str(ports[0])],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
                for kind in kinds
            ]
            started = time.monotonic()
            try:
                for f in flooders:
                    assert f.stdout is not None and f.stdout.readline().strip() == b"flooding"
                time.sleep(args.settle)
                samples = echo_samples(port, args.keys)
            finally:
                for f in flooders:
                    f.terminate()
                sent = [int(f.communicate(timeout=30)[0] or 0) for f in flooders]
            results[case] = summary(samples, sum(sent) / (time.monotonic() - started))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return results


def summary(samples: list[float], flood_rate: float) -> tuple[float, ...]:
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99, samples[-1], flood_rate / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", metavar="DIR", help="another checkout to measure first (e.g. main)")
    p.add_argument("--before-python", default=sys.executable)
    p.add_argument("--option-storms", type=int, default=4)
    p.add_argument("--naws-floods", type=int, default=1)
    p.add_argument("--keys", type=int, default=200, help="keystrokes per figure")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of flood before the first key")
    p.add_argument("--flood", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.flood:
        flood(args.flood[0], int(args.flood[1]))
        return 0
    runs = ([("before", args.before, args.before_python)] if args.before else []) + [("after", ROOT, sys.executable)]
    print(f"{args.option_storms} option storms + {args.naws_floods} NAWS floods on A; "
          f"neighbour echo over {args.keys} keys, ms")
    print(f"{'code':7} {'neighbour':12} {'p50':>8} {'p99':>8} {'max':>8} {'flood MB/s':>10}")
    for label, code, python in runs:
        for case, (p50, p99, worst, mb) in measure(code, python, args).items():
            print(f"{label:7} {case:12} {p50:8.2f} {p99:8.2f} {worst:8.2f} {mb:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
