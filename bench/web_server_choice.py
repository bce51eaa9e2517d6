#!/usr/bin/env python3
"""Which ASGI server carries the browser console (issue #12, item 4): measured, not guessed.

    python bench/web_server_choice.py                    # every candidate
    python bench/web_server_choice.py --only anycorn --sockets 200

Candidates: a Starlette app (on anyio's trio backend) served by

* ``hypercorn``: ``hypercorn.trio.serve``, hypercorn's own trio worker;
* ``anycorn``: ``anycorn.serve``, the anyio port of hypercorn, run on trio.

Each candidate runs in a fresh process (``--serve NAME PORT``) exactly as a naive embedder would
write it: ``trio.run`` with a nursery holding a busy task (it wakes every 10 ms and counts) and
the server, started with ``nursery.start(serve, ...)`` and nothing around it. The app has one
HTTP route (``/``: the busy task's count) and one WebSocket echo route (``/ws``). This process
measures, with stdlib sockets only:

* **start**: from ``Popen`` to the server's first answer on ``/`` (interpreter start and imports
  included), and the imports alone, as the child reports them;
* **RSS** (VmRSS from /proc) idle, and with ``--sockets`` WebSockets open (each has echoed once);
* **survival**: each malformed input below on a fresh connection; afterwards the process must
  still run, the busy task must still count, and ``/`` must still answer 200:
  ``issue225`` (hypercorn #225: a valid upgrade request followed by one more byte in the same
  packet), ``garbage`` (4 KiB of random bytes), ``truncated`` (``GET /`` and EOF), ``huge-header``
  (one 1 MiB header), ``bad-key`` (Sec-WebSocket-Key that is not 16 bytes of base64),
  ``bad-version`` (Sec-WebSocket-Version: 99), and ``slowloris`` (``--slow`` connections dribbling
  one header byte a second for ``--slow-seconds``: a good request must still be answered
  meanwhile; the figure is how many of them the server had dropped by the end).

Results on the machine this was chosen on (2 cores, Python 3.11, trio 0.35, Starlette 1.10,
hypercorn 0.18.0, anycorn 0.20.1; 100 WebSockets; two runs):

    candidate  start s    imports s  RSS idle  RSS 100 ws  issue225             the other six
    hypercorn  0.14-0.20  0.11-0.16  35.6 MiB  38.4 MiB    process exited (1)   survived
    anycorn    0.15       0.12       38.0 MiB  41.4 MiB    survived             survived

Start time is the same within noise; anycorn costs about 2.4 MiB more idle and the same
~30 KiB per open WebSocket. Each malformed case ran on a fresh process. Slowloris (20
connections for 5 s): both answered a good request meanwhile and neither dropped a slow
connection (their idle timeout does not cover a request in progress): a bound on connections
belongs to the web console itself.

Maintenance, from PyPI and the trackers (December 2026):

* hypercorn: 0.17.3 2024-05-28, then 0.18.0 2025-11-08, one maintainer (pgjones); #225 (the
  process exits on a malformed upgrade, on trio) open since 2024-05-08.
* anycorn: hypercorn ported onto anyio (Philip Graham Jones, David Brochart), 19 releases from
  0.16.0 2024-04-03 to 0.20.1 2026-09-17, nine of them in 2026; its PR #50 (merged) fixed ten
  of hypercorn's open issues, #225 among them, with a regression test. Needs anyio>=4.10,<5.
* Starlette: 1.7 .. 1.10 from 2026-09-23 to 2026-10-24 (Kludex), runs on anyio's trio backend.

Choice: anycorn, because a client cannot end the process with it, and it is the maintained one.
pyprocserv still contains it (pyprocserv/_web/serve.py): whatever a server lets escape ends only
the web extra, which the supervisor restarts.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/support: the helpers tests/ and bench/ share
from support.ports import free_port  # noqa: E402
from support.proc import rss_kib  # noqa: E402

HOST = "127.0.0.1"
CANDIDATES = ("hypercorn", "anycorn")
KEY = base64.b64encode(b"0123456789abcdef").decode()


# -- the server under test (run as a child process: --serve NAME PORT) -------------------------

def serve(name: str, port: int) -> None:
    """Serve the tiny app with candidate ``name`` beside a busy task, embedded naively."""
    started = time.perf_counter()
    import trio
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute

    ticks = 0

    async def count(request):
        return PlainTextResponse(str(ticks))

    async def echo(websocket):
        await websocket.accept()
        while True:
            await websocket.send_text(await websocket.receive_text())

    app = Starlette(routes=[Route("/", count), WebSocketRoute("/ws", echo)])
    if name == "hypercorn":
        from hypercorn.config import Config
        from hypercorn.trio import serve as run_server
    else:
        from anycorn import Config
        from anycorn import serve as run_server
    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    imported = time.perf_counter() - started

    async def busy():
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            await nursery.start(run_server, app, config)
            print(f"imports {imported:.3f}", flush=True)

    trio.run(main)


# -- the client side ---------------------------------------------------------------------------

def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def get(port: int) -> tuple[int, bytes]:
    """``GET /``: (status, body); (0, b"") when nothing answers."""
    try:
        with connect(port, 3.0) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), body
    except (IndexError, ValueError):
        return 0, b""


def upgrade(key: str = KEY, version: str = "13") -> bytes:
    return (f"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode()


def text_frame(payload: bytes) -> bytes:
    """A masked client text frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_websocket(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(upgrade())
    head = read_response_head(sock)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head[:60]!r}")
    sock.sendall(text_frame(b"hello"))
    if b"hello" not in sock.recv(64):
        raise RuntimeError("no echo")
    return sock


MALFORMED = {
    "issue225": upgrade() + b"x",
    "garbage": random.Random(225).randbytes(4096),
    "truncated": b"GET /",
    "huge-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
    "bad-key": upgrade(key="not-a-key"),
    "bad-version": upgrade(version="99"),
}


def send_malformed(port: int, data: bytes) -> None:
    try:
        with connect(port, 2.0) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    except OSError:
        pass


def alive_and_answering(proc: subprocess.Popen, port: int) -> str:
    """"ok", or what went wrong: the process exited, / failed, or the busy task stopped."""
    time.sleep(0.3)
    if proc.poll() is not None:
        return f"process exited ({proc.returncode})"
    status, first = get(port)
    time.sleep(0.1)
    _, second = get(port)
    if status != 200:
        return f"/ answered {status or 'nothing'}"
    if int(second or 0) <= int(first or 0):
        return "busy task stopped"
    return "ok"


def slowloris(proc: subprocess.Popen, port: int, count: int, seconds: float) -> str:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    socks = [connect(port) for _ in range(count)]
    answered = True
    dropped: set[int] = set()
    for step in range(int(seconds)):
        for i, sock in enumerate(socks):
            try:
                sock.sendall(request[step:step + 1])
            except OSError:
                dropped.add(i)
        answered = answered and get(port)[0] == 200
        time.sleep(1.0)
    for sock in socks:
        sock.close()
    health = alive_and_answering(proc, port)
    return (f"{health}; good request answered meanwhile: {'yes' if answered else 'NO'}; "
            f"{len(dropped)}/{count} dropped by the server")


def start(name: str) -> tuple[subprocess.Popen, int, float, str]:
    """A fresh server process: (process, port, seconds until / answered, imports as it reports)."""
    port = free_port()
    begun = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", name, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    imports = proc.stdout.readline().split()
    while get(port)[0] != 200:
        if proc.poll() is not None or time.perf_counter() - begun > 30:
            proc.kill()
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    return proc, port, time.perf_counter() - begun, imports[1] if len(imports) == 2 else "?"


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def measure(name: str, sockets: int, slow: int, slow_seconds: float) -> dict[str, str]:
    """Start time and RSS in one process, then each malformed input in a fresh one."""
    result: dict[str, str] = {}
    proc, port, took, imports = start(name)
    try:
        result["start s"] = f"{took:.2f}"
        result["imports s"] = imports
        time.sleep(1.0)
        result["RSS idle MiB"] = f"{rss_kib(proc.pid) / 1024:.1f}"
        open_ones = [open_websocket(port) for _ in range(sockets)]
        time.sleep(0.5)
        result[f"RSS {sockets} ws MiB"] = f"{rss_kib(proc.pid) / 1024:.1f}"
        for sock in open_ones:
            sock.close()
    finally:
        stop(proc)
    for case, data in MALFORMED.items():
        proc, port, _, _ = start(name)
        try:
            send_malformed(port, data)
            result[case] = alive_and_answering(proc, port)
        finally:
            stop(proc)
    proc, port, _, _ = start(name)
    try:
        result["slowloris"] = slowloris(proc, port, slow, slow_seconds)
    finally:
        stop(proc)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=CANDIDATES, default=list(CANDIDATES))
    parser.add_argument("--sockets", type=int, default=100, help="WebSockets open for the RSS figure")
    parser.add_argument("--slow", type=int, default=20, help="slowloris connections")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    from importlib.metadata import version
    print("versions: " + ", ".join(f"{p} {version(p)}" for p in ("trio", "anyio", "starlette", *args.only)))
    for name in args.only:
        print(f"\n{name}:")
        for key, value in measure(name, args.sockets, args.slow, args.slow_seconds).items():
            print(f"  {key:<16} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
