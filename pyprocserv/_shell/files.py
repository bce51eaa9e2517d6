"""The small files the server writes: pid, info and status files, and a config rewrite.

Rules:
1. A temporary file is created next to its target, under a fresh name, with
   ``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink or file planted at a guessable name is never
   opened, and the rename over the target replaces whatever is there without following it.
2. A file that others read while it changes (the status file) is always replaced that way,
   so a reader sees the old or the new content, never half of it.
3. In a directory that other users can write (group or world write bits, or another owner), the
   pid and info files are replaced as in rule 1, never written in place (a planted hard link
   stays untouched), and a symbolic link at their path is refused with :class:`UnsafeFile`,
   which names the file and says what to do.
4. In a directory only we (or root) can write, they are written in place, as procServ does: a
   symbolic link there was made by someone who could write the file anyway.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A file we will not write; ``strerror`` says why and what to do."""


def others_can_write(directory: str) -> bool:
    """Whether a user other than us (or root) may create, remove or rename entries in ``directory``."""
    st = os.stat(directory)
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or st.st_uid not in (0, os.geteuid())


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to a new file next to ``path`` and rename it over ``path`` (rules 1, 2)."""
    for _ in range(10):
        temporary = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(temporary, _CREATE_NEW, 0o666)  # the umask applies, as to open(path, "w")
            break
        except FileExistsError:
            continue  # someone holds this name: take another
    else:
        raise OSError(errno.EEXIST, f"no free temporary name next to {path}")
    try:
        with open(fd, "w", closefd=True) as f:
            f.write(text)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def write_owned_file(path: str, text: str, what: str) -> None:
    """Write our pid or info file (rules 3, 4); ``what`` names it in an error ("PID file")."""
    directory = os.path.dirname(path) or "."
    if not others_can_write(directory):
        with open(path, "w") as f:
            f.write(text)
        return
    if os.path.islink(path):
        raise UnsafeFile(
            errno.ELOOP,
            f"it is a symbolic link in {directory}, which other users can write; "
            f"remove the link, or put the {what} in a directory only you can write",
        )
    replace_file(path, text)
