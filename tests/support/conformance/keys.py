"""Scenarios about what clients type: ignored characters, NUL bytes, several clients, logout."""

from __future__ import annotations

import re
from collections.abc import Sequence

import trio

from .harness import SCENARIO_TIMEOUT, ServerUnderTest


async def _type_into_cat(
    server_cmd: Sequence[str],
    options: Sequence[str],
    data: bytes,
    until: bytes | re.Pattern[bytes],
) -> bytes:
    async with ServerUnderTest(server_cmd, options=options) as srv:
        c = await srv.connect_when_running("control")
        await c.send(data)
        await c.expect(until)
        await c.quiet()
    return srv.norm(c.transcript())


async def scenario_ignore_chars(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """-i ^D^C: ``ab\\x04\\x03cd\\r`` reaches cat as ``abcd\\r``.

    procServ 2.7.0: the pty echoes ``abcd\\r\\n`` (ICRNL + ONLCR), then cat
    prints ``abcd\\r\\n``.  ^D/^C never reach the pty, so cat neither gets
    EOF nor SIGINT.
    """
    with trio.fail_after(SCENARIO_TIMEOUT):
        t = await _type_into_cat(
            server_cmd, ["-i", "^D^C"], b"ab\x04\x03cd\r",
            re.compile(rb"abcd\r\n.*abcd\r\n", re.S),
        )
    return {"control": t}


async def scenario_nul_input(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """NUL stripping and IAC IAC.

    ``xy\\r\\0``: procServ drops the NUL (the default ignore set contains it,
    behaviour §3.2), so cat gets ``xy\\r`` -> echo ``xy\\r\\n`` + output
    ``xy\\r\\n``.  ``ab\\xff\\xffcd\\r`` (a telnet-escaped 0xFF): the child gets
    one 0xFF byte, and procServ doubles every 0xFF it sends, so the echo and
    cat's output both come back as ``ab\\xff\\xffcd\\r\\n``.  ``raw_crlf``:
    ``pq\\r\\n`` (what socat/nc send) gives two newlines in the child
    (ICRNL + LF): ``pq\\r\\n\\r\\n`` echoed, cat prints ``pq\\r\\n\\r\\n``.
    """
    with trio.fail_after(SCENARIO_TIMEOUT):
        out = {}
        async with trio.open_nursery() as nursery:
            async def one(key: str, data: bytes, until: re.Pattern[bytes]) -> None:
                out[key] = await _type_into_cat(server_cmd, [], data, until)

            nursery.start_soon(one, "nul", b"xy\r\0", re.compile(rb"xy\r\n.*xy\r\n", re.S))
            nursery.start_soon(
                one, "iac_iac", b"ab\xff\xffcd\r",
                re.compile(rb"cd\r\n.*cd\r\n", re.S),
            )
            nursery.start_soon(
                one, "raw_crlf", b"pq\r\n", re.compile(rb"pq\r\n.*pq\r\n", re.S)
            )
    return dict(sorted(out.items()))


async def scenario_two_controls_and_logger(
    server_cmd: Sequence[str]
) -> dict[str, bytes]:
    """Two control clients and a log client; c1 types a line.

    Connection order c1, log, c2, so the greetings show the counters:
    c1 ``0 user(s) and 0 logger(s)``, c2 ``1 user(s) and 1 logger(s)``; the
    log greeting has no counter line.  c1 types ``hello\\r``: all three get
    the pty echo ``hello\\r\\n`` and cat's ``hello\\r\\n`` (the typed bytes
    themselves are never broadcast).
    """
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with ServerUnderTest(server_cmd, log_port=True) as srv:
            c1, log = await srv.control_and_log("c1")
            c2 = await srv.greeted("control", "c2")
            await c1.send(b"hello\r")
            for c in (c1, log, c2):
                await c.expect(re.compile(rb"hello\r\n.*hello\r\n", re.S))
                await c.quiet()
        return srv.transcripts(control1=c1, log_client=log, control2=c2)


async def scenario_logout(server_cmd: Sequence[str]) -> dict[str, bytes]:
    """-x ^D: the logout char closes that control connection, nothing else.

    c1, a log client, then c2 connect (c2's greeting: ``1 user(s) and 1
    logger(s)``).  c2 sends ``z\x04`` (^D): procServ acts on the ^D and closes c2
    at once without a message; the ``z`` before it still reaches cat (pty
    echo ``z`` on c1 and the log client), the ^D does not (it is in the ignore
    set).  A log client sending ^D is not closed (log input is discarded).
    c3 then connects: ``1 user(s) and 1 logger(s)`` again (c2 is gone).
    c1 types ``\r`` so that the line ends: echo ``\r\n`` and cat ``z\r\n``.
    """
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with ServerUnderTest(
            server_cmd, options=["-x", "^D"], log_port=True
        ) as srv:
            c1, log = await srv.control_and_log("c1")
            c2 = await srv.greeted("control", "c2")
            await c2.send(b"z\x04")
            await c2.expect_eof()
            await log.send(b"\x04")
            for c in (c1, log):
                await c.expect(b"z")
            c3 = await srv.greeted("control", "c3")
            await c1.send(b"\r")
            for c in (c1, log, c3):
                await c.expect(b"z\r\n")
                await c.quiet()
            log_open = not log.eof
        return {
            "control1": srv.norm(c1.transcript()),
            "control2_logged_out": srv.norm(c2.transcript()),
            "control3": srv.norm(c3.transcript()),
            "log_client": srv.norm(log.transcript()),
            "checks": f"log client still connected after sending ^D: {log_open}\n".encode(),
        }
