"""The child: one process under a fresh pseudo-terminal per start.

Rules:
1. A fresh pty per start (a hung-up master stays dead). The child is a session leader with the
   pty as its controlling terminal, so a typed ^C is SIGINT and ^Z is SIGTSTP, as under procServ.
2. The child inherits no server fd (close_fds), an empty signal mask and default dispositions
   (procServ leaks blocked SIGHUP/SIGPIPE/SIGTERM, issue #48).
3. We wait on a pidfd: no SIGCHLD handler, ever (one would turn exit codes into 0).
4. Linux reports the end of pty output as EIO, not b"": :meth:`PtyChild.read` turns it into b"".
5. An exec or chdir that fails in the child is reported the way procServ's child reports it,
   on the console, followed by exit status 255 (``exit(-1)``).

Why not ``trio.lowlevel.open_process``: when exec fails it raises without the pid, and
procServ's console shows that pid. We run :class:`subprocess.Popen` in a worker thread exactly
as trio does, and wait on a pidfd as trio does.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import resource
import select
import signal
import struct
import subprocess
import termios
from typing import Protocol, final

import trio

# Signals subprocess's restore_signals already resets; any other SIG_IGN would survive exec.
_RESTORED_BY_SUBPROCESS = {signal.SIGPIPE, signal.SIGXFSZ}


class Child(Protocol):
    """What the supervisor needs of a child; tests supply fakes with the same shape."""

    pid: int

    async def read(self, max_bytes: int) -> bytes:
        """Console output; b"" once it has ended."""

    async def write(self, data: bytes) -> None:
        """Input for the child; waits while the child is not reading."""

    async def wait(self) -> int:
        """The exit: a status >= 0, or -N for death by signal N."""

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group (procServ's ``kill(-pid, sig)``)."""

    def set_window_size(self, rows: int, columns: int) -> None:
        """Resize the terminal; the kernel sends SIGWINCH to the foreground process group."""

    def output_pending(self) -> bool:
        """Whether a read would return at once (data, or the end of output)."""

    async def aclose(self) -> None:
        """Release the terminal."""


class _Popen(subprocess.Popen):  # type: ignore[type-arg]
    """Popen that keeps the pid and status of a child whose chdir or exec failed."""

    spawn_error: OSError | None = None

    def _execute_child(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            super()._execute_child(*args, **kwargs)
        except OSError as exc:
            if getattr(self, "pid", None) is None or self.returncode is None:
                raise  # fork itself failed: there is no child to report on
            self.spawn_error = exc


def _preexec(coresize: int | None, ignored: tuple[int, ...]) -> None:
    """Runs in the child between fork and exec: only a few syscalls, no locks, no imports."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in ignored:
        signal.signal(sig, signal.SIG_DFL)
    if coresize is not None:
        try:
            _, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (coresize, hard))
        except (OSError, ValueError, OverflowError):
            pass  # procServ ignores a limit it may not set, and so do we


def _winsize(rows: int, columns: int) -> bytes:
    return struct.pack("HHHH", rows, columns, 0, 0)


@final
class PtyChild:
    """A running child process on the slave side of its own pty."""

    def __init__(self, popen: _Popen, master: int) -> None:
        self._popen = popen
        self.pid: int = popen.pid
        self._master_fd = master
        self._master = trio.lowlevel.FdStream(master)

    async def read(self, max_bytes: int) -> bytes:
        """Output as soon as there is some, and all there is, up to ``max_bytes``.

        We read before waiting (FdStream waits for the scheduler first: one more pass per chunk
        and per keystroke's echo), and a pty hands out ~4 KiB per read, so what else is already
        there is taken too: the fan-out then works on large chunks.
        """
        fd = self._master_fd
        waited = False
        while True:
            try:
                data = os.read(fd, max_bytes)
                break
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    return b""
                waited = True
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):  # EIO: the end of output, not an error
                    return b""
                raise
        if not waited:
            await trio.lowlevel.checkpoint()  # the data was waiting: let the others run once
        parts = [data]
        size = len(data)
        while data and size < max_bytes:
            try:
                data = os.read(fd, max_bytes - size)
            except OSError:  # EAGAIN: nothing more now; EIO: the next read reports the end
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts) if len(parts) > 1 else parts[0]

    def write_now(self, data: bytes) -> int:
        """Write what the pty takes without waiting (BlockingIOError when it takes nothing)."""
        return os.write(self._master_fd, data)

    async def write(self, data: bytes) -> None:
        await self._master.send_all(data)

    async def wait(self) -> int:
        if self._popen.returncode is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:
                pidfd = -1
            if pidfd >= 0:
                try:
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
                self._popen.wait()
            else:  # no pidfd (old kernel): a worker thread blocks in waitpid
                await trio.to_thread.run_sync(self._popen.wait, abandon_on_cancel=True)
        return self._popen.returncode

    def signal_group(self, sig: int) -> None:
        if sig:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def set_window_size(self, rows: int, columns: int) -> None:
        try:
            fcntl.ioctl(self._master_fd, termios.TIOCSWINSZ, _winsize(rows, columns))
        except OSError:
            pass

    def output_pending(self) -> bool:
        poller = select.poll()
        poller.register(self._master_fd, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return False

    async def aclose(self) -> None:
        await self._master.aclose()


@final
class FailedChild:
    """A child whose chdir or exec failed: its console output is procServ's error lines."""

    def __init__(self, pid: int, returncode: int, output: bytes) -> None:
        self.pid = pid
        self._returncode = returncode
        self._output = output

    async def read(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        out, self._output = self._output[:max_bytes], self._output[max_bytes:]
        return out

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()

    async def wait(self) -> int:
        await trio.lowlevel.checkpoint()
        return self._returncode

    def signal_group(self, sig: int) -> None:
        pass

    def set_window_size(self, rows: int, columns: int) -> None:
        pass

    def output_pending(self) -> bool:
        return bool(self._output)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _failure_text(program: str, argv0: str, cwd: str | None, exc: OSError) -> bytes:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    lines = []
    if cwd is not None and exc.filename == cwd:
        lines.append(f"{program}: child could not chdir to {cwd}, {reason}")
    lines.append(f"{program}: child could not execute: {argv0}, {reason}")
    # Written by the child to its pty, so ONLCR turned each \n into \r\n.
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")


async def spawn_pty_child(
    argv: tuple[str, ...],
    *,
    executable: str | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    coresize: int | None = None,
    window_size: tuple[int, int] | None = None,
    program_name: str = "pyprocserv",
) -> PtyChild | FailedChild:
    """Start ``argv`` under a new pty. Never raises for a missing program or directory."""
    master, slave = os.openpty()
    try:
        if window_size is not None:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(*window_size))
        ignored = tuple(
            sig
            for sig in signal.valid_signals()
            if sig not in _RESTORED_BY_SUBPROCESS
            and sig not in (signal.SIGKILL, signal.SIGSTOP)
            and signal.getsignal(sig) == signal.SIG_IGN
        )
        popen = await trio.to_thread.run_sync(
            functools.partial(
                _Popen,
                list(argv),
                executable=executable,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
                restore_signals=True,
                preexec_fn=functools.partial(_preexec, coresize, ignored),
            )
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # else EIO never comes: we would hold the terminal open ourselves
    if popen.spawn_error is not None:
        os.close(master)
        text = _failure_text(program_name, argv[0], cwd, popen.spawn_error)
        return FailedChild(popen.pid, 255, text)
    return PtyChild(popen, master)
