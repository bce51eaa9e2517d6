"""Benchmark client: K raw TCP connections to a process server, counted at C speed.

One process serves several connections with one epoll loop, each socket with a large receive
buffer (SO_RCVBUF = net.core.rmem_max, set before connecting), reading with ``recv_into`` into one
preallocated 1 MiB buffer and counting the payload byte with ``bytearray.count`` (no Python
loop over bytes). Protocol with compare.py, one JSON line each way:

1. connect all K (non-blocking, in parallel), read each greeting up to procServ's telnet offer
   (IAC WILL ECHO IAC DO LINEMODE), print ``{"phase": "ready", ...}``;
2. wait for a line ``go`` on stdin (EOF: give up); on ``go r`` send ^R on the first
   connection, which starts the child of a server run with ``-w``;
3. read until every connection has ``--expect`` payload bytes, or is closed, or nothing arrived
   for ``--idle`` seconds, or ``--timeout`` passed; print ``{"phase": "done", ...}`` with, per
   connection: payload count, time of the first and last payload byte (CLOCK_MONOTONIC, which all
   processes share), total bytes, closed, and whether pyprocserv's skip notice was seen.
"""

import argparse
import errno
import json
import resource
import select
import socket
import sys
import time

from pyprocserv._core.messages import TELNET_OFFER

SKIP = b"of output skipped"


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--byte", type=int, default=ord("#"))
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--connect-timeout", type=float, default=20.0)
    p.add_argument("--idle", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--bufsize", type=int, default=1 << 20)
    p.add_argument("--window", type=int, default=0, help="handshakes in flight at once (0: all)")
    p.add_argument("--rcvbuf", type=int, default=-1,
                   help="SO_RCVBUF before connect: -1 net.core.rmem_max (the kernel doubles it), 0 autotuning")
    a = p.parse_args()
    raise_nofile(a.conns + 64)
    rcvbuf = a.rcvbuf
    if rcvbuf < 0:
        try:
            with open("/proc/sys/net/core/rmem_max") as f:
                rcvbuf = int(f.read())
        except (OSError, ValueError):
            rcvbuf = 0

    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    errors: dict[str, int] = {}
    order: list[int] = []

    def err(name: str) -> None:
        errors[name] = errors.get(name, 0) + 1

    # Phase 1: connect and read greetings, at most --window handshakes in flight (procServ
    # listens with a backlog of 5: a burst of 1000 SYNs mostly waits for retransmissions).
    greet: dict[int, bytearray] = {}
    greeted: set[int] = set()
    pending: set[int] = set()
    to_open = a.conns
    window = a.window or a.conns
    t_start = time.monotonic()
    deadline = t_start + a.connect_timeout

    def open_more() -> None:
        nonlocal to_open
        while to_open and len(pending) < window:
            to_open -= 1
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as exc:
                err(errno.errorcode.get(exc.errno, str(exc)))
                continue
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", a.port))
            if rc not in (0, errno.EINPROGRESS):
                err(errno.errorcode.get(rc, str(rc)))
                s.close()
                continue
            socks[s.fileno()] = s
            order.append(s.fileno())
            greet[s.fileno()] = bytearray()
            pending.add(s.fileno())
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT)

    open_more()
    while pending and time.monotonic() < deadline:
        for fd, ev in ep.poll(0.2):
            if fd not in pending:
                continue
            s = socks[fd]
            if ev & select.EPOLLOUT:
                rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    err(errno.errorcode.get(rc, str(rc)))
                    pending.discard(fd)
                    continue
                ep.modify(fd, select.EPOLLIN)
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    d = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    err(errno.errorcode.get(exc.errno, str(exc)))
                    pending.discard(fd)
                    continue
                if not d:
                    err("EOF before greeting")
                    pending.discard(fd)
                    continue
                greet[fd] += d
                if TELNET_OFFER in greet[fd]:
                    greeted.add(fd)
                    pending.discard(fd)
        open_more()
    connect_s = time.monotonic() - t_start
    if to_open:
        errors["not attempted (connect timeout)"] = to_open
    if pending:
        errors["no greeting in time"] = len(pending)
    for fd in list(socks):
        if fd not in greeted:
            try:
                ep.unregister(fd)
            except OSError:
                pass
            socks.pop(fd).close()
    order = [fd for fd in order if fd in greeted]
    emit({"phase": "ready", "greeted": len(greeted), "connect_s": connect_s, "errors": dict(errors)})

    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        return
    t_go = time.monotonic()
    if line[1:] == ["r"] and order:
        try:
            socks[order[0]].send(b"\x12")
        except OSError as exc:
            err("ctrl-r " + errno.errorcode.get(exc.errno, str(exc)))

    # Phase 2: count the payload.
    buf = bytearray(a.bufsize)
    byte = bytes([a.byte])
    count = {fd: 0 for fd in order}
    total = {fd: 0 for fd in order}
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    closed: set[int] = set()
    skipped: set[int] = set()
    active = set(order)
    last_data = time.monotonic()
    end = t_go + a.timeout
    while active:
        now = time.monotonic()
        if now > end or now - last_data > a.idle:
            break
        for fd, ev in ep.poll(0.2):
            if fd not in active:
                continue
            try:
                n = socks[fd].recv_into(buf)
            except BlockingIOError:
                continue
            except OSError as exc:
                err(errno.errorcode.get(exc.errno, str(exc)))
                n = 0
            now = time.monotonic()
            if n == 0:
                closed.add(fd)
                active.discard(fd)
                ep.unregister(fd)
                continue
            last_data = now
            total[fd] += n
            c = buf.count(byte, 0, n)
            if c:
                if fd not in first:
                    first[fd] = now
                last[fd] = now
                count[fd] += c
                if count[fd] >= a.expect:
                    active.discard(fd)
                    ep.unregister(fd)
            if buf.find(SKIP, 0, n) >= 0:
                skipped.add(fd)
    conns = [
        [count[fd], first.get(fd), last.get(fd), total[fd], fd in closed, fd in skipped]
        for fd in order
    ]
    emit({"phase": "done", "t_go": t_go, "conns": conns, "errors": errors})
    for s in socks.values():
        s.close()


if __name__ == "__main__":
    main()
