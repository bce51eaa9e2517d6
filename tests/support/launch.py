"""pyprocserv under test: a real process found through its info file, or a server in this process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from pyprocserv import Config, ProcessServer

from .client import OFFER, Client, close_at_end, connect

PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PID_RE = re.compile(rb"The PID of new child \"[^\"]*\" is: (\d+)")

_SHORT_TMPDIRS: list[str] = []


def short_tmpdir() -> str:
    """A short directory for UNIX socket paths (pytest's tmp_path can pass 108 bytes).

    conftest removes it after the test (``remove_short_tmpdirs``).
    """
    path = tempfile.mkdtemp(prefix="pps", dir="/tmp")
    _SHORT_TMPDIRS.append(path)
    return path


def remove_short_tmpdirs() -> None:
    while _SHORT_TMPDIRS:
        shutil.rmtree(_SHORT_TMPDIRS.pop(), ignore_errors=True)


async def reap(process: trio.Process) -> None:
    """Kill ``process`` if it still runs and wait for it, even while being cancelled."""
    if process.poll() is None:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def read_info(path: str) -> tuple[int, list[str]]:
    """The server's pid and endpoints from its info file (``pid:N``, then one endpoint a line)."""
    lines = Path(path).read_text().splitlines()
    return int(lines[0].split(":")[1]), lines[1:]


def child_script(code: str) -> tuple[str, ...]:
    """A Python child running ``code`` (unbuffered, so output reaches the pty at once)."""
    return (PY, "-u", "-c", code)


async def serve_and_connect(nursery: trio.Nursery, config: Config, **options) -> tuple[ProcessServer, Client]:
    """An in-process server on ``config`` (and ``ProcessServer``'s ``options``, e.g. ``extras``)
    and one client on its first endpoint, past the greeting."""
    server = ProcessServer(config, **options)
    await nursery.start(server.run)
    client = await connect(server.endpoints[0])
    close_at_end(nursery, client)
    await client.expect(OFFER)
    return server, client


class ServerProcess:
    """``python -m pyprocserv`` in the foreground (``-f``), found through its info file.

    Use ``async with ServerProcess([...options and command...]) as server:``; on leaving,
    the server gets SIGTERM and must exit within the timeout.
    """

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 preexec_fn=None, foreground: bool = True) -> None:
        self.dir = short_tmpdir()
        self.info = os.path.join(self.dir, "info")
        self.args = args
        self.env = env
        self.cwd = cwd or self.dir
        self.preexec_fn = preexec_fn
        self.foreground = foreground
        self.process: trio.Process | None = None
        self.endpoints: list[str] = []
        self.pid = 0
        self.stdout = os.path.join(self.dir, "stdout")
        self.stderr = os.path.join(self.dir, "stderr")
        self.returncode: int | None = None

    async def __aenter__(self) -> "ServerProcess":
        argv = [PY, "-m", "pyprocserv", "-I", self.info] + (["-f"] if self.foreground else []) + self.args
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = REPO
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=self.cwd,
                preexec_fn=self.preexec_fn,
            )
        try:
            with trio.fail_after(15):
                while True:
                    if os.path.exists(self.info):
                        lines = Path(self.info).read_text().splitlines()
                        if lines and lines[-1] and len(lines) >= 2:
                            break
                    if self.process.poll() is not None and self.foreground:
                        raise AssertionError("server exited: " + Path(self.stderr).read_text())
                    await trio.sleep(0.02)
        except BaseException:
            await reap(self.process)  # a server that never got ready must not outlive its test
            raise
        self.pid, self.endpoints = read_info(self.info)
        return self

    def control(self) -> str:
        return self.endpoints[-1]  # info file order: newest (log) first, first control last

    async def wait(self, timeout: float = 15) -> int:
        assert self.process is not None
        with trio.fail_after(timeout):
            self.returncode = await self.process.wait()
        return self.returncode

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            try:
                os.kill(self.process.pid, 15)
            except ProcessLookupError:
                pass
            try:
                await self.wait()
            except trio.TooSlowError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError("server did not exit on SIGTERM")

    def read_stderr(self) -> str:
        return Path(self.stderr).read_text(errors="replace")
