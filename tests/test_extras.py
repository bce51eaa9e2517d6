"""Supervision: an extra that fails never takes the IOC down, and failure loops back off.

Proves the pure back-off (first 1 s, doubling to the cap, starting over after a healthy run),
the supervisor on trio's virtual clock (a failing extra is reported once per failure on the
console, stderr and the status snapshot, restarted with the back-off, cancellation is no
failure and an error racing a cancellation is never passed up), and the child's spawn back-off
(a spawn that keeps failing with ``--holdoff 0`` is tried a handful of times, not thousands).
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from support.client import attach
from support.fakes import FakeSpawner
from pyprocserv import Config, ProcessServer, RestartMode
from pyprocserv._apps.wiring import server_extras
from pyprocserv._core.backoff import Backoff
from pyprocserv._shell.extras import Supervisor
from pyprocserv._core.policy import RestartPolicy

# -- the pure back-off ----------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_the_cap():
    backoff = Backoff(1.0, 60.0)
    delays = [backoff.failed(now=float(i)) for i in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_starts_over_after_a_healthy_run():
    backoff = Backoff(1.0, 60.0)
    backoff.started(0.0)
    assert [backoff.failed(1.0), backoff.failed(2.0), backoff.failed(3.0)] == [1, 2, 4]
    backoff.started(10.0)
    assert backoff.failed(69.0) == 8  # 59 s of running: still a loop
    backoff.started(100.0)
    assert backoff.failed(160.0) == 1  # a minute of good running: start over


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=50))
def test_backoff_delay_always_within_first_and_cap(times):
    backoff = Backoff(1.0, 60.0)
    for now in sorted(times):
        backoff.started(now)
        assert 1.0 <= backoff.failed(now) <= 60.0


# -- the supervisor ---------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changes = 0

    def announce(self, text: str) -> None:
        self.lines.append(text)

    def changed(self) -> None:
        self.changes += 1


async def test_a_failing_extra_is_reported_and_restarted_with_back_off(autojump_clock, nursery, capsys):
    seen = Recorder()
    supervisor = Supervisor(seen.announce, seen.changed)
    starts: list[float] = []

    async def flaky(task_status=trio.TASK_STATUS_IGNORED):
        starts.append(trio.current_time())
        task_status.started()
        raise KeyError(4242)  # caproto's server on an unknown channel id did just this

    await nursery.start(supervisor.run, "PV server", flaky)
    await trio.sleep(1 + 2 + 4 + 8 + 0.5)
    assert [round(b - a, 3) for a, b in zip(starts, starts[1:])] == [1, 2, 4, 8]
    assert len(seen.lines) == len(starts)  # one report per failure
    assert seen.lines[0] == ("PV server failed (KeyError: 4242); the IOC is not affected; "
                             "restarting PV server in 1 s")
    assert dict(supervisor.snapshot())["PV server"].startswith("failed (KeyError: 4242)")
    err = capsys.readouterr().err
    assert err.count("Traceback") == len(starts) and "raise KeyError(4242)" in err
    nursery.cancel_scope.cancel()


async def test_an_extra_that_cannot_start_does_not_hold_up_the_root(autojump_clock, nursery):
    supervisor = Supervisor(Recorder().announce)

    async def broken(task_status=trio.TASK_STATUS_IGNORED):
        raise OSError(98, "Address already in use")

    with trio.fail_after(0.001):  # virtual time: started at once, not after the back-off
        await nursery.start(supervisor.run, "PV server", broken)
    assert "Address already in use" in dict(supervisor.snapshot())["PV server"]
    nursery.cancel_scope.cancel()


async def test_cancelling_a_supervised_extra_is_not_a_failure(autojump_clock):
    seen = Recorder()
    supervisor = Supervisor(seen.announce)

    async def forever(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run, "watchdog", forever)
        assert supervisor.snapshot() == (("watchdog", "running"),)
        nursery.cancel_scope.cancel()
    assert seen.lines == [] and supervisor.snapshot() == ()


async def test_an_error_racing_the_cancellation_is_reported_not_passed_up(autojump_clock):
    seen = Recorder()
    supervisor = Supervisor(seen.announce)

    async def fails_while_cancelled(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise RuntimeError("deque mutated during iteration")

    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run, "PV server", fails_while_cancelled)
            outer.cancel()
    assert len(seen.lines) == 1 and "deque mutated" in seen.lines[0]


# -- the server with a failing extra -------------------------------------------------------------------


async def test_a_failing_watchdog_leaves_the_child_and_clients_alone(autojump_clock, nursery, monkeypatch, capsys):
    from pyprocserv._ca import camonitor as _camonitor
    from pyprocserv._core.watchdog import WatchConfig

    calls = []

    async def broken_watchdog(server, config):
        calls.append(trio.current_time())
        await trio.sleep(0.5)
        raise RuntimeError("the monitor broke")

    monkeypatch.setattr(_camonitor, "run_watchdog", broken_watchdog)
    spawner = FakeSpawner()
    config = Config(command=("/bin/cat",), name="ioc", watch=WatchConfig(pv="X:Y"))
    server = ProcessServer(config, spawn=spawner, extras=server_extras(config))
    await nursery.start(server.run)
    child = await spawner.wait_for(1)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    text = await client.expect(b"restarting watchdog in 1 s\r\n")
    assert b"@@@ pyprocserv: watchdog failed (RuntimeError: the monitor broke); the IOC is not affected" in text
    await client.expect(b"restarting watchdog in 2 s\r\n")
    status = server.status
    assert status.running and status.pid == child.pid and status.start_count == 1
    assert status.as_dict()["extras"]["watchdog"].startswith("failed (RuntimeError: the monitor broke)")
    child.say(b"still here\r\n")
    await client.expect(b"still here\r\n")
    assert len(calls) >= 2
    server.shutdown()


# -- the child's spawn ------------------------------------------------------------------------------------


def test_a_failed_spawn_is_no_start_and_backs_off_whatever_the_holdoff():
    policy = RestartPolicy(RestartMode.ON, holdoff=0)
    now = 0.0
    tries = []
    while now < 200:
        due = policy.due_at()
        now = max(now, due)
        tries.append(now)
        policy.spawn_failed(now)
    assert [round(b - a) for a, b in zip(tries, tries[1:])][:8] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.starts == 0
    policy.request_start()  # ^R tries at once
    assert policy.due_at() == -math.inf
    policy.child_started(now)
    policy.child_exited()
    assert policy.due_at() == now  # a child that ran resets the back-off: holdoff 0 again


def test_a_failed_spawn_waits_the_holdoff_when_that_is_longer():
    policy = RestartPolicy(RestartMode.ON, holdoff=15)
    assert policy.spawn_failed(100.0) == 15
    assert policy.due_at() == 115


def test_a_failed_spawn_with_auto_restart_off_waits_for_a_request():
    policy = RestartPolicy(RestartMode.OFF, holdoff=0)
    assert policy.spawn_failed(0.0) is None and policy.due_at() is None
    policy.request_start()
    assert policy.due_at() == -math.inf


class FailingSpawner:
    def __init__(self) -> None:
        self.tries: list[float] = []

    async def __call__(self, argv, **kwargs):
        await trio.lowlevel.checkpoint()
        self.tries.append(trio.current_time())
        if len(self.tries) > 100:
            raise AssertionError("spawn retried in a hot loop")
        raise OSError(24, "Too many open files")


async def test_a_spawn_that_keeps_failing_is_tried_a_handful_of_times_not_in_a_hot_loop(autojump_clock, nursery, capsys):
    spawner = FailingSpawner()
    server = ProcessServer(Config(command=("/bin/cat",), name="ioc", holdoff=0), spawn=spawner)
    await nursery.start(server.run)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    await trio.sleep(8)
    assert len(spawner.tries) == 4  # at 0, 1, 3 and 7 s (procServ-like code tried 78,762 times)
    text = await client.quiet()
    assert text.count(b"@@@ pyprocserv: could not start the child: Too many open files; next try in") == 3
    assert server.status.start_count == 0 and not server.status.running
    assert capsys.readouterr().err.count("Fork failed: Too many open files") == 4
    server.shutdown()


@pytest.mark.parametrize("key", [b"\x12"])
async def test_restart_request_tries_a_failing_spawn_at_once(autojump_clock, nursery, key, capsys):
    spawner = FailingSpawner()
    server = ProcessServer(Config(command=("/bin/cat",), name="ioc", holdoff=0), spawn=spawner)
    await nursery.start(server.run)
    client = attach(nursery, server)
    await client.expect(b"\xfd\x22")
    await trio.sleep(1.5)  # second try failed at 1 s; the next is due at 3 s
    before = len(spawner.tries)
    await client.send(key)  # ^R
    await trio.sleep(0.1)
    assert len(spawner.tries) == before + 1
    server.shutdown()


# -- the seam: what the programs hand the server, and what the server offers the extras ------------


def test_the_programs_wire_the_pv_server_awaited_then_the_watchdog_beside_it():
    from pyprocserv._core.watchdog import WatchConfig

    config = Config(command=("/bin/cat",), pv_prefix="X:", watch=WatchConfig(pv="X:Y"))
    assert [(e.name, e.awaited) for e in server_extras(config)] == [("PV server", True), ("watchdog", False)]
    assert server_extras(Config(command=("/bin/cat",))) == []


def test_the_process_server_offers_everything_root_promises():
    from pyprocserv._shell.extras import Root

    promised = {name for name in vars(Root) if not name.startswith("_")} | set(Root.__annotations__)
    server = ProcessServer(Config(command=("/bin/cat",)), spawn=FakeSpawner())
    assert promised and all(hasattr(server, name) for name in promised), sorted(promised)
