"""Scenarios about the log file (-L) with and without --logstamp."""

from __future__ import annotations

import re
from collections.abc import Sequence

import trio

from .harness import SCENARIO_TIMEOUT, START_BLOCK_END, expect_exit, ServerUnderTest


async def _logfile_session(
    server_cmd: Sequence[str], options: Sequence[str], key: str,
    out: dict[str, bytes],
) -> None:
    async with ServerUnderTest(
        server_cmd, options=["--holdoff", "0", *options],
        log_file=True, log_port=True,
    ) as srv:
        c, log = await srv.control_and_log()
        await c.send(b"line1\r")
        for cl in (c, log):
            await cl.expect(re.compile(rb"line1\r\n.*line1\r\n", re.S))
        await c.send(b"\x18")
        for cl in (c, log):
            await expect_exit(cl)
            await cl.expect(START_BLOCK_END)
        await srv.wait_for_child()
        for cl in (c, log):
            await cl.quiet()
            await cl.aclose()
    out[f"{key}_logfile"] = srv.norm_exit(srv.saved["log.txt"])
    out[f"{key}_log_client"] = srv.norm_exit(log.transcript())


async def scenario_logfile(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """Log file after: start, ``line1\\r`` typed, ^X, restart, SIGTERM.

    procServ 2.7.0 log file: the first start block, the pty echo and cat's
    output (``line1\\r\\n`` twice: client input itself is not logged), the
    exit groups, the restart block, and after SIGTERM the shutdown group of
    the second child (``Current time``, ``shutting down, a new one will be
    restarted shortly``, ``^R or ^X ...``; no sigChild group).  Greetings
    are not logged.

    ``stamped`` adds ``--logstamp`` with the default format: 2.7.0's bug
    gives a bare ``%c`` stamp with no brackets or space
    (``<TIME>@@@ Restarting child``) on every line of the file and of the
    log client, including the lone ``\\r\\n`` line of the sigChild group.
    Control clients get no stamps.  The stamps are ``%c`` dates, so they
    normalise to ``<TIME>``.
    """
    out: dict[str, bytes] = {}
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_logfile_session, server_cmd, [], "plain", out)
            nursery.start_soon(
                _logfile_session, server_cmd, ["--logstamp"], "stamped", out
            )
            nursery.start_soon(
                _logfile_session, server_cmd, ["--logstamp=[%c] "], "stamped_format", out
            )
    return dict(sorted(out.items()))
