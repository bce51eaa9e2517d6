"""Conformance: each scenario runs on Debian's procServ 2.7.0 and on pyprocserv, same bytes.

Every scenario (tests/support/conformance/) starts the server in daemon mode, drives raw socket
clients and returns normalised transcripts (pids, times, ports, the temp dir and the version
in the Welcome line are the only parts replaced). The two servers' transcripts must be equal
byte for byte, except the deliberate differences listed in ``DIFFERENCES``, each of which is
a fix named in the README and asserted on its own below.

The procServ 2.8 dialect (``--procserv-version 2.8``) is compared with fixtures recorded from
a procServ built from upstream's v2.8.0 tag (tests/fixtures/procserv-2.8.0, see support/conformance/fixtures.py).

Needs ``procServ`` on PATH: ``.ci/run`` installs Debian's package. Outside CI the procServ
half is skipped when it is missing; in CI (``CI=true``) a missing procServ fails.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import trio

from support import conformance as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROCSERV = C.ServerCommand(
    [sys.executable, "-m", "pyprocserv"], ["pyprocserv"], env={"PYTHONPATH": ROOT}
)
HAVE_PROCSERV = shutil.which("procServ") is not None
needs_procserv = pytest.mark.skipif(
    not HAVE_PROCSERV and os.environ.get("CI") != "true",
    reason="Debian's procServ is not installed (apt-get install procserv); CI installs it",
)

# (scenario, transcript) -> why pyprocserv differs on purpose (README, "Differences from procServ")
DIFFERENCES = {
    ("logfile", "stamped_logfile"): "bare --logstamp uses procServ 2.8's '[%c] ' stamp, not 2.7.0's bare time (bug #18)",
    ("logfile", "stamped_log_client"): "bare --logstamp uses procServ 2.8's '[%c] ' stamp, not 2.7.0's bare time (bug #18)",
    ("cli_errors", "help"): "-h documents pyprocserv's extra options (-o, -G, --history, IPv6)",
    ("cli_errors", "port_70000"): "says '(must be <65536)' where 2.7.0 says the wrong '(<1024)'",
    ("cli_errors", "nonexistent_command"): "names itself and exits 1; procServ exits with a stale errno (22 or 2)",
    ("cli_errors", "command_without_path"): "looks the command up in PATH as the child's exec will",
    ("cli_errors", "holdoff_abc"): "refuses a non-numeric --holdoff instead of reading it as 0",
}


def run(scenario: str, cmd) -> dict[str, bytes]:
    return trio.run(C.run_scenario, scenario, cmd)


@needs_procserv
@pytest.mark.parametrize("scenario", list(C.SCENARIOS))
def test_pyprocserv_writes_procservs_bytes(scenario: str) -> None:
    assert HAVE_PROCSERV, "CI must install procserv (apt-get install procserv)"
    want = C.comparable(run(scenario, [C.PROCSERV]))
    got = C.comparable(run(scenario, PYPROCSERV))
    known = {name for (s, name) in DIFFERENCES if s == scenario}
    assert known <= set(want) and known <= set(got), "a listed difference names no transcript"
    for name in known:
        want.pop(name)
        got.pop(name)
        got.pop(name + "__LEAK", None)  # a daemon that started on purpose, stopped by the harness
    assert got == want, C.diff_transcripts(want, got)


def test_the_deliberate_differences_are_what_the_readme_says() -> None:
    got = run("cli_errors", PYPROCSERV)
    assert b"invalid control port 70000 (must be <65536)" in got["port_70000"]
    assert b"exit: 1\n" in got["nonexistent_command"] and b"No such file or directory" in got["nonexistent_command"]
    assert b"exit: 0\n" in got["command_without_path"]  # `cat` is found in PATH: the server runs
    assert b"invalid --holdoff value 'abc'" in got["holdoff_abc"]
    assert b"--history" in got["help"] and b"--grace-period" in got["help"]
    logs = run("logfile", PYPROCSERV)
    assert b"[<TIME>] @@@ Restarting child" in logs["stamped_logfile"]


# -- procServ 2.8.0, from fixtures: CI has no 2.8.0 to run -----------------------------------

PYPROCSERV_2_8 = C.ServerCommand(
    [sys.executable, "-m", "pyprocserv", "--procserv-version", "2.8"], ["pyprocserv"], env={"PYTHONPATH": ROOT}
)
# (scenario, transcript) -> why pyprocserv's 2.8 dialect differs on purpose (README)
DIFFERENCES_2_8 = {
    ("exit_codes", "oneshot_killed_by_9"): "exits 128+9 where 2.8.0 exits 0 (#58)",
}


@pytest.mark.parametrize("scenario", list(C.SCENARIOS_2_8))
def test_pyprocserv_2_8_dialect_writes_procserv_2_8_0s_bytes(scenario: str) -> None:
    want = C.read_fixtures_2_8(scenario)
    got = C.comparable(run_2_8(scenario))
    for s, name in DIFFERENCES_2_8:
        if s == scenario:
            want.pop(name)
            got.pop(name)
    assert want, "no fixtures: record them with python -m support.conformance record-2.8 (in tests/)"
    assert got == want, C.diff_transcripts(want, got)


def test_the_2_8_dialects_deliberate_differences_are_what_the_readme_says() -> None:
    assert C.read_fixtures_2_8("exit_codes")["oneshot_killed_by_9"] == b"exit: 0\n"
    assert run_2_8("exit_codes")["oneshot_killed_by_9"] == b"exit: 137\n"


def run_2_8(scenario: str) -> dict[str, bytes]:
    return trio.run(C.SCENARIOS_2_8[scenario], PYPROCSERV_2_8)


# -- the harness itself: normalisation keeps everything but the volatile parts --------------


def ctx(**kw: object) -> C.NormContext:
    c = C.NormContext(dirs=["/tmp/cfabcdefgh"], ports={40001: "<PORT>", 40002: "<LOGPORT>"},
                      prog_names=["/usr/bin/procServ"])
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_normalise_replaces_only_volatile_parts() -> None:
    raw = (
        b"@@@ Welcome to procServ (procServ Process Server 2.7.0)\r\n"
        b"@@@ procServ server PID: 12138\r\n"
        b"@@@ Server startup directory: /tmp/cfabcdefgh\r\n"
        b"@@@ Child \"x\" PID: 12140\r\n"
        b"@@@ procServ server started at: Sun Nov  2 03:04:05 2026\r\n"
        b"@@@ 0 user(s) and 0 logger(s) connected (plus you)\r\n"
        b"\xff\xfb\x01\xff\xfd\x22ab\x00\xff\xffcd\r\n"
    )
    assert C.normalise(raw, ctx()) == (
        b"@@@ Welcome to procServ (<VERSION>)\r\n"
        b"@@@ procServ server PID: <PID1>\r\n"
        b"@@@ Server startup directory: <DIR>\r\n"
        b"@@@ Child \"x\" PID: <PID2>\r\n"
        b"@@@ procServ server started at: <TIME>\r\n"
        b"@@@ 0 user(s) and 0 logger(s) connected (plus you)\r\n"
        b"\xff\xfb\x01\xff\xfd\x22ab\x00\xff\xffcd\r\n"
    )


def test_normalise_keeps_pid_identity_across_transcripts() -> None:
    c = ctx()
    a = C.normalise(b"@@@ The PID of new child \"n\" is: 500\r\n", c)
    b = C.normalise(b"@@@ Received a sigChild for process 500. x\r\n"
                    b"@@@ The PID of new child \"n\" is: 501\r\n", c)
    assert a == b"@@@ The PID of new child \"n\" is: <PID1>\r\n"
    assert b == (b"@@@ Received a sigChild for process <PID1>. x\r\n"
                 b"@@@ The PID of new child \"n\" is: <PID2>\r\n")


def test_normalise_ports_files_and_prog() -> None:
    c = ctx()
    assert C.normalise(b"pid:77\ntcp:0.0.0.0:40002\ntcp:127.0.0.1:40001\n", c) == (
        b"pid:<PID1>\ntcp:0.0.0.0:<LOGPORT>\ntcp:127.0.0.1:<PORT>\n")
    assert C.normalise(b"/usr/bin/procServ: invalid control port 70000 (<1024)\n", c) == (
        b"<PROG>: invalid control port 70000 (<1024)\n")


SIGCHILD = b"\r\n@@@ @@@ @@@ @@@ @@@\r\n@@@ Received a sigChild for process <PID2>. The process was killed by signal 9\r\n"
SHUTDOWN = (b"@@@ Current time: <TIME>\r\n"
            b"@@@ Child process is shutting down, a new one will be restarted shortly\r\n"
            b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n")
START = b"@@@ Restarting child \"c\"\r\n@@@ The PID of new child \"c\" is: <PID3>\r\n@@@ @@@ @@@ @@@ @@@\r\n"


def test_canonical_exit_order_makes_procservs_two_racing_orders_equal() -> None:
    normal = b"hi\r\n" + SIGCHILD + SHUTDOWN + START
    swapped = b"hi\r\n" + SHUTDOWN + SIGCHILD + START
    assert C.canonical_exit_order(swapped) == normal
    assert C.canonical_exit_order(normal) == normal
    sigterm_tail = SIGCHILD + SHUTDOWN + START + SHUTDOWN
    assert C.canonical_exit_order(sigterm_tail) == sigterm_tail
