"""The real ``telnet`` client, driven under a pseudo-terminal as a person would drive it.

Attach, type a line and see it come back, ^X and see procServ's restart messages, learn the
window size through NAWS, and leave with the telnet escape ``^]`` and ``quit``. Needs
``telnet`` (Debian's package; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import select
import shutil
import time

import pytest

from support.client import tcp_address
from support.launch import ServerProcess

ptyprocess = pytest.importorskip("ptyprocess")
TELNET = shutil.which("telnet")
pytestmark = pytest.mark.skipif(
    TELNET is None and os.environ.get("CI") != "true",
    reason="telnet is not installed (apt-get install telnet); CI installs it",
)


class Terminal:
    """A person at a terminal: types keys and waits to see text."""

    def __init__(self, argv: list[str], rows: int = 24, columns: int = 80) -> None:
        self.proc = ptyprocess.PtyProcess.spawn(argv, dimensions=(rows, columns))
        self.seen = b""

    def wait_for(self, text: bytes, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"never saw {text!r}; screen: {self.seen[-600:]!r}"
            if select.select([self.proc.fd], [], [], 0.1)[0]:
                try:
                    self.seen += self.proc.read(4096)
                except EOFError:
                    break
        assert text in self.seen, f"never saw {text!r}; screen: {self.seen[-600:]!r}"
        return self.seen

    def type(self, keys: bytes) -> None:
        self.proc.write(keys)

    def close(self) -> None:
        self.proc.close(force=True)


async def test_a_person_attaches_types_restarts_and_leaves_with_telnet():
    assert TELNET, "CI must install telnet"
    async with ServerProcess(["--holdoff", "0", "-n", "catioc", "0", "/bin/cat"]) as server:
        host, port = tcp_address(server.control())
        term = Terminal([TELNET, host, str(port)])
        try:
            term.wait_for(b"@@@ Welcome to procServ")
            term.wait_for(b"connected (plus you)\r\n")
            term.type(b"hello there\r")
            term.wait_for(b"hello there\r\nhello there\r\n")  # the pty's echo, then cat's line
            term.type(b"\x18")
            screen = term.wait_for(b"@@@ @@@ @@@ @@@ @@@\r\n", timeout=10)
            after = screen.split(b"hello there\r\nhello there\r\n", 1)[1]
            term.wait_for(b'@@@ Restarting child "catioc"')
            screen = term.wait_for(b'@@@ The PID of new child "catioc" is: ')
            after = screen.split(b"hello there\r\nhello there\r\n", 1)[1]
            assert b"The process was killed by signal 9\r\n" in after
            assert b"@@@ Child process is shutting down, a new one will be restarted shortly\r\n" in after
            term.type(b"\x1d")  # ^]: telnet's escape
            term.wait_for(b"telnet>")
            term.type(b"quit\r")
            deadline = time.monotonic() + 10
            while term.proc.isalive():
                assert time.monotonic() < deadline, "telnet did not quit"
                time.sleep(0.05)
        finally:
            term.close()


async def test_the_real_telnet_client_sends_its_window_size_to_the_child():
    assert TELNET, "CI must install telnet"
    # The child prints its size at start and on every SIGWINCH: whichever comes first, the
    # telnet client's 101x33 must reach it.
    script = "stty size; trap 'stty size' WINCH; while :; do sleep 0.1; done"
    async with ServerProcess(["0", "/bin/sh", "-c", script]) as server:
        host, port = tcp_address(server.control())
        term = Terminal([TELNET, host, str(port)], rows=33, columns=101)
        try:
            term.wait_for(b"connected (plus you)\r\n")
            term.wait_for(b"33 101\r\n")
        finally:
            term.close()
