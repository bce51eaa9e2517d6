"""Binding endpoints to listening sockets (plain sockets: the CLI binds before it forks).

Rules:
1. Control TCP endpoints listen on loopback unless remote control is allowed (``--allow``),
   whatever address the spec names; the log endpoint is public unless ``--restrict``.
2. A UNIX socket file is created with the requested owner, group and mode (default 0666, as
   procServ) and removed on exit. An existing path is replaced only when it is a socket that
   nobody answers on: a live server's socket or a regular file is never deleted.
3. Bind errors carry the true errno and its text (procServ prints a wrong one, issue #35).
4. Every socket is close-on-exec: the child never inherits a listener.
5. A UNIX socket has its owner and mode before it has its name: it is bound and listening in a
   private directory (mode 0700) next to its path, chowned and chmodded there, and linked into
   place with link(2), which never follows or replaces what is at the path (rename(2) would
   replace it): a symlink or file planted there since the check of rule 2 fails the bind, as
   rule 2 wants. The private directory is removed again. Nothing is ever changed through the
   path itself, so a symlink swapped in there cannot redirect a chown or chmod. (fchown and
   fchmod on the descriptor are no help: Linux applies them to the socket's own inode, not to
   the file that bind() created.)
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import tempfile
from dataclasses import dataclass
from typing import final

from .._core.endpoints import Endpoint, TcpEndpoint, UnixEndpoint
from .._core.errors import PyprocservError

BACKLOG = 1024
SUN_PATH_MAX = 107  # bytes of a UNIX socket path, without the final NUL


class BindError(PyprocservError, OSError):
    """An endpoint could not be bound; ``strerror`` says which and why, ``errno`` the cause."""


@final
@dataclass
class BoundEndpoint:
    """A listening socket and how the info file and ``PROCSERV_INFO`` name it."""

    endpoint: Endpoint
    role: str  # "control" or "log"
    sock: socket.socket
    address: str  # "tcp:127.0.0.1:20000", "unix:/run/x.sock", "unix:@name"
    path: str | None = None  # a socket file to remove on exit

    def close(self) -> None:
        self.sock.close()
        if self.path is not None:
            try:
                # Only our own socket: a later server may have bound the path meanwhile.
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass


def bind(endpoint: Endpoint, role: str, *, public: bool) -> BoundEndpoint:
    """Bind ``endpoint``; ``public`` lets a TCP endpoint use the address it names."""
    if isinstance(endpoint, TcpEndpoint):
        return _bind_tcp(endpoint, role, public)
    return _bind_unix(endpoint, role)


def _bind_tcp(endpoint: TcpEndpoint, role: str, public: bool) -> BoundEndpoint:
    if endpoint.ipv6:
        family, host = socket.AF_INET6, endpoint.host if public else "::1"
    else:
        family, host = socket.AF_INET, (endpoint.host or "0.0.0.0") if public else "127.0.0.1"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, endpoint.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on {host}:{endpoint.port}: {exc.strerror}") from exc
    bound_host, port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    return BoundEndpoint(endpoint, role, sock, f"tcp:{shown}:{port}")


def owner_ids(endpoint: UnixEndpoint) -> tuple[int, int]:
    """uid and gid for a UNIX socket: the named user (and its group) or group, else ours."""
    uid, gid = os.getuid(), os.getgid()
    if endpoint.user:
        try:
            entry = pwd.getpwnam(endpoint.user)
        except KeyError:
            raise BindError(errno.EINVAL, f"Unknown user '{endpoint.user}'") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if endpoint.group:
        try:
            gid = grp.getgrnam(endpoint.group).gr_gid
        except KeyError:
            raise BindError(errno.EINVAL, f"Unknown group '{endpoint.group}'") from None
    return uid, gid


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(errno.EEXIST, f"cannot listen on unix:{path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # a stale socket: nobody answers there
        return
    finally:
        probe.close()
    raise BindError(
        errno.EADDRINUSE, f"cannot listen on unix:{path}: another server is listening there"
    )


def _bind_unix(endpoint: UnixEndpoint, role: str) -> BoundEndpoint:
    uid, gid = owner_ids(endpoint)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if endpoint.abstract:
            sock.bind("\0" + endpoint.path[1:])
            sock.listen(BACKLOG)
            return BoundEndpoint(endpoint, role, sock, f"unix:{endpoint.path}")
        _clear_stale(endpoint.path)
        _listen_in_place(sock, endpoint.path, uid, gid, 0o666 if endpoint.mode is None else endpoint.mode)
    except BindError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on unix:{endpoint.path}: {exc.strerror}") from exc
    return BoundEndpoint(endpoint, role, sock, f"unix:{endpoint.path}", endpoint.path)


def _listen_in_place(sock: socket.socket, path: str, uid: int, gid: int, mode: int) -> None:
    """Rule 5: listen in a private directory next to ``path``, set owner and mode, link into place."""
    private = tempfile.mkdtemp(prefix=".pps", dir=os.path.dirname(path) or ".")  # 0700, ours alone
    inside = os.path.join(private, "s")
    dir_fd = -1
    try:
        dir_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # The detour may not fit in sun_path when the path nearly fills it: bind through our fd.
        too_long = len(os.fsencode(inside)) > SUN_PATH_MAX
        sock.bind(f"/proc/self/fd/{dir_fd}/s" if too_long else inside)
        sock.listen(BACKLOG)
        try:
            os.chown(inside, uid, gid)
        except PermissionError:
            if (uid, gid) != (os.getuid(), os.getgid()):
                raise
        os.chmod(inside, mode)
        try:
            os.link(inside, path)
        except FileExistsError:
            raise BindError(
                errno.EEXIST, f"cannot listen on unix:{path}: something else was put there while we bound it (left alone)"
            ) from None
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
        try:
            os.unlink(inside)
        except FileNotFoundError:
            pass
        os.rmdir(private)


def bind_all(
    control: tuple[Endpoint, ...],
    log: Endpoint | None,
    *,
    allow_remote_control: bool,
    restrict_log: bool,
) -> list[BoundEndpoint]:
    """Bind every endpoint in procServ's creation order (control endpoints, then the log)."""
    bound: list[BoundEndpoint] = []
    try:
        for endpoint in control:
            bound.append(bind(endpoint, "control", public=allow_remote_control))
        if log is not None:
            bound.append(bind(log, "log", public=not restrict_log))
    except BaseException:
        for b in bound:
            b.close()
        raise
    return bound


def info_lines(server_pid: int, bound: list[BoundEndpoint]) -> list[str]:
    """The info file (``-I``): ``pid:N`` then the listeners newest first, as procServ writes it."""
    return [f"pid:{server_pid}"] + [b.address for b in reversed(bound)]


def procserv_info(server_pid: int, bound: list[BoundEndpoint]) -> str:
    """``PROCSERV_INFO`` for the child: the info file's facts, ``;``-separated (upstream #33)."""
    parts = [f"PID={server_pid}"]
    parts += [("LOG=" if b.role == "log" else "CTL=") + b.address for b in reversed(bound)]
    return ";".join(parts)
