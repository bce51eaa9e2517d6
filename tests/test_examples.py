"""The examples as a newcomer runs them: real processes, ^C as a terminal sends it.

Proves that ``examples/two_iocs.py`` stops both servers in order on SIGINT (exit 0, no
traceback, both IOCs gone) and writes its files under the temporary directory it prints,
none in the directory it was started from.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import trio

from support.launch import PY, short_tmpdir
from support.ports import free_port
from support.proc import proc_state

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "two_iocs.py"


async def read_until(proc: trio.Process, seen: bytearray, pattern: bytes) -> re.Match:
    while not (match := re.search(pattern, seen)):
        chunk = await proc.stdout.receive_some()
        assert chunk, f"stdout ended before {pattern!r}: {bytes(seen)!r}"
        seen += chunk
    return match


async def test_two_iocs_stops_in_order_on_ctrl_c_and_keeps_its_files_out_of_the_cwd():
    with trio.fail_after(40):
        cwd = short_tmpdir()
        ports = [str(free_port()), str(free_port())]
        proc = await trio.lowlevel.open_process(
            [PY, str(EXAMPLE), *ports], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        seen = bytearray()
        try:
            files = (await read_until(proc, seen, rb"log and socket files in (\S+)\n")).group(1).decode()
            await read_until(proc, seen, rb"serves .*\n(.|\n)*serves .*\n")
            await proc.stdin.send_all(b"\n")  # the status lines name the IOCs' pids
            status = await read_until(proc, seen, rb"ioc-a: .*\nioc-b: .*\n")
            pids = [int(p) for p in re.findall(rb"running=True pid=(\d+)", status.group(0))]
            assert len(pids) == 2
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stderr = await proc.stderr.receive_some()
        assert b"Traceback" not in stderr and stderr == b"", stderr
        assert all(proc_state(pid) in (None, "Z") for pid in pids), "both IOCs stopped"
        assert os.listdir(cwd) == [], "nothing written where it was started"
        try:
            assert sorted(os.listdir(files)) == ["ioc-a.log"]  # the socket is removed, the log kept
            assert b'@@@ The PID of new child "ioc-a" is: %d' % pids[0] in Path(files, "ioc-a.log").read_bytes()
        finally:
            Path(files, "ioc-a.log").unlink(missing_ok=True)
            os.rmdir(files)
