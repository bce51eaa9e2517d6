#!/usr/bin/env python3
"""100 browser spies on a streaming IOC: the server's memory and what each spy reads (issue #12).

    python bench/web_spies.py                       # every case, 100 spies, about a minute
    python bench/web_spies.py --only stalled --spies 200
    python bench/web_spies.py --deflate            # spies that offer permessage-deflate, as browsers do
    python bench/web_spies.py --server-root /tmp/old   # measure another source tree

Each case starts a fresh ``python -m pyprocserv -f`` (standard output to /dev/null) whose child
writes lines of 80 bytes as fast as the pty takes them, waits ``--settle`` seconds and reads the
server's RSS (VmRSS from /proc; the child is not counted):

* ``idle``: without ``--web``;
* ``web``: with ``--web PORT --web-users FILE`` (one viewer: every WebSocket is a read-only spy),
  idle. Each case below starts its own such server and takes its idle RSS as the baseline;
* ``connected``: N spies connected to a quiet child (it writes nothing): what a WebSocket
  connection costs by itself;
* ``readers``: N spies on ``ws/ioc/NAME/console`` (trio-websocket, in a helper process) that read every
  message for ``--seconds``; the RSS is sampled every 50 ms (peak), each spy's bytes give
  the throughput it got, and the server's CPU time over the bytes all spies read its cost per GB;
* ``stalled``: N spies that complete the handshake and never read again.

With ``--deflate`` the spies are plain wsproto clients that offer permessage-deflate (Chromium
and Firefox do; trio-websocket cannot): the server then compresses every message for each spy.

Then the helper exits (its sockets close), and ``--settle`` seconds later the RSS is read again
("after"). Target (issue #12: web clients share the console's memory budget): the peak stays
within the baseline plus ``--client-budget`` (64 MiB) and its heap's slack (``HEAP_SLACK``, a
fifth of it: the pty's chunks cost that much more RSS than their bytes, for telnet clients
too; 10 unstamped telnet log clients that never read take +76 MiB), plus ``PER_SPY`` (256 KiB)
for each spy, what a spy holds besides the output the budget counts: its connection (the ASGI
server's, Starlette's and the session's state, about 45 KiB: the ``connected`` case), its
message in flight (at most 64 KiB of output joined, and the WebSocket frame made of it: 128
KiB, ``_shell/session.py`` rule 7) and its references to the shared chunks queued for it (8
bytes a chunk). Once they have left, the RSS is back within 16 MiB of the baseline. The exit
code is 0 when every target was met.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/support: the helpers tests/ and bench/ share
from support.ports import free_port  # noqa: E402
from support.proc import cpu_seconds  # noqa: E402

import memory  # noqa: E402  (bench/memory.py: the streaming child, the server's RSS and its stop)
from memory import HOST, MIB, SKIP, STREAMER  # noqa: E402

KIB = 1 << 10
BUDGET = 64 * MIB  # the server's default --client-budget
HEAP_SLACK = 0.2  # of the budget: the heap around the queued chunks (see the docstring)
PER_SPY = 256 * KIB  # what a spy holds besides the output the budget counts (see the docstring)
AFTER_SLACK = 16 * MIB
USER, PASSWORD = "spy", "a spy's password"
IOC = "streamer"  # the server's -n: its console is CONSOLE
CONSOLE = f"/ws/ioc/{IOC}/console"
QUIET = "import time\nwhile True: time.sleep(60)\n"
CASES = ("idle", "web", "connected", "readers", "stalled")


# -- the spies (run as a helper process: --role spies) -------------------------------------------

def run_spies(port: int, cookie: str, count: int, read: bool, seconds: float, deflate: bool) -> None:
    """Open ``count`` consoles; each reads everything (``read``) or nothing, for ``seconds``."""
    import trio

    headers = [(b"origin", f"http://{HOST}:{port}".encode()), (b"cookie", cookie.encode())]
    got = [0] * count
    messages = [0] * count
    told = [False] * count
    tails = [b""] * count
    deflated = [False] * count  # the server accepted permessage-deflate

    def seen(i: int, data: bytes) -> None:
        got[i] += len(data)
        messages[i] += 1
        if not told[i]:
            told[i] = SKIP in tails[i] + data[:64] or SKIP in data
            tails[i] = data[-64:]

    async def spy(i: int, connected: trio.Semaphore, stop: trio.Event) -> None:
        from trio_websocket import ConnectionClosed, open_websocket

        async with open_websocket(HOST, port, CONSOLE, use_ssl=False, extra_headers=headers,
                                  receive_buffer_size=1 << 16 if read else 1 << 12) as ws:
            connected.release()
            if not read:
                await stop.wait()
                return
            with contextlib.suppress(ConnectionClosed):
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes):  # not the replay's end
                        seen(i, message)

    async def deflating_spy(i: int, connected: trio.Semaphore, stop: trio.Event) -> None:
        """A spy that offers permessage-deflate, as browsers do (trio-websocket cannot offer it)."""
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, BytesMessage, Request
        from wsproto.extensions import PerMessageDeflate

        ws = WSConnection(ConnectionType.CLIENT)
        async with await trio.open_tcp_stream(HOST, port) as stream:
            await stream.send_all(ws.send(Request(host=f"{HOST}:{port}", target=CONSOLE,
                                                  extensions=[PerMessageDeflate()], extra_headers=headers)))
            accepted = False
            while data := await stream.receive_some(1 << 16):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        deflated[i] = any(isinstance(e, PerMessageDeflate) for e in event.extensions)
                        accepted = True
                        connected.release()
                    elif isinstance(event, BytesMessage):
                        seen(i, event.data)
                if accepted and not read:
                    await stop.wait()
                    return

    one_spy = deflating_spy if deflate else spy

    async def main() -> None:
        connected = trio.Semaphore(0)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one_spy, i, connected, stop)
                if i % 10 == 9:
                    await trio.sleep(0.01)
            for _ in range(count):
                with trio.fail_after(30):
                    await connected.acquire()
            print("connected", flush=True)
            start = list(got)
            await trio.sleep(seconds)
            read_bytes = [g - s for g, s in zip(got, start)]
            print(json.dumps({"bytes": read_bytes, "seconds": seconds, "told": sum(told),
                              "messages": sum(messages), "deflated": sum(deflated)}), flush=True)
            os._exit(0)  # every socket closes at once: the spies leave together

    trio.run(main)


# -- the server ------------------------------------------------------------------------------------

class Server(memory.Server):
    """``pyprocserv -f`` with the streaming child; memory.py's ``rss()`` and ``stop()``."""

    def __init__(self, root: str, web: bool, budget: int | None, child: str = STREAMER) -> None:
        self.dir = tempfile.mkdtemp(prefix="ppsspy")
        self.info = os.path.join(self.dir, "info")
        self.port = free_port()
        self.web_port = free_port() if web else 0
        options = ["--client-budget", str(budget)] if budget else []
        if web:
            users = os.path.join(self.dir, "users")
            sys.path.insert(0, root)
            from pyprocserv._core.webusers import WebUser, hash_password, serialize

            with open(users, "w") as f:
                f.write(serialize([WebUser(USER, "viewer", hash_password(PASSWORD))]))
            options += ["--web", f"{HOST}:{self.web_port}", "--web-users", users]
        argv = [sys.executable, "-m", "pyprocserv", "-f", "-q", "-n", IOC, "-I", self.info, *options,
                str(self.port), sys.executable, "-c", child]
        env = dict(os.environ, PYTHONPATH=root)
        self.process = subprocess.Popen(argv, env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL)
        self.pid = self.process.pid
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the server did not start")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with open(self.info) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return False
        if len(lines) < 2 or not self.web_port:
            return len(lines) >= 2
        try:
            self.login()
        except OSError:
            return False
        return True

    def login(self) -> str:
        """The session cookie of the viewer, as a browser gets it from the login form."""
        conn = http.client.HTTPConnection(HOST, self.web_port, timeout=10)
        try:
            conn.request("POST", "/login", urlencode({"user": USER, "password": PASSWORD}),
                         {"Origin": f"http://{HOST}:{self.web_port}",
                          "Content-Type": "application/x-www-form-urlencoded"})
            reply = conn.getresponse()
            reply.read()
            cookie = reply.getheader("set-cookie")
        finally:
            conn.close()
        if not cookie:
            raise SystemExit(f"the login failed ({reply.status})")
        return cookie.partition(";")[0]

    def stop(self) -> None:
        super().stop()
        self.process.wait()


def measure(args: argparse.Namespace, case: str) -> dict:
    server = Server(args.server_root, web=case != "idle", budget=args.client_budget,
                    child=QUIET if case == "connected" else STREAMER)
    try:
        time.sleep(args.settle)
        baseline = server.rss()
        result: dict = {"baseline": baseline}
        if case in ("idle", "web"):
            return result
        cpu = cpu_seconds(server.pid)
        peak, line, spies = memory.peak_while(
            [sys.executable, os.path.abspath(__file__), "--role", "spies", "--port", str(server.web_port),
             "--cookie", server.login(), "--spies", str(args.spies), "--seconds", str(args.seconds),
             *(["--stalled"] if case != "readers" else []), *(["--deflate"] if args.deflate else [])],
            "spies", server.rss, baseline)
        summary = json.loads(line or "{}")
        result["cpu"] = cpu_seconds(server.pid) - cpu
        spies.wait(30)
        time.sleep(args.settle)
        result.update(summary, peak=peak, after=server.rss())
        return result
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--spies", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the spies stay")
    parser.add_argument("--settle", type=float, default=3.0, help="wait before the baseline and the after figure")
    parser.add_argument("--client-budget", type=int, default=0, help="the server's --client-budget (default: its own)")
    parser.add_argument("--deflate", action="store_true",
                        help="the spies offer permessage-deflate, as browsers do (wsproto, not trio-websocket)")
    parser.add_argument("--server-root", default=ROOT, help="source tree whose pyprocserv runs (default: this one)")
    parser.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cookie", help=argparse.SUPPRESS)
    parser.add_argument("--stalled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "spies":
        run_spies(args.port, args.cookie, args.spies, not args.stalled, args.seconds, args.deflate)
        return 0
    budget = args.client_budget or BUDGET
    allowed = budget * (1 + HEAP_SLACK) + args.spies * PER_SPY
    print(f"server: {args.server_root}; {args.spies} spies{' (deflate)' if args.deflate else ''} for "
          f"{args.seconds:g} s; {os.cpu_count()} cores; "
          f"budget {budget / MIB:g} MiB and {HEAP_SLACK:.0%} of it, {PER_SPY // KIB} KiB a spy")
    print(f"{'case':<9} {'RSS idle':>9} {'peak':>9} {'peak-idle':>10} {'after':>9} {'server CPU':>11}  spies")
    met = True
    web_idle = None
    for case in args.only:
        r = measure(args, case)
        if case == "web":
            web_idle = r["baseline"]
        if case in ("idle", "web"):
            print(f"{case:<9} {r['baseline'] / MIB:8.1f}M")
            continue
        grew = r["peak"] - r["baseline"]
        peak_ok = grew <= allowed
        after_ok = r["after"] <= r["baseline"] + AFTER_SLACK
        met = met and peak_ok and after_ok
        read = r.get("bytes", [])
        rates = sorted(b / r["seconds"] / 1e6 for b in read) if read else [0.0]
        sent = sum(read) / 1e9
        if case == "readers":
            spies = (f"each read {rates[len(rates) // 2]:.2f} MB/s (median; min {rates[0]:.2f}, "
                     f"max {rates[-1]:.2f}), {r.get('told', 0)} told of skips, "
                     f"{r.get('messages', 0) / max(1, r['seconds']):.0f} messages/s, "
                     f"server CPU {r['cpu'] / max(sent, 1e-9):.1f} s per GB read")
        else:
            spies = "never read" + (", the child writes nothing" if case == "connected" else "")
        if args.deflate:
            spies += f"; {r.get('deflated', 0)} of {args.spies} compressed"
        print(f"{case:<9} {r['baseline'] / MIB:8.1f}M {r['peak'] / MIB:8.1f}M {grew / MIB:9.1f}M "
              f"{r['after'] / MIB:8.1f}M {r['cpu']:10.1f}s  {spies}")
        print(f"{'':<9} target: peak-idle <= {allowed / MIB:.1f}M: {'met' if peak_ok else 'NOT MET'}; "
              f"after <= idle + {AFTER_SLACK // MIB}M: {'met' if after_ok else 'NOT MET'}")
    if web_idle is not None:
        print(f"the web console costs {web_idle / MIB:.1f} MiB idle (the 'web' row)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
