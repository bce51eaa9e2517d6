"""Scenarios about the command line: errors and the exit codes and messages they give."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from collections.abc import Sequence

import trio

from support.ports import free_port
from support.proc import pids_with_cwd_under

from .normalise import normalise, NormContext
from .harness import SCENARIO_TIMEOUT, START_BLOCK_END, _prog_names, _run_captured, _server_env, expect_exit, LaunchFailed, ServerUnderTest


def _cli_cases(d: str, port: int) -> dict[str, list[str]]:
    long_unix = d + "/" + "p" * (120 - len(d) - 1)
    assert len(long_unix) == 120
    p = str(port)
    return {
        "unknown_short": ["-r", p, "/bin/cat"],
        "unknown_long": ["--bogus", p, "/bin/cat"],
        "ambiguous_long": ["--log", p, p, "/bin/cat"],
        "missing_option_argument": ["-P"],
        "no_arguments": [],
        "only_endpoint": [p],
        "only_P": ["-P", p],
        "bad_spec": ["-P", "foo", "/bin/cat"],
        "port_70000": ["-P", "70000", "/bin/cat"],
        "unix_unparsable": ["-P", "unix:a:b:/x", "/bin/cat"],
        "unix_unknown_user": ["-P", f"unix:nosuchuser::0600:{d}/x.sock", "/bin/cat"],
        "unix_unknown_group": ["-P", f"unix::nosuchgroup:0600:{d}/x.sock", "/bin/cat"],
        "unix_empty_path": ["-P", "unix:", "/bin/cat"],
        "unix_path_120": ["-P", "unix:" + long_unix, "/bin/cat"],
        "help": ["-h"],
        "version": ["-V"],
        "nonexistent_command": [p, d + "/nosuchcmd"],
        "command_without_path": [p, "cat"],
    }


async def scenario_cli_errors(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """The launcher's (stdout, stderr, exit code) for bad command lines.

    Each case runs synchronously in its own temporary directory (nothing
    should daemonise; if something does, it is killed by cwd).  argv[0] is
    normalised to ``<PROG>``.  procServ 2.7.0: getopt messages (``<PROG>: invalid option -- 'r'``,
    ``unrecognized option '--bogus'``, ``option '--log' is ambiguous;
    possibilities: ...``, ``option requires an argument -- 'P'``) then the
    two usage lines on stdout, exit 1; ``<PROG>: missing argument`` + usage,
    exit 1; ``Invalid socket spec 'foo'``, ``invalid control port 70000
    (<1024)``, ``Unix path+permissions spec unparsable 'a:b:/x'``,
    ``Unknown user 'nosuchuser'``, ``Unix path is too long (must be <108)``,
    all exit 1; -h: usage + help on stdout, exit 0; -V: one line, exit 0
    (normalised to ``<VERSION>``, like the Welcome line); a command that is
    not there (absolute, or relative without PATH search):
    ``<name>: No such file or directory`` on stderr, exit 22 (the errno left
    by perror with a write-only stderr, see ``_run_captured``).

    ``holdoff_abc``: ``--holdoff abc`` is accepted (atoi -> 0): the daemon
    starts, and after ^X the child is back within 2 s (with the default 15 s
    holdoff it would take ~15 s).
    """
    out: dict[str, bytes] = {}
    env = _server_env(server_cmd)
    with trio.fail_after(SCENARIO_TIMEOUT):
        for key, args in _cli_cases("/tmp/cfXXXXXXXX", 1).items():
            d = tempfile.mkdtemp(prefix="cf", dir="/tmp")
            port = free_port()
            args = _cli_cases(d, port)[key]
            ctx = NormContext(dirs=[d], ports={port: "<PORT>"}, prog_names=_prog_names(server_cmd))
            try:
                res = await _run_captured([*server_cmd, *args], d, env, 10)
            finally:
                for pid in pids_with_cwd_under(d):
                    os.kill(pid, signal.SIGKILL)
                    out[f"{key}__LEAK"] = b"a daemon was left running and was killed\n"
                shutil.rmtree(d, ignore_errors=True)
            if key == "version":
                res.stdout = re.sub(rb"\A[^\n]+\n\Z", b"<VERSION>\n", res.stdout)
            out[key] = b"args: %s\n%s" % (
                normalise(" ".join(repr(a) for a in args).encode(), ctx),
                res.render(ctx),
            )

        srv = ServerUnderTest(server_cmd, options=["--holdoff", "abc"])
        head = b"args: '--holdoff' 'abc' ...\n"
        try:
            async with srv:
                c = await srv.connect_when_running("control")
                await c.send(b"\x18")
                await expect_exit(c)
                t0 = trio.current_time()
                await c.expect(START_BLOCK_END, 20)
                fast = trio.current_time() - t0 < 2.0
        except LaunchFailed as exc:  # a transcript difference, not a harness error
            out["holdoff_abc"] = head + exc.result.render(srv.ctx)
        else:
            assert srv.launch is not None
            out["holdoff_abc"] = head + srv.launch.render(srv.ctx) + (
                b"server running: True\nrestart within 2 s after ^X: %s\n" % str(fast).encode()
            )
    return out
