"""Every console text (pyprocserv._core.messages), byte for byte against procServ 2.7.0.

procServControl and site scripts scrape these lines with ``sscanf``, so these tests compare
whole byte strings with behaviour §2 (greeting, lifecycle, command messages) and the captures
of §10.1 (the greeting of a real procServ 2.7.0) and §10.2 (^X with auto restart ON),
including the quirks: ``-k ""`` cutting the "^R or ^X" line at the NUL, ``Current time: N/A``
without a line end, an over-long greeting time coming out empty. The procServ 2.8 dialect's
lines are compared with what a procServ 2.8.0 built from its v2.8.0 tag prints (the fixtures
in tests/fixtures/procserv-2.8.0 hold whole transcripts).
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core import messages as m
from pyprocserv._core.policy import RestartMode
from pyprocserv._core.telnet import TelnetConnection

# Local times, so the expected strings do not depend on the machine's time zone.
SERVER_START = time.mktime((2026, 11, 21, 23, 14, 39, 0, 0, -1))
KILLED_AT = time.mktime((2026, 11, 21, 23, 5, 42, 0, 0, -1))

CTRL_R, CTRL_X, CTRL_Q, CTRL_T, CTRL_B = 0x12, 0x18, 0x11, 0x14, 0x02


# -- building blocks ---------------------------------------------------------------------------


def test_separator_and_telnet_offer_are_procservs_bytes():
    assert m.SEPARATOR == b"@@@ @@@ @@@ @@@ @@@\r\n"
    assert m.TELNET_OFFER == TelnetConnection().initiate() == b"\xff\xfb\x01\xff\xfd\x22"  # what a session sends
    assert m.NL == b"\r\n"


@pytest.mark.parametrize(
    ("char", "shown"),
    [(CTRL_X, b"^X"), (1, b"^A"), (31, b"^_"), (ord("q"), b"q"), (ord("^"), b"^"), (127, b"\x7f"), (0, b"\x00")],
)
def test_ctl_shows_control_chars_with_a_caret_and_others_raw(char, shown):
    assert m.ctl(char) == shown


def test_c_locale_time_format():
    assert m.format_time("%c", SERVER_START) == "Sat Nov 21 23:14:39 2026"
    assert m.format_time("", SERVER_START) == ""


# -- the greeting (behaviour §2.1, §10.1) ---------------------------------------------------------


def test_welcome_line():
    assert m.welcome("procServ Process Server 2.7.0") == (
        b"@@@ Welcome to procServ (procServ Process Server 2.7.0)\r\n"
    )


def test_usage_line_with_default_keys():
    assert m.usage(CTRL_X, RestartMode.ON, CTRL_T, 0) == (
        b"@@@ Use ^X to kill the child, auto restart is ON, use ^T to toggle auto restart\r\n"
    )


def test_usage_line_shows_off_mode():
    assert m.usage(CTRL_X, RestartMode.OFF, CTRL_T, 0) == (
        b"@@@ Use ^X to kill the child, auto restart is OFF, use ^T to toggle auto restart\r\n"
    )


def test_usage_line_with_kill_disabled():
    assert m.usage(0, RestartMode.ON, CTRL_T, 0) == (
        b"@@@ Kill command disabled, auto restart is ON, use ^T to toggle auto restart\r\n"
    )


def test_usage_line_with_toggle_disabled():
    assert m.usage(CTRL_X, RestartMode.ON, 0, 0) == (
        b"@@@ Use ^X to kill the child, auto restart is ON, auto restart toggle disabled\r\n"
    )


def test_usage_lines_with_a_logout_char():
    assert m.usage(CTRL_X, RestartMode.ON, CTRL_T, CTRL_B) == (
        b"@@@ Use ^X to kill the child, auto restart is ON, use ^T to toggle auto restart\r\n"
        b"@@@ Use ^B to logout from procServ server\r\n"
    )


def test_usage_line_with_a_printable_kill_char():
    assert m.usage(ord("q"), RestartMode.ON, CTRL_T, 0).startswith(b"@@@ Use q to kill the child, ")


def test_server_info_with_a_name_different_from_the_command():
    assert m.server_info(12138, "/tmp/demo", "/tmp/demo", "mychild", "/bin/cat") == (
        b"@@@ procServ server PID: 12138\r\n"
        b"@@@ Server startup directory: /tmp/demo\r\n"
        b"@@@ Child startup directory: /tmp/demo\r\n"
        b'@@@ Child "mychild" started as: /bin/cat\r\n'
    )


def test_server_info_when_the_name_is_the_command():
    text = m.server_info(1, "/a", "/b", "/bin/cat", "/bin/cat")
    assert text.endswith(b"@@@ Child started as: /bin/cat\r\n")
    assert b"@@@ Child startup directory: /b\r\n" in text


def test_child_pid_and_shut_down_lines():
    assert m.child_pid("mychild", 12140) == b'@@@ Child "mychild" PID: 12140\r\n'
    assert m.child_shut_down("mychild") == b'@@@ Child "mychild" is SHUT DOWN\r\n'


def test_started_at_lines_while_a_child_runs():
    assert m.started_at("%c", SERVER_START, "mychild", SERVER_START) == (
        b"@@@ procServ server started at: Sat Nov 21 23:14:39 2026\r\n"
        b'@@@ Child "mychild" started at: Sat Nov 21 23:14:39 2026\r\n'
    )


def test_started_at_has_no_child_line_while_none_runs():
    assert m.started_at("%c", SERVER_START, "mychild", None) == (
        b"@@@ procServ server started at: Sat Nov 21 23:14:39 2026\r\n"
    )


def test_greeting_time_of_30_chars_is_shown():
    fmt = "%Y" + "x" * 26  # 30 characters
    assert m.greeting_time(fmt, SERVER_START) == b"2026" + b"x" * 26


@pytest.mark.parametrize("length", [32, 40, 100])
def test_greeting_time_longer_than_31_chars_comes_out_empty(length):
    fmt = "x" * length
    assert m.greeting_time(fmt, SERVER_START) == b""
    assert m.started_at(fmt, SERVER_START, "c", SERVER_START) == (
        b"@@@ procServ server started at: \r\n" b'@@@ Child "c" started at: \r\n'
    )


def test_connected_counts_line():
    assert m.connected(0, 0) == b"@@@ 0 user(s) and 0 logger(s) connected (plus you)\r\n"
    assert m.connected(3, 12) == b"@@@ 3 user(s) and 12 logger(s) connected (plus you)\r\n"


def test_commands_line_with_default_keys():
    assert m.commands(CTRL_R, CTRL_X, CTRL_Q, 0) == (
        b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n"
    )


def test_commands_line_with_a_logout_char():
    assert m.commands(CTRL_R, CTRL_X, CTRL_Q, CTRL_B) == (
        b"@@@ ^R or ^X restarts the child, ^Q quits the server, ^B closes this connection\r\n"
    )


def test_commands_line_with_kill_disabled_is_cut_at_the_nul():
    # behaviour §1.5 [run]: with -k "" the %c of 0 ends the C string
    assert m.commands(CTRL_R, 0, CTRL_Q, 0) == b"@@@ ^R or \r\n"


def test_commands_line_with_kill_disabled_and_logout_appends_after_the_cut():
    # procServ strncat()s the logout part onto the cut string (procServ.cc, infoMessage3)
    assert m.commands(CTRL_R, 0, CTRL_Q, CTRL_B) == b"@@@ ^R or , ^B closes this connection\r\n"


def test_whole_greeting_matches_the_procserv_2_7_0_capture():
    # behaviour §10.1: `socat - TCP:...` against procServ 2.7.0, -n mychild ... /bin/cat
    greeting = (
        m.welcome("procServ Process Server 2.7.0")
        + m.usage(CTRL_X, RestartMode.ON, CTRL_T, 0)
        + m.server_info(12138, "/tmp/demo", "/tmp/demo", "mychild", "/bin/cat")
        + m.child_pid("mychild", 12140)
        + m.started_at("%c", SERVER_START, "mychild", SERVER_START)
        + m.connected(0, 0)
        + m.TELNET_OFFER
    )
    assert greeting == (
        b"@@@ Welcome to procServ (procServ Process Server 2.7.0)\r\n"
        b"@@@ Use ^X to kill the child, auto restart is ON, use ^T to toggle auto restart\r\n"
        b"@@@ procServ server PID: 12138\r\n"
        b"@@@ Server startup directory: /tmp/demo\r\n"
        b"@@@ Child startup directory: /tmp/demo\r\n"
        b'@@@ Child "mychild" started as: /bin/cat\r\n'
        b'@@@ Child "mychild" PID: 12140\r\n'
        b"@@@ procServ server started at: Sat Nov 21 23:14:39 2026\r\n"
        b'@@@ Child "mychild" started at: Sat Nov 21 23:14:39 2026\r\n'
        b"@@@ 0 user(s) and 0 logger(s) connected (plus you)\r\n"
        b"\xff\xfb\x01\xff\xfd\x22"
    )
    assert greeting.endswith(b"(plus you)\r\n\xff\xfb\x01\xff\xfd\x22")


# -- child lifecycle (behaviour §2.2, §10.2) ---------------------------------------------------


def test_restarting_lines_when_the_name_differs_from_argv0():
    assert m.restarting("catchild", "/bin/cat") == (
        b'@@@ Restarting child "catchild"\r\n@@@    (as /bin/cat)\r\n'
    )


def test_restarting_line_when_the_name_is_argv0():
    assert m.restarting("/bin/cat", "/bin/cat") == b'@@@ Restarting child "/bin/cat"\r\n'


def test_new_child_line_is_followed_by_the_separator():
    assert m.new_child("catchild", 6409) == (
        b'@@@ The PID of new child "catchild" is: 6409\r\n@@@ @@@ @@@ @@@ @@@\r\n'
    )


def test_sigchild_block_for_a_normal_exit():
    assert m.child_exited(12140, 3) == (
        b"\r\n@@@ @@@ @@@ @@@ @@@\r\n"
        b"@@@ Received a sigChild for process 12140. Normal exit status = 3\r\n"
    )


def test_sigchild_block_for_exit_status_0_and_255():
    assert m.child_exited(5, 0).endswith(b"@@@ Received a sigChild for process 5. Normal exit status = 0\r\n")
    assert m.child_exited(5, 255).endswith(b"Normal exit status = 255\r\n")


def test_sigchild_block_for_a_signal():
    assert m.child_exited(6034, -9) == (
        b"\r\n@@@ @@@ @@@ @@@ @@@\r\n"
        b"@@@ Received a sigChild for process 6034. The process was killed by signal 9\r\n"
    )


def test_current_time_line():
    assert m.current_time("%c", KILLED_AT) == b"@@@ Current time: Sat Nov 21 23:05:42 2026\r\n"


def test_current_time_with_an_empty_format_is_na_without_a_line_end():
    assert m.current_time("", KILLED_AT) == b"@@@ Current time: N/A"


def test_current_time_of_107_chars_still_fits_procservs_buffer():
    fmt = "x" * 107
    assert m.current_time(fmt, KILLED_AT) == b"@@@ Current time: " + b"x" * 107 + b"\r\n"


@pytest.mark.parametrize("length", [108, 109, 110, 200])
def test_current_time_too_long_for_procservs_buffer_is_na(length):
    # processFactory.cc (2.7.0): now_buf[128] = "@@@ Current time: " (18 bytes); strftime gets
    # 128-18-1 = 109 bytes (so at most 108 characters), and the line end is added only while
    # sizeof(now_buf) - strlen(now_buf) > 2, i.e. for at most 107 characters. Otherwise N/A.
    assert m.current_time("x" * length, KILLED_AT) == b"@@@ Current time: N/A"


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        (RestartMode.ON, b"@@@ Child process is shutting down, a new one will be restarted shortly\r\n"),
        (RestartMode.OFF, b"@@@ Child process is shutting down, auto restart is disabled\r\n"),
        (RestartMode.ONESHOT, b"@@@ Child process is shutting down, oneshot mode: server will exit\r\n"),
    ],
)
def test_shutting_down_line_per_mode(mode, text):
    assert m.shutting_down(mode) == text


def test_kill_with_auto_restart_on_matches_the_procserv_2_7_0_capture():
    # behaviour §10.2, the lines after ^X (2.7.0 prints no "Got a kill command")
    shutdown = (
        m.child_exited(6034, -9)
        + m.current_time("%c", KILLED_AT)
        + m.shutting_down(RestartMode.ON)
        + m.commands(CTRL_R, CTRL_X, CTRL_Q, 0)
    )
    assert shutdown == (
        b"\r\n"
        b"@@@ @@@ @@@ @@@ @@@\r\n"
        b"@@@ Received a sigChild for process 6034. The process was killed by signal 9\r\n"
        b"@@@ Current time: Sat Nov 21 23:05:42 2026\r\n"
        b"@@@ Child process is shutting down, a new one will be restarted shortly\r\n"
        b"@@@ ^R or ^X restarts the child, ^Q quits the server\r\n"
    )
    restart = m.restarting("catchild", "/bin/cat") + m.new_child("catchild", 6409)
    assert restart == (
        b'@@@ Restarting child "catchild"\r\n@@@    (as /bin/cat)\r\n'
        b'@@@ The PID of new child "catchild" is: 6409\r\n'
        b"@@@ @@@ @@@ @@@ @@@\r\n"
    )


# -- commands (behaviour §2.3, §10.2) ----------------------------------------------------------


def test_toggled_messages_are_procserv_2_7_0s():
    assert m.toggled(RestartMode.OFF) == b"\r\n@@@ Toggled auto restart to OFF\r\n"
    assert m.toggled(RestartMode.ON) == b"\r\n@@@ Toggled auto restart to ON\r\n"


def test_procserv_2_8_toggled_messages_name_the_mode():
    assert m.toggled(RestartMode.OFF, "2.8") == b"\r\n@@@ Toggled auto restart mode to OFF\r\n"
    assert m.toggled(RestartMode.ONESHOT, "2.8") == b"\r\n@@@ Toggled auto restart mode to ONESHOT\r\n"
    assert m.toggled(RestartMode.ON, "2.8") == b"\r\n@@@ Toggled auto restart mode to ON\r\n"


def test_procserv_2_8_usage_line_says_auto_restart_mode():
    assert m.usage(CTRL_X, RestartMode.ONESHOT, CTRL_T, 0, "2.8") == (
        b"@@@ Use ^X to kill the child, auto restart mode is ONESHOT, use ^T to toggle auto restart\r\n"
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 255), st.sampled_from(list(RestartMode)), st.integers(0, 255), st.integers(0, 255))
def test_procserv_2_8_changes_only_the_auto_restart_words(kill, mode, toggle, logout):
    """2.8.0 reworded two phrases and nothing else: keys, the rest of the line, the logout line."""
    old = m.usage(kill, mode, toggle, logout)
    new = m.usage(kill, mode, toggle, logout, "2.8")
    assert new == old.replace(b", auto restart is ", b", auto restart mode is ", 1)
    assert new != old
    assert m.toggled(mode, "2.8") == m.toggled(mode).replace(b"auto restart to", b"auto restart mode to")


def test_procserv_2_8_child_log_file_lines():
    assert m.child_log_file("/var/log/ioc.log", True) == b"@@@ Child log file: /var/log/ioc.log\r\n"
    assert m.child_log_file("/nope/x.log", False) == (
        b"@@@ Child log file: unable to open log file /nope/x.log\r\n"
    )


# -- pyprocserv's own notices ------------------------------------------------------------------


def test_own_notices_are_marked_as_pyprocservs_and_end_in_crlf():
    notices = [
        m.output_skipped(10),
        m.input_dropped(10),
        m.log_error("/var/log/x.log", "No space left on device"),
        m.log_resumed("/var/log/x.log"),
    ]
    for notice in notices:
        assert b"@@@ pyprocserv: " in notice
        assert notice.endswith(b"\r\n")
    assert m.log_error("/l", "Boom") == b"@@@ pyprocserv: cannot write log file /l: Boom\r\n"
    assert m.log_resumed("/l") == b"@@@ pyprocserv: log file /l is written again\r\n"


def test_non_utf8_names_from_argv_are_written_as_their_original_bytes():
    name = os.fsdecode(b"caf\xe9")
    assert m.child_pid(name, 1) == b'@@@ Child "caf\xe9" PID: 1\r\n'


def test_every_message_ends_in_crlf():
    messages = [
        m.welcome("v"),
        m.usage(CTRL_X, RestartMode.ON, CTRL_T, CTRL_B),
        m.server_info(1, "/", "/", "a", "b"),
        m.child_pid("a", 1),
        m.child_shut_down("a"),
        m.started_at("%c", SERVER_START, "a", SERVER_START),
        m.connected(0, 0),
        m.commands(CTRL_R, CTRL_X, CTRL_Q, 0),
        m.commands(CTRL_R, 0, CTRL_Q, 0),
        m.restarting("a", "b"),
        m.new_child("a", 1),
        m.child_exited(1, 0),
        m.current_time("%c", SERVER_START),
        m.shutting_down(RestartMode.OFF),
        m.toggled(RestartMode.ON),
    ]
    for message in messages:
        assert message.endswith(b"\r\n"), message
        assert b"\n" not in message.replace(b"\r\n", b""), message


# -- the PV channel's and the watchdog's announcements -----------------------------------------


def test_ca_command_announcements_name_the_pv_the_peer_and_what_it_does():
    assert m.ca_command("CS:PS:IOC:STOP", "10.0.0.5", "STOP") == \
        "CA put CS:PS:IOC:STOP=1 from 10.0.0.5: auto restart OFF, then kill"
    assert m.ca_command("X:RESTART", None, "RESTART") == "CA put X:RESTART=1 from this host: auto restart ON, then kill or start"
    assert [m.CA_COMMANDS[c] for c in ("START", "KILL", "TOGGLE")] == ["start", "kill", "toggle auto restart"]
    assert m.announcement(m.ca_command("X:START", None, "START")) == b"@@@ pyprocserv: CA put X:START=1 from this host: start\r\n"


def test_host_put_announcements():
    assert m.ca_put("MAN:ioc_control", "Run") == "CA put MAN:ioc_control=Run"
    assert m.ca_put_all("HOST:ALL", "Stop", 3) == "CA put HOST:ALL=Stop: 3 autostart instance(s)"


def test_refused_put_announcements():
    assert m.ca_put_refused("X:STOP", "10.1.2.3") == "refused CA put to X:STOP from 10.1.2.3: not an allowed host"
    assert m.ca_puts_refused(4, "10.1.2.3", "X:KILL") == \
        "refused 4 CA puts from 10.1.2.3 since the last report, the latest to X:KILL: not an allowed host"
    assert m.ca_puts_refused_since(1, "h") == "refused 1 more CA put from h: not an allowed host"
    assert m.ca_puts_refused_since(2, "h") == "refused 2 more CA puts from h: not an allowed host"


def test_watchdog_announcements():
    assert m.WATCHDOG == "Watchdog"
    assert m.watch_good_again("A:B") == "A:B is good again"
    assert m.watch_bad("A:B", "'GRUMPY'", 1.0) == "A:B is 'GRUMPY': restarting the child if it stays so for 1 s"
    assert m.watch_budget_spent(4, "A:B", "INVALID") == \
        "restart budget spent (4 per hour): not restarting the child while A:B is INVALID"
    assert m.watch_backoff("A:B", "disconnected", 2.5) == \
        "A:B is still disconnected: next restart 2.5 s after the last one (backoff)"
    assert m.watch_restarting("A:B", "INVALID", 30.0, 1, 3) == \
        "A:B has been INVALID for 30 s: restarting the child (1 of 3 per hour)"
