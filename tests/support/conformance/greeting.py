"""Scenarios about what a client is told: greetings, launch messages, the info file."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from .harness import SCENARIO_TIMEOUT, ServerUnderTest, wait_for_file


async def _greeting_variant(
    server_cmd: Sequence[str],
    options: Sequence[str],
    wait_running: bool,
    out: dict[str, bytes],
    key: str,
) -> None:
    async with ServerUnderTest(
        server_cmd, ["/bin/cat"], options=options, log_port=True
    ) as srv:
        if wait_running:
            ctl = await srv.connect_when_running("control")
        else:
            ctl = await srv.greeted("control")
        log = await srv.greeted("log")
        await ctl.quiet()
        await log.quiet()
        out[f"{key}_control"] = srv.norm(ctl.transcript())
        out[f"{key}_log"] = srv.norm(log.transcript())


GREETING_VARIANTS: dict[str, tuple[list[str], bool]] = {
    # name: (options, wait until the child runs)
    "default": ([], True),
    "named": (["-n", "mychild"], True),
    "logout": (["-x", "^D"], True),
    "nokill": (["-k", ""], True),
    "noautorestart": (["--noautorestart"], True),
    # -w: nothing runs, so the "^R or ^X ..." line is shown ...
    "wait_logout": (["-w", "-x", "^D"], False),
    # ... which is where the NUL of the disabled kill char cuts it short
    "wait_nokill": (["-w", "-k", ""], False),
}


async def scenario_greeting(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """Full greeting of a control and a log client, for several option sets.

    The control client connects first (counts: 0 users, 0 loggers), then the
    log client.  Each transcript also holds everything received in the 0.3 s
    after the greeting (nothing, for procServ).

    procServ 2.7.0: control greeting = Welcome, "Use ^X to kill the child,
    auto restart is ON, use ^T to toggle auto restart" (``Kill command
    disabled, `` with -k "", ``OFF`` with --noautorestart), the "Use ^D to
    logout" line with -x, then PID, directories, ``Child "NAME" started as:``
    (``Child started as:`` when there is no -n; the default name is argv[0]
    of the command, ``/bin/cat``), child PID or ``is SHUT DOWN``, start
    times, the user count, the "^R or ^X" line when nothing runs, then
    FF FB 01 FF FD 22.  The log greeting starts at the PID line and has no
    user count.  With -w -k "" the "^R or ^X" line is cut after ``^R or ``
    (the disabled kill char is a NUL in a sprintf).  The variants run in
    parallel, each with its own server.
    """
    out: dict[str, bytes] = {}
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for key, (options, running) in GREETING_VARIANTS.items():
                nursery.start_soon(
                    _greeting_variant, server_cmd, options, running, out, key
                )
    return dict(sorted(out.items()))


async def scenario_launch_messages(
    server_cmd: Sequence[str]
) -> dict[str, bytes]:
    """What the launching (parent) process prints, and its exit code.

    procServ 2.7.0, without -q: stderr ``<PROG>: spawning daemon process:
    <PID1>`` plus ``Warning: No log file and no port for log connections
    specified.`` (no -l, no -L) or ``Warning: No log file specified.`` (-l but
    no -L), nothing else with -L; with -q nothing at all.  Exit code 0.
    """
    variants = {
        "quiet": dict(quiet=True),
        "verbose_nolog": dict(quiet=False),
        "verbose_logport": dict(quiet=False, log_port=True),
        "verbose_logfile": dict(quiet=False, log_file=True),
    }
    out: dict[str, bytes] = {}

    async def one(key: str, kw: dict[str, bool]) -> None:
        async with ServerUnderTest(server_cmd, **kw) as srv:
            assert srv.launch is not None
            out[key] = srv.launch.render(srv.ctx)

    with trio.fail_after(SCENARIO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for key, kw in variants.items():
                nursery.start_soon(one, key, kw)
    return dict(sorted(out.items()))


async def scenario_info_file(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """-I file with a log port, a TCP control port and a unix control socket.

    procServ 2.7.0: ``pid:<PID1>`` then the listeners in reverse creation
    order: ``tcp:0.0.0.0:<LOGPORT>`` (the log port binds all interfaces),
    ``unix:<DIR>/ctl.sock``, ``tcp:127.0.0.1:<PORT>``.  The socket file is
    ``srw-rw-rw-``.  A client on the unix socket gets the normal greeting.
    The info file is written by the daemon after the fork, so the scenario
    waits for it to end in a newline after the last listener line.
    """
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with ServerUnderTest(
            server_cmd, info_file=True, log_port=True, unix_control=True,
        ) as srv:
            info = await wait_for_file(srv.info_file, rb"tcp:127\.0\.0\.1:\d+\n\Z")
            files = srv.listing()
            c = await srv.connect_when_running("unix")
            await c.quiet()
        return {
            "info": srv.norm(info),
            "files": srv.norm(files),
            "unix_greeting": srv.norm(c.transcript()),
        }


async def scenario_greeting_logfile(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """-L log.txt: procServ 2.8.0 ends the server info block (control and log greeting) with
    ``@@@ Child log file: log.txt`` (the path as given), before the child's PID line."""
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with ServerUnderTest(server_cmd, log_port=True, log_file=True) as srv:
            ctl, log = await srv.control_and_log()
            for c in (ctl, log):
                await c.quiet()
        return {"control": srv.norm(ctl.transcript()), "log_client": srv.norm(log.transcript())}
