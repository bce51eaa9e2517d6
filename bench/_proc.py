"""What the bench scripts read from /proc about a process (Linux only)."""

from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces


def proc_state(pid: int) -> str | None:
    """R, S, Z, ... or None when the process is gone."""
    try:
        return _stat_fields(pid)[0]
    except (OSError, IndexError):
        return None


def children_of(pid: int) -> list[int]:
    """Direct children, found by scanning /proc (no CONFIG_PROC_CHILDREN needed)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(int(name))[1]) == pid:
                    out.append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status, e.g. VmRSS; -1 when it is missing."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all its threads), in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")
