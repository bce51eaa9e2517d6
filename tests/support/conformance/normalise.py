"""Normalising transcripts: what differs run to run (pids, times, ports, paths) becomes a token,
and procServ's racy child-exit message order becomes one order."""

from __future__ import annotations

import re
from dataclasses import dataclass, field




_TIME_RE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"[ 123][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}"
)
_WELCOME_RE = re.compile(rb"(@@@ Welcome to procServ \()[^\r\n]*(\)\r\n)")


# Contexts in which a number is a pid.  Group 1 is the pid.
PID_RES = [
    re.compile(rb"PID: (\d+)"),  # server and child PID lines of the greeting
    re.compile(rb"PID of new child [^\r\n]*? is: (\d+)"),
    re.compile(rb"sigChild for process (\d+)"),
    re.compile(rb"spawning daemon process: (\d+)"),
    re.compile(rb"(?m)^pid:(\d+)$"),  # info file
    re.compile(rb"\A(\d+)\n?\Z"),  # a pid file
]
_NUMBER_RE = re.compile(rb"(?<![0-9])[0-9]+(?![0-9])")


@dataclass
class NormContext:
    """What ``normalise`` replaces; shared by all transcripts of one server run.

    ``pids`` maps a pid to its token.  The server pid is registered first
    (``<PID1>``) when it is read from the pid file; other pids get the next
    token in order of first appearance, so "the same pid twice" stays visible,
    also across the transcripts of one run (normalise them in a fixed order).
    ``ports`` maps a chosen port to its token (``<PORT>`` for the control
    port, ``<LOGPORT>`` for the log port): distinct tokens, so that the info
    file's line order (log port first) is still checked.
    """

    dirs: list[str] = field(default_factory=list)
    ports: dict[int, str] = field(default_factory=dict)
    pids: dict[int, str] = field(default_factory=dict)
    prog_names: list[str] = field(default_factory=list)

    def pid_token(self, pid: int) -> str:
        if pid not in self.pids:
            self.pids[pid] = f"<PID{len(self.pids) + 1}>"
        return self.pids[pid]


def normalise(data: bytes, ctx: NormContext) -> bytes:
    """Replace the volatile parts of ``data``; everything else is kept as is."""
    for d in sorted(set(ctx.dirs), key=len, reverse=True):
        data = data.replace(d.encode(), b"<DIR>")
    for prog in sorted(set(ctx.prog_names), key=len, reverse=True):
        # only where argv[0] is printed: "PROG: ..." and "PROG [options]"
        # (a bare "procServ" must not hit "@@@ procServ server PID")
        data = re.sub(re.escape(prog.encode()) + rb"(?=: | \[options\])", b"<PROG>", data)
    data = _WELCOME_RE.sub(rb"\1<VERSION>\2", data)
    data = _TIME_RE.sub(b"<TIME>", data)

    spans: list[tuple[int, int, int]] = []
    for rx in PID_RES:
        for m in rx.finditer(data):
            spans.append((m.start(1), m.end(1), int(m.group(1))))
    spans.sort()
    out = bytearray()
    last = 0
    for start, end, pid in spans:
        if start < last:  # overlapping contexts cannot happen, but be safe
            continue
        out += data[last:start] + ctx.pid_token(pid).encode()
        last = end
    out += data[last:]
    data = bytes(out)

    if ctx.ports:
        # Pids were replaced above (by context), so a number equal to a chosen
        # port is the port.  (Chosen ports are >= 32768, above the default
        # pid_max, and numbers such as "70000" in messages are left alone.)
        def port_sub(m: re.Match[bytes]) -> bytes:
            tok = ctx.ports.get(int(m.group(0)))
            return tok.encode() if tok else m.group(0)

        data = _NUMBER_RE.sub(port_sub, data)
    return data


_STAMP = rb"(?:<TIME>|\[<TIME>\] )?"  # optional --logstamp prefix: 2.7.0 style or "[%c] "
_EXIT_SIGCHILD = (
    _STAMP + rb"\r\n" + _STAMP + rb"@@@ @@@ @@@ @@@ @@@\r\n"
    + _STAMP + rb"@@@ Received a sigChild for process [^\r\n]*\r\n"
)
_EXIT_SHUTDOWN = (
    _STAMP + rb"@@@ Current time: [^\r\n]*\r\n"
    + _STAMP + rb"@@@ Child process is shutting down, [^\r\n]*\r\n"
    + rb"(?:" + _STAMP + rb"@@@ \^R or [^\r\n]*\r\n)?"
)
_EXIT_SWAPPED = re.compile(
    rb"(?P<shutdown>" + _EXIT_SHUTDOWN + rb")(?P<sigchild>" + _EXIT_SIGCHILD + rb")"
)


def canonical_exit_order(data: bytes) -> bytes:
    """Put procServ's two child-exit message groups into one order.

    procServ reports a child exit in two groups: the *sigChild* group
    (``\\r\\n``, ``@@@ @@@ @@@ @@@ @@@``, ``@@@ Received a sigChild ...``),
    sent when ``waitpid`` reaps the child, and the *shutdown* group
    (``@@@ Current time: ...``, ``@@@ Child process is shutting down, ...``,
    ``@@@ ^R or ^X ...``), sent when the process item is destroyed.  Which
    comes first is a race (behaviour §2.2); when the pty EOF wins, the
    sigChild group follows one idle tick (0.5 s) later.  This rewrites every
    "shutdown group directly followed by sigChild group" into "sigChild group,
    then shutdown group".  Each group's own bytes are left untouched.  Apply
    it after ``normalise`` (so a ``--logstamp`` prefix is ``<TIME>``).
    """
    return _EXIT_SWAPPED.sub(lambda m: m.group("sigchild") + m.group("shutdown"), data)


def comparable(transcripts: dict[str, bytes]) -> dict[str, bytes]:
    """The transcripts that must be equal between servers (drops ``_`` keys)."""
    return {k: v for k, v in transcripts.items() if not k.startswith("_")}


def diff_transcripts(want: dict[str, bytes], got: dict[str, bytes]) -> str:
    """A readable line diff (lines shown as Python bytes literals) of the
    transcripts that differ; empty if ``comparable`` parts are equal."""
    import difflib

    want, got = comparable(want), comparable(got)
    out = []
    for key in sorted(set(want) | set(got)):
        a, b = want.get(key), got.get(key)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"--- {key}: only in {'got' if a is None else 'want'}")
            continue
        out += difflib.unified_diff(
            [repr(x) for x in a.splitlines(keepends=True)],
            [repr(x) for x in b.splitlines(keepends=True)],
            f"want/{key}", f"got/{key}", lineterm="",
        )
    return "\n".join(out)
