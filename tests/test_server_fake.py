"""The server's logic with a fake child and in-memory clients, on trio's virtual clock.

These prove the restart policy in time (holdoff, wait, oneshot, grace), the routing of every
message, key handling, the data-plane rules (slow client, non-reading child, drain before the
exit messages, history) and the library API, without a process or a socket, in milliseconds.
"""

from __future__ import annotations

import os
import signal

import pytest
import trio
import trio.testing

from support.client import Client, attach
from support.fakes import FakeSpawner, fake_server
from pyprocserv import KeyMap, ProcessServer, RestartMode
from pyprocserv._shell.console import Outbox


class ExitCode:
    """A server run in the background, and the exit code its run() returns."""

    def __init__(self, nursery: trio.Nursery, server: ProcessServer) -> None:
        self._code: int | None = None
        self._done = trio.Event()
        nursery.start_soon(self._run, server)

    async def _run(self, server: ProcessServer) -> None:
        self._code = await server.run()
        self._done.set()

    async def wait(self) -> int | None:
        await self._done.wait()
        return self._code

    @property
    def returned(self) -> list[int | None]:
        """[the code] once run() has returned, [] until then."""
        return [self._code] if self._done.is_set() else []


async def started(nursery: trio.Nursery, server: ProcessServer) -> ProcessServer:
    await nursery.start(server.run)
    return server


async def test_control_greeting_is_procservs_text_with_the_telnet_offer_last(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server()
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    greeting = await client.expect(b"\xff\xfb\x01\xff\xfd\x22")
    server_time = greeting.split(b"started at: ")[1].split(b"\r\n")[0]
    cwd = os.getcwd().encode()
    assert greeting == (
        b"@@@ Welcome to procServ (pyprocserv " + __import__("pyprocserv").__version__.encode() + b")\r\n"
        b"@@@ Use ^X to kill the child, auto restart is ON, use ^T to toggle auto restart\r\n"
        b"@@@ procServ server PID: %d\r\n" % os.getpid()
        + b"@@@ Server startup directory: " + cwd + b"\r\n"
        b"@@@ Child startup directory: " + cwd + b"\r\n"
        b'@@@ Child "mychild" started as: /bin/cat\r\n'
        b'@@@ Child "mychild" PID: %d\r\n' % child.pid
        + b"@@@ procServ server started at: " + server_time + b"\r\n"
        b'@@@ Child "mychild" started at: ' + server_time + b"\r\n"
        b"@@@ 0 user(s) and 0 logger(s) connected (plus you)\r\n"
        b"\xff\xfb\x01\xff\xfd\x22"
    )
    server.shutdown()


async def test_log_client_greeting_has_no_welcome_keys_or_counts(autojump_clock, nursery, started_server):
    server = await started_server(restart_mode=RestartMode.OFF, wait=True)
    client = attach(nursery, server, control=False)
    greeting = await client.expect(b"\xff\xfb\x01\xff\xfd\x22")
    assert greeting.startswith(b"@@@ procServ server PID: ")
    assert b"Welcome" not in greeting and b"user(s)" not in greeting
    assert b'@@@ Child "mychild" is SHUT DOWN\r\n' in greeting
    assert greeting.endswith(b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n\xff\xfb\x01\xff\xfd\x22")
    server.shutdown()


async def test_counts_exclude_the_new_client_and_count_loggers(autojump_clock, nursery, started_server):
    server = await started_server()
    first = attach(nursery, server)
    await first.expect(b"(plus you)")
    logger = attach(nursery, server, control=False)
    await logger.expect(b"\xfd\x22")
    third = attach(nursery, server)
    assert b"@@@ 1 user(s) and 1 logger(s) connected (plus you)\r\n" in await third.expect(b"(plus you)\r\n")
    server.shutdown()


async def test_restart_comes_one_holdoff_after_the_previous_start_not_after_the_exit(
    autojump_clock, nursery, started_server, spawner,
):
    await started_server(holdoff=15)
    first = await spawner.wait_for(1)
    await trio.sleep(3)
    first.exit(1)
    await spawner.wait_for(2)
    assert spawner.start_times[1] - spawner.start_times[0] == pytest.approx(15, abs=0.01)


async def test_child_that_ran_longer_than_the_holdoff_restarts_at_once(
    autojump_clock, nursery, started_server, spawner,
):
    await started_server(holdoff=2)
    first = await spawner.wait_for(1)
    await trio.sleep(10)
    exit_time = trio.current_time()
    first.exit(0)
    await spawner.wait_for(2)
    assert spawner.start_times[1] - exit_time < 0.01


async def test_kill_key_signals_the_group_and_the_console_shows_procservs_restart_block(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(holdoff=0, kill_signal=signal.SIGTERM)
    first = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    await client.send(b"\x18")
    second = await spawner.wait_for(2)
    assert first.signals[0] == signal.SIGTERM
    text = await client.expect(b'is: %d\r\n@@@ @@@ @@@ @@@ @@@\r\n' % second.pid)
    time_line = text.split(b"@@@ Current time: ")[1].split(b"\r\n")[0]
    assert text == (
        b"\r\n@@@ @@@ @@@ @@@ @@@\r\n"
        b"@@@ Received a sigChild for process %d. The process was killed by signal 15\r\n" % first.pid
        + b"@@@ Current time: " + time_line + b"\r\n"
        b"@@@ Child process is shutting down, a new one will be restarted shortly\r\n"
        b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n"
        b'@@@ Restarting child "mychild"\r\n'
        b"@@@    (as /bin/cat)\r\n"
        b'@@@ The PID of new child "mychild" is: %d\r\n' % second.pid
        + b"@@@ @@@ @@@ @@@ @@@\r\n"
    )
    server.shutdown()


async def test_toggle_off_means_no_restart_until_ctrl_r(autojump_clock, nursery, started_server, spawner):
    server = await started_server(holdoff=0)
    first = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    await client.send(b"\x14")
    assert await client.expect(b"OFF\r\n") == b"\r\n@@@ Toggled auto restart to OFF\r\n"
    first.exit(0)
    assert b"@@@ Child process is shutting down, auto restart is disabled\r\n" in await client.expect(
        b"quits the server\r\n"
    )
    await trio.sleep(60)
    assert len(spawner.children) == 1
    late = attach(nursery, server)
    greeting = await late.expect(b"\xfd\x22")
    assert b"auto restart is OFF" in greeting and b"is SHUT DOWN" in greeting
    await client.send(b"\x12")
    second = await spawner.wait_for(2)
    await client.expect(b"is: %d\r\n@@@ @@@ @@@ @@@ @@@\r\n" % second.pid)
    await client.send(b"\x14")
    assert await client.expect(b"ON\r\n") == b"\r\n@@@ Toggled auto restart to ON\r\n"
    server.shutdown()


async def test_noautorestart_starts_once_then_ctrl_r_then_ctrl_q_quits(autojump_clock, nursery, spawner):
    server = fake_server(spawner, restart_mode=RestartMode.OFF)
    exited = ExitCode(nursery, server)
    first = await spawner.wait_for(1)
    first.exit(3)
    client = attach(nursery, server)
    greeting = await client.expect(b"\xfd\x22")
    assert b"auto restart is OFF" in greeting
    await trio.sleep(30)
    assert len(spawner.children) == 1
    await client.send(b"\x12")
    second = await spawner.wait_for(2)
    second.exit(0)
    await client.expect(b"quits the server\r\n")
    await client.send(b"\x11")
    await client.expect_eof()
    await trio.testing.wait_all_tasks_blocked()
    assert exited.returned == [0]


async def test_ctrl_q_while_a_child_runs_goes_to_the_child(autojump_clock, nursery, started_server, spawner):
    server = await started_server()
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    await client.send(b"a\x11\x12b")
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(child.input) == b"a\x11\x12b"
    server.shutdown()


async def test_wait_mode_starts_nothing_until_ctrl_x(autojump_clock, nursery, started_server, spawner):
    server = await started_server(wait=True)
    await trio.sleep(100)
    assert spawner.children == []
    client = attach(nursery, server)
    greeting = await client.expect(b"\xfd\x22")
    assert b"is SHUT DOWN" in greeting
    await client.send(b"\x18")
    await spawner.wait_for(1)
    server.shutdown()


@pytest.mark.parametrize("returncode, code", [(7, 7), (0, 0), (-9, 137), (-15, 143)])
async def test_oneshot_exits_with_the_childs_code_and_128_plus_signal(
    autojump_clock, nursery, returncode, code, spawner,
):
    server = fake_server(spawner, restart_mode=RestartMode.ONESHOT)
    exited = ExitCode(nursery, server)
    child = await spawner.wait_for(1)
    start = trio.current_time()
    child.exit(returncode)
    assert await exited.wait() == code
    assert trio.current_time() - start < 3, "oneshot must not wait out the 15 s holdoff"
    assert len(spawner.children) == 1


async def test_shutdown_sends_killsig_then_sigkill_at_once_without_a_grace_period(autojump_clock, nursery):
    spawner = FakeSpawner(exit_on_signal=False)
    server = await nursery.start(fake_server(spawner, kill_signal=signal.SIGTERM).run)
    child = await spawner.wait_for(1)
    logger = attach(nursery, server, control=False)
    await logger.expect(b"\xfd\x22")
    server.shutdown()
    tail = await logger.expect_eof()
    assert child.signals == [signal.SIGTERM, signal.SIGKILL]
    # procServ 2.7.0's destructor messages, with no sigChild block (its loop has ended)
    assert b"Received a sigChild" not in tail
    assert b"@@@ Child process is shutting down, a new one will be restarted shortly\r\n" in tail


async def test_grace_period_waits_for_the_child_then_kills_it(autojump_clock, nursery):
    spawner = FakeSpawner(exit_on_signal=False)
    server = fake_server(spawner, kill_signal=signal.SIGTERM, grace_period=5)
    nursery.start_soon(server.run)
    child = await spawner.wait_for(1)
    logger = attach(nursery, server, control=False)
    await logger.expect(b"\xfd\x22")
    start = trio.current_time()
    server.shutdown()
    tail = await logger.expect_eof()
    assert child.signals == [signal.SIGTERM, signal.SIGKILL]
    assert trio.current_time() - start == pytest.approx(5, abs=0.1)
    assert b"The process was killed by signal 9\r\n" in tail
    assert b"@@@ Child process is shutting down, oneshot mode: server will exit\r\n" in tail


async def test_grace_period_ends_early_when_the_child_leaves(autojump_clock, nursery, spawner):
    # the fixture's spawner: its children leave on the first signal
    server = fake_server(spawner, kill_signal=signal.SIGTERM, grace_period=30)
    nursery.start_soon(server.run)
    child = await spawner.wait_for(1)
    start = trio.current_time()
    server.shutdown()
    while not child.closed:
        await trio.sleep(0.01)
    assert child.signals == [signal.SIGTERM]
    assert trio.current_time() - start < 1


async def test_output_written_before_the_exit_is_delivered_before_the_exit_messages(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(holdoff=0)
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    child.say(b"last words\r\n")
    child.exit(0)
    text = await client.expect(b"Normal exit status = 0\r\n")
    assert text.startswith(b"last words\r\n\r\n@@@ @@@ @@@ @@@ @@@\r\n")
    server.shutdown()


async def test_a_client_that_cannot_keep_up_loses_old_output_and_is_told_so(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(client_queue_limit=1000)
    child = await spawner.wait_for(1)
    slow_side, server_side = trio.testing.lockstep_stream_pair()  # no buffering at all
    nursery.start_soon(server.serve_stream, server_side)
    fast = attach(nursery, server)
    await fast.expect(b"\xfd\x22")
    for i in range(100):
        child.say(b"line %03d ..............................\r\n" % i)
    await fast.expect(b"line 099")
    slow = Client(slow_side)
    text = await slow.expect(b"line 099")
    assert b"@@@ pyprocserv: " in text and b"bytes of output skipped" in text
    assert text.count(b"line ") < 100
    server.shutdown()


async def test_input_for_a_child_that_does_not_read_is_dropped_with_one_notice(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(input_queue_limit=100)
    child = await spawner.wait_for(1)
    child.reading = False
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    for _ in range(20):
        await client.send(b"x" * 50)
    text = await client.expect(b"the child is not reading\r\n")
    await client.send(b"y" * 50)
    child.say(b"still alive\r\n")
    more = await client.expect(b"still alive\r\n")
    assert text.count(b"not reading") == 1 and b"not reading" not in more
    server.shutdown()


async def test_new_clients_get_the_last_history_lines_after_the_greeting(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(history=3)
    child = await spawner.wait_for(1)
    child.say(b"one\r\ntwo\r\nthree\r\nfour\r\npart")
    await trio.testing.wait_all_tasks_blocked()
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    assert await client.quiet() == b"three\r\nfour\r\npart"  # as `tail -n 3` counts
    server.shutdown()


async def test_no_history_by_default(autojump_clock, nursery, started_server, spawner):
    server = await started_server()
    child = await spawner.wait_for(1)
    child.say(b"one\r\n")
    await trio.testing.wait_all_tasks_blocked()
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    assert await client.quiet() == b""
    server.shutdown()


async def test_naws_of_the_newest_control_client_sizes_the_pty(autojump_clock, nursery, started_server, spawner):
    server = await started_server(holdoff=0)
    child = await spawner.wait_for(1)
    older = attach(nursery, server)
    await older.expect(b"\xfd\x22")
    await older.send(b"\xff\xfb\x1f\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0")  # WILL NAWS, 80x24
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes == [(24, 80)]
    newer = attach(nursery, server)
    await newer.expect(b"\xfd\x22")
    await newer.send(b"\xff\xfb\x1f\xff\xfa\x1f\x00\x84\x00\x32\xff\xf0")  # 132x50
    await older.send(b"\xff\xfa\x1f\x00\x64\x00\x20\xff\xf0")  # the older one resizes: newer wins
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes == [(24, 80), (50, 132)]
    await newer.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes[-1] == (32, 100)
    child.exit(0)
    await spawner.wait_for(2)
    assert spawner.calls[1]["window_size"] == (32, 100)
    server.shutdown()


def naws(columns: int, rows: int) -> bytes:
    return b"\xff\xfa\x1f" + columns.to_bytes(2, "big") + rows.to_bytes(2, "big") + b"\xff\xf0"


class Bystander:
    """A reader attached to the console that counts how often the server looks at it."""

    def __init__(self) -> None:
        self.looks = 0
        self.outbox = Outbox(1 << 20)
        self.stamped = False
        self.owes_stamp = False
        self.telnet = True
        self.form = 1  # as Reader: telnet, not stamped
        self.attached = 0
        self.dropping_input = False

    @property
    def control(self) -> bool:
        self.looks += 1
        return True

    @property
    def window_size(self) -> None:
        self.looks += 1
        return None


async def test_a_naws_update_costs_the_same_however_many_readers_are_attached(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server()
    child = await spawner.wait_for(1)
    flooder = attach(nursery, server)
    await flooder.expect(b"\xfd\x22")
    await flooder.send(b"\xff\xfb\x1f" + naws(80, 24))  # WILL NAWS, 80x24
    await trio.testing.wait_all_tasks_blocked()
    bystanders = [Bystander() for _ in range(100)]
    for bystander in bystanders:  # newer than the flooder, and without a size of their own
        server._console.attach(bystander)  # a reader that is not a session
    for width in range(100, 150):
        await flooder.send(naws(width, 40))
        await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes[-1] == (40, 149)
    assert sum(b.looks for b in bystanders) == 0
    server.shutdown()


async def test_a_burst_of_window_sizes_resizes_the_pty_once_to_the_last_size(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server()
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    await client.send(b"\xff\xfb\x1f" + naws(80, 24))
    await trio.testing.wait_all_tasks_blocked()
    await client.send(b"".join(naws(100 + i % 2, 30) for i in range(99)) + b"ls")
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes == [(24, 80), (30, 100)]
    assert child.input.endswith(b"ls")
    await client.send(naws(100, 30) * 20)  # the same size again: no ioctl at all
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes == [(24, 80), (30, 100)]
    server.shutdown()


async def test_iac_is_doubled_for_clients_but_not_in_the_log(
    autojump_clock, nursery, tmp_path, started_server, spawner,
):
    log = tmp_path / "log"
    server = await started_server(logfile=str(log))
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    child.say(b"a\xffb\r\n")
    assert await client.expect(b"b\r\n") == b"a\xff\xffb\r\n"
    assert log.read_bytes().endswith(b"a\xffb\r\n")
    server.shutdown()


async def test_log_clients_cannot_type_or_command(autojump_clock, nursery, started_server, spawner):
    server = await started_server()
    child = await spawner.wait_for(1)
    logger = attach(nursery, server, control=False)
    await logger.expect(b"\xfd\x22")
    await logger.send(b"hello\x18\x14")
    await trio.testing.wait_all_tasks_blocked()
    assert child.input == b"" and child.signals == [] and server.status.restart_mode is RestartMode.ON
    server.shutdown()


async def test_logout_key_closes_only_that_connection(autojump_clock, nursery, started_server, spawner):
    server = await started_server(keys=KeyMap(logout=4))
    child = await spawner.wait_for(1)
    leaving = attach(nursery, server)
    staying = attach(nursery, server)
    greeting = await leaving.expect(b"\xfd\x22")
    assert b"@@@ Use ^D to logout from procServ server\r\n" in greeting
    await staying.expect(b"\xfd\x22")
    await leaving.send(b"ab\x04")
    await leaving.expect_eof()
    child.say(b"still here\r\n")
    await staying.expect(b"still here\r\n")
    assert bytes(child.input) == b"ab"
    server.shutdown()


async def test_log_file_has_child_output_and_messages_but_no_greeting(
    autojump_clock, nursery, tmp_path, started_server, spawner,
):
    log = tmp_path / "log"
    server = await started_server(logfile=str(log), holdoff=0)
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    child.say(b"hello\r\n")
    child.exit(2)
    second = await spawner.wait_for(2)
    await client.expect(b"is: %d\r\n" % second.pid)
    text = log.read_bytes()
    assert text.startswith(b'@@@ Restarting child "mychild"\r\n@@@    (as /bin/cat)\r\n')
    assert b"hello\r\n\r\n@@@ @@@ @@@ @@@ @@@\r\n@@@ Received a sigChild for process %d. Normal exit status = 2\r\n" % child.pid in text
    assert b"Welcome" not in text and b"user(s)" not in text
    server.shutdown()


async def test_logstamp_stamps_log_file_and_log_clients_but_never_control_clients(
    autojump_clock, nursery, tmp_path, started_server, spawner,
):
    log = tmp_path / "log"
    server = await started_server(logfile=str(log), logstamp="<%Y> ")
    child = await spawner.wait_for(1)
    control = attach(nursery, server)
    logger = attach(nursery, server, control=False)
    await control.expect(b"\xfd\x22")
    await logger.expect(b"\xfd\x22")
    child.say(b"par")
    child.say(b"tial\r\nnext\r\n")
    year = b"<%d> " % __import__("time").localtime().tm_year
    assert await logger.expect(b"next\r\n") == year + b"partial\r\n" + year + b"next\r\n"
    assert await control.expect(b"next\r\n") == b"partial\r\nnext\r\n"
    assert log.read_bytes().endswith(year + b"partial\r\n" + year + b"next\r\n")
    server.shutdown()


async def test_status_and_api_follow_the_console(autojump_clock, nursery, started_server, spawner):
    server = await started_server(holdoff=0)
    first = await spawner.wait_for(1)
    status = server.status
    assert status.running and status.pid == first.pid and status.restart_mode is RestartMode.ON
    assert status.start_count == 1 and status.name == "mychild"
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    assert server.status.users == 1
    server.stop()  # procServControl STOP: auto restart OFF, then kill
    await client.expect(b"Toggled auto restart to OFF\r\n")
    await client.expect(b"auto restart is disabled\r\n")
    status = server.status
    assert not status.running and status.last_exit_code == -9 and status.waiting_for_start
    server.restart()  # RESTART while shut down: ON, then start
    await client.expect(b"Toggled auto restart to ON\r\n")
    second = await spawner.wait_for(2)
    server.kill()
    await spawner.wait_for(3)
    assert second.signals == [9]
    assert server.status.start_count == 3
    server.shutdown()


async def test_wait_status_change_wakes_on_a_start(autojump_clock, nursery, started_server, spawner):
    server = await started_server(wait=True)
    woke = []

    async def watch() -> None:
        while not server.status.running:  # start() wakes it first, before the spawn
            await server.wait_status_change()
            woke.append(server.status.running)

    nursery.start_soon(watch)
    await trio.testing.wait_all_tasks_blocked()
    server.start()
    await spawner.wait_for(1)
    await trio.testing.wait_all_tasks_blocked()
    assert woke[-1] is True  # a wake-up once the child runs, not only the one for the request
    server.shutdown()


async def test_a_child_started_as_shutdown_begins_is_still_stopped(autojump_clock, nursery, spawner):
    server = fake_server(spawner)
    exited = ExitCode(nursery, server)
    await trio.testing.wait_all_tasks_blocked()
    server.shutdown()
    await exited.wait()
    assert len(spawner.children) == 1 and spawner.children[0].exited  # started, then stopped


async def test_cancelling_run_kills_the_child(autojump_clock, nursery, spawner):
    server = fake_server(spawner)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            await inner.start(server.run)
            child = await spawner.wait_for(1)
            scope.cancel()
    assert child.signals == [signal.SIGKILL] and child.closed


# -- the procServ 2.8 dialect (--procserv-version 2.8) ------------------------------------------


async def test_procserv_2_8_toggle_cycles_through_oneshot_and_status_follows(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(procserv_version="2.8")
    await spawner.wait_for(1)
    client = attach(nursery, server)
    assert b", auto restart mode is ON, " in await client.expect(b"\xfd\x22")
    for word in (b"OFF", b"ONESHOT", b"ON"):
        await client.send(b"\x14")
        assert await client.expect(word + b"\r\n") == b"\r\n@@@ Toggled auto restart mode to " + word + b"\r\n"
        assert server.status.restart_mode is RestartMode(word.decode())
    server.shutdown()


async def test_procserv_2_8_greeting_names_the_log_file(autojump_clock, nursery, tmp_path, started_server, spawner):
    path = str(tmp_path / "ioc.log")
    server = await started_server(procserv_version="2.8", logfile=path)
    child = await spawner.wait_for(1)
    for control in (True, False):
        greeting = await attach(nursery, server, control=control).expect(b"\xfd\x22")
        assert b"started as: /bin/cat\r\n@@@ Child log file: " + path.encode() + b"\r\n" + (
            b'@@@ Child "mychild" PID: %d\r\n' % child.pid) in greeting
    server.shutdown()


async def test_procserv_2_8_toggling_to_oneshot_while_shut_down_ends_the_server(autojump_clock, nursery, spawner):
    server = fake_server(spawner, procserv_version="2.8", restart_mode=RestartMode.OFF)
    exited = ExitCode(nursery, server)
    (await spawner.wait_for(1)).exit(4)
    client = attach(nursery, server)
    await client.expect(b"quits the server\r\n")  # the greeting's last line while shut down
    await client.send(b"\x14")
    await client.expect(b"Toggled auto restart mode to ONESHOT\r\n")
    await client.expect_eof()
    assert await exited.wait() == 4  # 2.8.0 returns the last child's exit status
    assert len(spawner.children) == 1


async def test_procserv_2_8_ctrl_q_exits_with_the_last_childs_status(autojump_clock, nursery, spawner):
    server = fake_server(spawner, procserv_version="2.8", restart_mode=RestartMode.OFF)
    exited = ExitCode(nursery, server)
    (await spawner.wait_for(1)).exit(5)
    client = attach(nursery, server)
    await client.expect(b"quits the server\r\n")
    await client.send(b"\x11")
    await client.expect_eof()
    assert await exited.wait() == 5
