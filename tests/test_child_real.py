"""The real child under a real pty, served in-process over real loopback TCP.

Proves what an IOC sees: a controlling terminal (^C is SIGINT), an empty signal mask and no
ignored signals even when the server's own were not, no server fds, PROCSERV_INFO,
--chdir on every start, -e, --coresize, --killsig, the window size from NAWS with SIGWINCH,
and that the tail of a dying child's output is never lost.
"""

from __future__ import annotations

import os
import signal

import trio

from support.client import OFFER, Client, close_at_end, connect
from support.launch import child_script, serve_and_connect
from support.proc import proc_state
from pyprocserv import Config, ProcessServer, RestartMode



async def serve(nursery: trio.Nursery, command: tuple[str, ...], **options) -> tuple[ProcessServer, Client]:
    """A server with one connected client; the child starts once the client is there (-w, then ^R)."""
    options.setdefault("holdoff", 0)
    server, client = await serve_and_connect(nursery, Config(command=command, control=("0",), wait=True, **options))
    server.start()
    return server, client


async def test_ctrl_c_from_a_client_is_sigint_in_the_child(nursery):
    with trio.fail_after(20):
        code = (
            "import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: (print('GOT SIGINT'), sys.exit(3)))\n"
            "print('READY')\n"
            "time.sleep(60)\n"
        )
        server, client = await serve(nursery, child_script(code), restart_mode=RestartMode.OFF)
        await client.expect(b"READY\r\n")
        await client.send(b"\x03")
        await client.expect(b"GOT SIGINT\r\n")
        await client.expect(b"Normal exit status = 3\r\n")
        server.shutdown()


async def test_child_has_a_controlling_tty_as_session_leader(nursery):
    with trio.fail_after(20):
        code = "import os; print('SID', os.getsid(0) == os.getpid(), 'PGID', os.getpgid(0) == os.getpid()); print(os.ttyname(0)); open('/dev/tty').close(); print('TTY OK')"
        server, client = await serve(nursery, child_script(code), restart_mode=RestartMode.OFF)
        text = await client.expect(b"TTY OK\r\n")
        assert b"SID True PGID True" in text and b"/dev/pts/" in text
        server.shutdown()


async def test_child_gets_an_empty_signal_mask_and_default_dispositions(nursery):
    # The server runs with SIGTERM and SIGHUP blocked and SIGINT/SIGQUIT/SIGUSR1 ignored, as it
    # would when started by a parent that leaks them (procServ's issue #48): the child must not inherit it.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGUSR2})
    old_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    old_quit = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    try:
        with trio.fail_after(20):
            server, client = await serve(
                nursery, ("/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"), restart_mode=RestartMode.OFF
            )
            text = await client.expect(b"Normal exit status = 0")
            assert b"SigBlk:\t0000000000000000\r\n" in text
            assert b"SigIgn:\t0000000000000000\r\n" in text
            server.shutdown()
    finally:
        signal.signal(signal.SIGQUIT, old_quit)
        signal.signal(signal.SIGUSR1, old_usr1)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


async def test_child_inherits_no_server_fds_and_gets_procserv_info(nursery, tmp_path):
    with trio.fail_after(20):
        log = tmp_path / "log"
        server = ProcessServer(
            Config(
                command=("/bin/sh", "-c", 'read x; ls /proc/self/fd; echo "INFO=$PROCSERV_INFO"'),
                control=("0", "unix:@pyprocserv-test-%d" % os.getpid()),
                log_endpoint="0",
                logfile=str(log),
                restart_mode=RestartMode.OFF,
                wait=True,
            )
        )
        await nursery.start(server.run)
        client = await connect(server.endpoints[0])
        other = await connect(server.endpoints[2])  # the log port: one more open socket
        close_at_end(nursery, client, other)
        await client.expect(OFFER)
        await other.expect(OFFER)
        server.start()
        await client.expect(b"@@@ @@@ @@@ @@@ @@@\r\n")
        await client.send(b"go\r")
        text = await client.expect(b"Normal exit status = 0")
        listing = text.split(b"go\r\n", 1)[1].split(b"INFO=")[0].split()
        assert sorted(listing) == [b"0", b"1", b"2", b"3"]  # 3: ls's own directory handle
        info = "PID=%d;LOG=%s;CTL=%s;CTL=%s" % (
            os.getpid(), server.endpoints[2], server.endpoints[1], server.endpoints[0]
        )
        assert b"INFO=" + info.encode() + b"\r\n" in text
        server.shutdown()


async def test_chdir_applies_to_every_start(nursery, tmp_path):
    with trio.fail_after(20):
        server, client = await serve(nursery, ("/bin/sh", "-c", "pwd; cd /; sleep 0.05"), chdir=str(tmp_path))
        for _ in range(2):
            await client.expect(str(tmp_path).encode() + b"\r\n")
            await client.expect(b"Normal exit status = 0")
        server.shutdown()


async def test_exec_option_runs_another_program_with_the_given_argv(nursery):
    with trio.fail_after(20):
        code = "import sys; print('ARGV', sys.argv[1:])"
        server, client = await serve(
            nursery, ("python-as-argv0", "-c", code, "a b"), executable=os.path.realpath(os.sys.executable),
            restart_mode=RestartMode.OFF,
        )
        assert b"ARGV ['a b']\r\n" in await client.expect(b"Normal exit status = 0")
        server.shutdown()


async def test_coresize_sets_the_childs_soft_core_limit(nursery):
    with trio.fail_after(20):
        server, client = await serve(
            nursery, ("/bin/sh", "-c", "echo CORE=$(ulimit -c)"), coresize=0, restart_mode=RestartMode.OFF
        )
        assert b"CORE=0\r\n" in await client.expect(b"Normal exit status = 0")
        server.shutdown()


async def test_killsig_is_sent_to_the_whole_process_group(nursery):
    with trio.fail_after(20):
        script = "trap 'echo TERM-$$; exit 7' TERM; sleep 100 & wait; echo NOT-HERE"
        server, client = await serve(
            nursery, ("/bin/sh", "-c", script), kill_signal=signal.SIGTERM, restart_mode=RestartMode.OFF
        )
        await trio.sleep(0.3)
        await client.send(b"\x18")
        text = await client.expect(b"Normal exit status = 7\r\n")
        assert b"TERM-" in text and b"NOT-HERE" not in text
        server.shutdown()


async def test_naws_sizes_the_pty_and_the_child_gets_sigwinch(nursery):
    with trio.fail_after(20):
        code = (
            "import os, signal, sys, time\n"
            "signal.signal(signal.SIGWINCH, lambda *a: print('WINCH', os.get_terminal_size(0)))\n"
            "print('SIZE', os.get_terminal_size(0))\n"
            "time.sleep(30)\n"
        )
        server, client = await serve(nursery, child_script(code), restart_mode=RestartMode.OFF)
        assert b"SIZE os.terminal_size(columns=0, lines=0)\r\n" in await client.expect(b"lines=0)\r\n")
        # a telnet peer: answer our WILL ECHO, then offer NAWS and send 100x40
        await client.send(b"\xff\xfd\x01\xff\xfb\x1f\xff\xfa\x1f\x00\x64\x00\x28\xff\xf0")
        await client.expect(b"WINCH os.terminal_size(columns=100, lines=40)\r\n")
        server.restart()  # the next child starts at the known size
        await client.expect(b"SIZE os.terminal_size(columns=100, lines=40)\r\n")
        server.shutdown()


async def test_no_line_of_a_dying_childs_output_is_lost(nursery, tmp_path):
    with trio.fail_after(60):
        log = tmp_path / "log"
        server, client = await serve(
            nursery, ("/bin/sh", "-c", "seq 1 200000"), logfile=str(log), restart_mode=RestartMode.OFF
        )
        await client.expect(b"Normal exit status = 0", timeout=50)
        body = log.read_bytes().split(b"@@@ @@@ @@@ @@@ @@@\r\n")[1]
        assert body == b"".join(b"%d\r\n" % i for i in range(1, 200001)) + b"\r\n"
        server.shutdown()


async def test_a_failed_exec_is_reported_like_procserv_and_retried(nursery):
    with trio.fail_after(20):
        server, client = await serve(nursery, ("/nonexistent/cmd", "x"), holdoff=0.2)
        text = await client.expect(b"Normal exit status = 255\r\n")
        assert b"pyprocserv: child could not execute: /nonexistent/cmd, No such file or directory\r\n" in text
        await client.expect(b"Normal exit status = 255\r\n")  # and again after the holdoff
        server.shutdown()


async def test_grandchildren_in_the_group_are_killed_when_the_child_exits(nursery):
    with trio.fail_after(20):
        server, client = await serve(
            nursery, ("/bin/sh", "-c", "sleep 300 & echo BG=$!; sleep 0.2; exit 0"), restart_mode=RestartMode.OFF
        )
        text = await client.expect(b"Normal exit status = 0")
        pid = int(text.split(b"BG=")[1].split(b"\r\n")[0])
        with trio.fail_after(5):
            while os.path.exists(f"/proc/{pid}"):
                try:
                    os.waitpid(pid, os.WNOHANG)  # it is our grandchild's: not ours to reap
                except ChildProcessError:
                    pass
                if proc_state(pid) in ("Z", None):
                    break
                await trio.sleep(0.05)
        server.shutdown()


async def test_fds_of_the_server_do_not_grow_over_restarts(nursery):
    with trio.fail_after(30):
        server, client = await serve(nursery, ("/bin/true",), holdoff=0)
        await client.expect(b"Normal exit status = 0")
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            await client.expect(b"Normal exit status = 0")
        after = len(os.listdir("/proc/self/fd"))
        assert after <= before + 2
        server.shutdown()
