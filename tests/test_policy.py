"""The restart policy (pyprocserv._core.policy) on a virtual clock made of plain floats.

These tests prove procServ's restart rules (behaviour §4.3-§4.4): the first start is due at
once (even with ``--noautorestart``), the holdoff counts from the previous *start*, OFF holds
every later start until ^R/^X, ``-w`` holds even the first one, a restart request bypasses the
holdoff, OFF and ``-w`` once, ^T cycles ON/OFF (and through ONESHOT only when the server was
started in it; always in the procServ 2.8 dialect), only ONESHOT ends the server when the child
exits, and ONESHOT reached while no child runs ends it too. The exit code each dialect returns
(:func:`exit_code_after`). Also the signals an orderly shutdown sends (:func:`kill_sequence`),
and, over random sequences of events, that a start is never due while the child runs nor
before the holdoff unless one was requested.
"""

from __future__ import annotations

import math
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.policy import (
    PROCSERV_VERSIONS,
    RestartMode,
    RestartPolicy,
    exit_code_after,
    kill_sequence,
    toggle_cycle,
)

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


def due_now(policy: RestartPolicy, now: float) -> bool:
    due = policy.due_at()
    return due is not None and due <= now


# -- first start --------------------------------------------------------------------------------


def test_first_start_is_due_at_once():
    policy = RestartPolicy()
    assert policy.due_at() == -math.inf
    assert due_now(policy, 0.0)


def test_noautorestart_still_starts_the_child_once():
    policy = RestartPolicy(RestartMode.OFF)
    assert due_now(policy, 0.0)
    policy.child_started(0.0)
    assert not policy.child_exited()
    assert policy.due_at() is None


def test_oneshot_starts_the_child_once_and_then_ends_the_server():
    policy = RestartPolicy(RestartMode.ONESHOT)
    assert due_now(policy, 0.0)
    policy.child_started(0.0)
    assert policy.child_exited() is True


def test_wait_holds_the_first_start_until_a_request():
    policy = RestartPolicy(wait=True)
    assert policy.due_at() is None
    policy.request_start()
    assert due_now(policy, 1000.0)
    assert not policy.waiting_for_manual_start


def test_nothing_is_due_while_the_child_runs():
    policy = RestartPolicy(holdoff=0)
    policy.child_started(5.0)
    assert policy.due_at() is None
    assert policy.running


# -- holdoff ----------------------------------------------------------------------------------------


def test_holdoff_counts_from_the_previous_start_not_the_exit():
    # behaviour §4.3 [run]: holdoff 4, the child lived 1 s, next start 4 s after the previous start
    policy = RestartPolicy(holdoff=4)
    policy.child_started(100.0)
    policy.child_exited()  # at 101.0
    assert policy.due_at() == 104.0
    assert not due_now(policy, 101.0)
    assert due_now(policy, 104.0)


def test_child_that_outlived_the_holdoff_is_restarted_at_once():
    policy = RestartPolicy(holdoff=3)
    policy.child_started(100.0)
    policy.child_exited()  # at 110.0
    assert due_now(policy, 110.0)


def test_default_holdoff_is_15_seconds():
    # behaviour §10.2: ^X 3 s after the start, the restart comes 12 s later
    policy = RestartPolicy()
    policy.child_started(0.0)
    policy.child_exited()
    assert policy.due_at() == 15.0


def test_zero_holdoff_restarts_at_once():
    policy = RestartPolicy(holdoff=0)
    policy.child_started(7.0)
    policy.child_exited()
    assert due_now(policy, 7.0)


def test_negative_holdoff_counts_as_zero():
    policy = RestartPolicy(holdoff=-5)
    assert policy.holdoff == 0.0
    policy.child_started(7.0)
    policy.child_exited()
    assert policy.due_at() == 7.0


def test_each_start_moves_the_holdoff_origin():
    policy = RestartPolicy(holdoff=10)
    policy.child_started(0.0)
    policy.child_exited()
    policy.child_started(10.0)
    policy.child_exited()
    assert policy.due_at() == 20.0
    assert policy.starts == 2


# -- OFF, requests, -w --------------------------------------------------------------------------


def test_off_after_an_exit_holds_the_restart_until_a_request():
    policy = RestartPolicy(RestartMode.OFF, holdoff=1)
    policy.child_started(0.0)
    policy.child_exited()
    assert policy.due_at() is None
    policy.request_start()
    assert due_now(policy, 0.5)


def test_request_start_bypasses_the_holdoff_once():
    policy = RestartPolicy(holdoff=15)
    policy.child_started(100.0)
    policy.child_exited()
    policy.request_start()
    assert due_now(policy, 101.0)
    policy.child_started(101.0)
    policy.child_exited()
    assert policy.due_at() == 116.0


def test_request_start_bypasses_off_mode_once():
    policy = RestartPolicy(RestartMode.OFF, holdoff=15)
    policy.child_started(0.0)
    policy.child_exited()
    policy.request_start()
    assert due_now(policy, 1.0)
    policy.child_started(1.0)
    policy.child_exited()
    assert policy.due_at() is None


def test_request_start_while_the_child_runs_is_ignored():
    policy = RestartPolicy(holdoff=15)
    policy.child_started(0.0)
    policy.request_start()
    policy.child_exited()
    assert policy.due_at() == 15.0


def test_wait_applies_to_the_first_start_only():
    policy = RestartPolicy(holdoff=2, wait=True)
    policy.request_start()
    policy.child_started(50.0)
    policy.child_exited()
    assert policy.due_at() == 52.0


def test_toggling_off_then_on_after_an_exit_restores_the_holdoff_schedule():
    policy = RestartPolicy(holdoff=4)
    policy.child_started(0.0)
    assert policy.toggle() is RestartMode.OFF
    policy.child_exited()
    assert policy.due_at() is None
    assert policy.toggle() is RestartMode.ON
    assert policy.due_at() == 4.0


def test_a_request_survives_toggling_to_off():
    policy = RestartPolicy(holdoff=4)
    policy.child_started(0.0)
    policy.child_exited()
    policy.request_start()
    policy.toggle()
    assert policy.mode is RestartMode.OFF
    assert due_now(policy, 1.0)


# -- toggle and child_exited ------------------------------------------------------------------


def test_toggle_cycles_on_and_off_by_default():
    policy = RestartPolicy()
    assert [policy.toggle() for _ in range(4)] == [
        RestartMode.OFF,
        RestartMode.ON,
        RestartMode.OFF,
        RestartMode.ON,
    ]


def test_toggle_from_off_start_goes_on_then_off():
    policy = RestartPolicy(RestartMode.OFF)
    assert [policy.toggle() for _ in range(2)] == [RestartMode.ON, RestartMode.OFF]


def test_toggle_cycles_through_oneshot_when_started_in_oneshot():
    policy = RestartPolicy(RestartMode.ONESHOT)
    assert [policy.toggle() for _ in range(4)] == [
        RestartMode.ON,
        RestartMode.OFF,
        RestartMode.ONESHOT,
        RestartMode.ON,
    ]


@pytest.mark.parametrize(
    ("mode", "ends_server"),
    [(RestartMode.ON, False), (RestartMode.OFF, False), (RestartMode.ONESHOT, True)],
)
def test_child_exit_ends_the_server_only_in_oneshot(mode, ends_server):
    policy = RestartPolicy(mode)
    policy.child_started(0.0)
    assert policy.child_exited() is ends_server
    assert not policy.running


def test_toggling_out_of_oneshot_keeps_the_server_alive_after_the_exit():
    policy = RestartPolicy(RestartMode.ONESHOT)
    policy.child_started(0.0)
    policy.toggle()
    assert policy.child_exited() is False


@pytest.mark.parametrize("start", list(RestartMode))
def test_procserv_2_8_cycles_on_off_oneshot_from_any_start_mode(start):
    policy = RestartPolicy(start, cycle=toggle_cycle("2.8", start))
    cycle = [RestartMode.ON, RestartMode.OFF, RestartMode.ONESHOT]
    after = cycle.index(start) + 1
    assert [policy.toggle() for _ in range(3)] == (cycle * 2)[after:after + 3]


@pytest.mark.parametrize("start", [RestartMode.ON, RestartMode.OFF])
def test_procserv_2_7_never_cycles_into_oneshot_unless_started_in_it(start):
    assert RestartMode.ONESHOT not in toggle_cycle("2.7", start)
    assert RestartMode.ONESHOT in toggle_cycle("2.7", RestartMode.ONESHOT)


def test_toggling_to_oneshot_while_the_child_is_shut_down_ends_the_server():
    policy = RestartPolicy(RestartMode.OFF, 0.0, cycle=toggle_cycle("2.8", RestartMode.OFF))
    policy.child_started(0.0)
    policy.child_exited()
    assert not policy.server_done()
    assert policy.toggle() is RestartMode.ONESHOT
    assert policy.server_done() and policy.due_at() is None


def test_oneshot_before_the_first_start_does_not_end_the_server():
    policy = RestartPolicy(RestartMode.ONESHOT, wait=True)
    assert not policy.server_done()
    policy.request_start()
    assert policy.due_at() == -math.inf


@pytest.mark.parametrize(
    ("version", "previous", "returncode", "ends", "code"),
    [
        ("2.7", 0, 3, False, 0),  # 2.7.0 exits 0 whatever its child did
        ("2.7", 0, 3, True, 3),  # oneshot: the child's status
        ("2.7", 0, -9, True, 137),  # oneshot: 128+N for signal N (#58)
        ("2.8", 0, 5, False, 5),  # 2.8.0 keeps the last normal exit status for ^Q or SIGTERM
        ("2.8", 5, -9, False, 5),  # ... which a signal death leaves as it was
        ("2.8", 5, 3, True, 3),
        ("2.8", 5, -15, True, 143),  # upstream gives 5 here: the #58 fix is kept
    ],
)
def test_exit_code_after_a_child_exit(version, previous, returncode, ends, code):
    assert exit_code_after(previous, returncode, ends_server=ends, procserv_version=version) == code


def test_mode_values_are_the_words_the_console_shows():
    assert [m.value for m in RestartMode] == ["ON", "OFF", "ONESHOT"]


# -- kill_sequence ----------------------------------------------------------------------------------


def test_kill_sequence_for_sigkill_is_one_sigkill_at_once():
    assert kill_sequence(signal.SIGKILL, 0) == [(0.0, signal.SIGKILL)]
    assert kill_sequence(signal.SIGKILL, 10) == [(0.0, signal.SIGKILL)]


def test_kill_sequence_for_term_without_grace_is_term_then_kill_at_once():
    assert kill_sequence(signal.SIGTERM, 0) == [(0.0, signal.SIGTERM), (0.0, signal.SIGKILL)]


def test_kill_sequence_for_term_with_grace_waits_before_kill():
    assert kill_sequence(signal.SIGTERM, 5) == [(0.0, signal.SIGTERM), (5.0, signal.SIGKILL)]


def test_kill_sequence_with_negative_grace_does_not_wait():
    assert kill_sequence(signal.SIGINT, -3) == [(0.0, signal.SIGINT), (0.0, signal.SIGKILL)]


def test_kill_sequence_for_signal_0_sends_only_the_final_sigkill():
    assert kill_sequence(0, 0) == [(0.0, signal.SIGKILL)]


@SETTINGS
@given(st.integers(0, 64), st.floats(-10, 100, allow_nan=False))
def test_kill_sequence_always_ends_in_sigkill_and_never_goes_back_in_time(kill_signal, grace):
    steps = kill_sequence(kill_signal, grace)
    assert steps[-1][1] == signal.SIGKILL
    delays = [delay for delay, _ in steps]
    assert delays == sorted(delays) and delays[0] == 0.0 and min(delays) >= 0.0
    assert 0 not in [sig for _, sig in steps]


# -- random sequences of events ---------------------------------------------------------------------

_actions = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 30, allow_nan=False)),
        st.just(("start_if_due",)),
        st.just(("exit",)),
        st.just(("request",)),
        st.just(("toggle",)),
    ),
    max_size=40,
)


@SETTINGS
@given(
    st.sampled_from(list(RestartMode)),
    st.floats(0, 20, allow_nan=False),
    st.booleans(),
    _actions,
    st.sampled_from(PROCSERV_VERSIONS),
)
def test_a_start_is_never_due_early_nor_while_running(mode, holdoff, wait, actions, version):
    policy = RestartPolicy(mode, holdoff, wait=wait, cycle=toggle_cycle(version, mode))
    now = 0.0
    last_start: float | None = None
    requested = False
    for action in actions:
        if action[0] == "advance":
            now += action[1]
        elif action[0] == "start_if_due":
            if not policy.running and due_now(policy, now):
                policy.child_started(now)
                last_start, requested = now, False
        elif action[0] == "exit":
            if policy.running:
                policy.child_exited()
        elif action[0] == "request":
            if not policy.running:
                requested = True
            policy.request_start()
        else:
            policy.toggle()

        due = policy.due_at()
        if policy.running or policy.server_done():
            assert due is None
        elif requested:
            assert due is not None and due <= now
        elif last_start is None:
            assert due is None if wait else due == -math.inf
        elif due is not None:
            assert due >= last_start + policy.holdoff
            assert policy.mode is not RestartMode.OFF
