"""The watchdog's decisions on a virtual clock, and the PV options of the command line.

Proves the rules of pyprocserv/_core/watchdog.py: a bad PV restarts a running child only after the
hold time, never a healthy or a stopped one; consecutive restarts back off exponentially and
the streak ends after a healthy spell; the hourly budget stops restarts and frees up as the
window moves; every decision is a console line. Also the write-host policy and the CLI.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._apps.main import CliExit, read_command_line
from pyprocserv._core.cli import parse_args
from pyprocserv._core.watchdog import WatchConfig, WatchdogPolicy, WatchState, bad_reason

CONFIG = WatchConfig(pv="IOC:HEALTH", hold=30, max_per_hour=3)


def running(config: WatchConfig = CONFIG, at: float = 0.0) -> WatchdogPolicy:
    policy = WatchdogPolicy(config)
    policy.child(True, at)
    policy.pv(None, at)
    return policy


def run_until(policy: WatchdogPolicy, end: float) -> list[tuple[float, str, bool]]:
    """Let virtual time pass, waking at every deadline the policy names."""
    out = []
    while (deadline := policy.next_deadline()) is not None and deadline <= end:
        decision = policy.tick(deadline)
        if decision is not None:
            out.append((deadline, decision.message, decision.restart))
    return out


def test_bad_reasons():
    assert bad_reason(False, 0, "OK", ()) == "disconnected"
    assert bad_reason(True, 3, "OK", ()) == "INVALID"
    assert bad_reason(True, 2, "OK", ()) is None  # MAJOR is an alarm, not a dead IOC
    assert bad_reason(True, 0, "GRUMPY", ("GRUMPY", "SAD")) == "'GRUMPY'"
    assert bad_reason(True, 0, "OK", ("GRUMPY",)) is None


def test_a_healthy_child_is_never_restarted():
    policy = running()
    for t in range(0, 100000, 7):
        policy.pv(None, t)
        assert policy.tick(t) is None
    assert policy.restarts == 0 and policy.state is WatchState.OK


def test_a_bad_pv_restarts_after_the_hold_time_and_not_before():
    policy = running()
    decision = policy.pv("INVALID", 100)
    assert decision.message == "IOC:HEALTH is INVALID: restarting the child if it stays so for 30 s"
    assert not decision.restart and policy.state is WatchState.BAD
    assert policy.tick(129.9) is None
    assert policy.next_deadline() == 130
    decision = policy.tick(130)
    assert decision.restart and policy.state is WatchState.RESTARTING
    assert decision.message == "IOC:HEALTH has been INVALID for 30 s: restarting the child (1 of 3 per hour)"


def test_a_glitch_shorter_than_the_hold_costs_nothing():
    policy = running()
    policy.pv("disconnected", 10)
    assert policy.pv(None, 25).message == "IOC:HEALTH is good again"
    assert run_until(policy, 1000) == [] and policy.restarts == 0


def test_a_stopped_child_is_not_judged():
    policy = running()
    policy.pv("disconnected", 10)
    policy.child(False, 11)  # STOP: the IOC is down on purpose
    policy.pv("disconnected", 12)
    assert run_until(policy, 10000) == [] and policy.state is WatchState.WAITING


def test_consecutive_restarts_back_off_exponentially_then_the_budget_stops_them():
    policy = running(WatchConfig(pv="P", hold=10, max_per_hour=4))
    policy.pv("INVALID", 0)
    restarts = []
    t = 0.0
    while t < 3000:
        deadline = policy.next_deadline()
        if deadline is None or deadline > 3000:
            break
        t = deadline
        decision = policy.tick(t)
        if decision and decision.restart:
            restarts.append(t)
            # the restarted child comes back still INVALID one second later
            policy.child(False, t)
            policy.child(True, t + 0.5)
            policy.pv("INVALID", t + 1)
    gaps = [b - a for a, b in zip(restarts, restarts[1:])]
    assert restarts[0] == 10
    assert gaps == [11, 20, 40]  # max(IOC start 1 s + hold 10 s, backoff 10, 20, 40)
    assert policy.state is WatchState.BUDGET_SPENT and policy.restarts == 4


def test_the_budget_is_announced_once_and_frees_up_as_the_hour_passes():
    policy = running(WatchConfig(pv="P", hold=1, max_per_hour=1))
    policy.pv("INVALID", 0)
    assert policy.tick(1).restart
    policy.child(False, 1)
    policy.child(True, 2)
    policy.pv("INVALID", 3)
    decisions = run_until(policy, 3599)
    assert [m for _, m, _ in decisions] == [
        "restart budget spent (1 per hour): not restarting the child while P is INVALID"
    ]
    later = run_until(policy, 3700)
    assert later and later[0][2] and later[0][0] == pytest.approx(3601)


def test_the_streak_ends_after_a_healthy_spell():
    policy = running(WatchConfig(pv="P", hold=10, max_per_hour=100))
    policy.pv("INVALID", 0)
    assert policy.tick(10).restart
    policy.pv("INVALID", 11)
    assert policy.tick(21).restart
    assert policy.backoff() == 20
    policy.pv(None, 25)
    run_until(policy, 25 + 20)  # healthy for as long as the backoff
    assert policy.backoff() == 0
    policy.pv("INVALID", 100)
    assert policy.tick(110).restart  # back to the plain hold


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.floats(0, 500), st.sampled_from(["good", "bad", "stop", "start"])), max_size=60))
def test_never_more_restarts_an_hour_than_the_budget_and_never_a_stopped_child(events):
    policy = WatchdogPolicy(WatchConfig(pv="P", hold=5, max_per_hour=3))
    t = 0.0
    restarts = []
    alive = False
    for step, what in events:
        end = t + step
        while (deadline := policy.next_deadline()) is not None and deadline <= end:
            decision = policy.tick(deadline)
            if decision and decision.restart:
                assert alive
                restarts.append(deadline)
        t = end
        if what in ("stop", "start"):
            alive = what == "start"
            policy.child(alive, t)
        else:
            policy.pv(None if what == "good" else "INVALID", t)
    for i, at in enumerate(restarts):
        assert sum(1 for other in restarts if at - 3600 < other <= at) <= 3


# -- who may write, and the command line --------------------------------------------------


def test_write_policy_defaults_to_this_host_only():
    from pyprocserv._ca.pvs import WritePolicy

    policy = WritePolicy()
    assert policy.allows("127.0.0.1") and policy.allows("::1") and policy.allows("::ffff:127.0.0.1")
    assert not policy.allows("127.0.0.2") and not policy.allows("10.0.0.1") and not policy.allows(None)
    nets = WritePolicy(("10.1.0.0/16", "192.168.1.5"))
    assert nets.allows("10.1.200.3") and nets.allows("192.168.1.5") and not nets.allows("127.0.0.1")
    assert WritePolicy(("*",)).allows("8.8.8.8")
    with pytest.raises(ValueError, match="unknown host 'no-such-host.invalid'"):
        WritePolicy(("no-such-host.invalid",))


def test_pv_options_reach_the_config():
    options = parse_args([
        "pyprocserv", "--pv-prefix", "CS:PS:IOC:", "--pv-interface", "127.0.0.1", "--pv-description",
        "My IOC", "--pv-write-hosts", "localhost,10.0.0.0/8", "--watch-pv", "IOC:HEALTH",
        "--watch-values", "Bad|Worse", "--watch-for", "12.5", "--watch-max", "5", "20000", "./st.cmd",
    ])
    config = options.config
    assert config.pv_prefix == "CS:PS:IOC:" and config.pv_interfaces == ("127.0.0.1",)
    assert config.pv_description == "My IOC" and config.pv_write_hosts == ("localhost", "10.0.0.0/8")
    assert config.watch == WatchConfig(pv="IOC:HEALTH", bad_values=("Bad", "Worse"), hold=12.5, max_per_hour=5)


@pytest.mark.parametrize("args, message", [
    (["--pv-write-hosts", "*"], "--pv-write-hosts needs --pv-prefix"),
    (["--watch-for", "5"], "--watch-for needs --watch-pv"),
    (["--watch-pv", "X", "--watch-for", "soon"], "invalid --watch-for value 'soon'"),
    (["--watch-pv", "X", "--watch-max", "-1"], "invalid --watch-max value '-1'"),
])
def test_bad_pv_options_are_refused_by_name(args, message):
    with pytest.raises(CliExit) as exc:
        read_command_line(["pyprocserv", *args, "20000", "/bin/cat"])
    assert exc.value.code == 1 and message in exc.value.stderr


def test_procservs_own_prefixes_keep_their_meaning_next_to_the_new_options():
    # --w was --wait in procServ 2.7.0; --watch-* must not make it ambiguous
    assert parse_args(["pyprocserv", "--w", "20000", "/bin/cat"]).config.wait
    assert parse_args(["pyprocserv", "--wa", "20000", "/bin/cat"]).config.wait
    with pytest.raises(CliExit) as exc:
        read_command_line(["pyprocserv", "--p", "20000", "/bin/cat"])
    assert "'--pidfile' '--port'" in exc.value.stderr  # procServ's own list, as procServ prints it


def test_the_watch_state_crosses_modules_as_the_enum_and_shows_as_its_word():
    """The status snapshot holds the enum; its dict (the status file) and the PV show the words."""
    import json

    from pyprocserv import RestartMode, Status

    status = Status(name="ioc", running=True, pid=1, restart_mode=RestartMode.ON, waiting_for_start=False,
                    start_count=1, child_started_at=None, last_exit_code=None, last_exit_at=None, server_pid=2,
                    server_started_at=0.0, users=0, loggers=0, endpoints=(), watchdog=WatchState.BUDGET_SPENT)
    assert status.watchdog is WatchState.BUDGET_SPENT
    values = status.as_dict()
    assert type(values["watchdog"]) is str and values["watchdog"] == "Budget spent"
    assert json.loads(json.dumps(values))["watchdog"] == "Budget spent"
    assert [s.value for s in WatchState] == ["Waiting", "OK", "Bad", "Restarting", "Backoff", "Budget spent"]
