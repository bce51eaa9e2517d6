"""What /proc says about a process (Linux only): state, children, fds, memory, CPU, listeners."""

from __future__ import annotations

import os


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the name (field 3 on): state, ppid, ... (OSError when gone)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces


def proc_state(pid: int) -> str | None:
    """R, S, Z, ... or None when the process is gone."""
    try:
        return stat_fields(pid)[0]
    except (OSError, IndexError):
        return None


def alive(pid: int, starttime: int | None = None) -> bool:
    """The process exists and is no zombie (and, given ``starttime``, is still the same one)."""
    try:
        fields = stat_fields(pid)
    except (OSError, IndexError):
        return False
    if fields[0] in ("Z", "X"):
        return False
    return starttime is None or int(fields[19]) == starttime


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (with the pid, it names one process)."""
    try:
        return int(stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children_of(pid: int, *, zombies: bool = True) -> list[int]:
    """Direct children, found by scanning /proc (no CONFIG_PROC_CHILDREN needed).

    ``zombies=False``: only living ones.
    """
    out = []
    for child in all_pids():
        try:
            fields = stat_fields(child)
            if int(fields[1]) == pid and (zombies or fields[0] not in ("Z", "X")):
                out.append(child)
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop(), zombies=False):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pids_with_cwd_under(directory: str) -> set[int]:
    """Living processes (other than this one) whose working directory is in ``directory``."""
    found = set()
    real = os.path.realpath(directory)
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd == real or cwd.startswith(real + "/")) and alive(pid):
            found.add(pid)
    return found


def listening_tcp_ports() -> set[int]:
    """Every TCP port some process on this machine listens on (IPv4 and IPv6)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":  # TCP_LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


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
    kib = status_kib(pid, "VmRSS")
    if kib < 0:
        raise AssertionError(f"no VmRSS for {pid}")
    return kib


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all its threads), in clock ticks."""
    fields = stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")
