"""Key handling (pyprocserv._core.keys): the command characters and what reaches the child.

These tests prove that:
* ``-k``/``--autorestartcmd``/``-x`` specs and ``--ignore`` strings are read exactly as procServ's
  getOptionChar and ignore scan read them (behaviour §1.5), quirks included (``^a`` and ``^]``
  mean ``^``; ``^D^C^]`` ignores ``^`` and ``]``, not 0x1d);
* :meth:`KeyMap.scan` follows the state table of behaviour §4.4: ^R and ^Q reach a running
  child and are commands only while it is shut down; ^X kills a running child and starts a
  stopped one; ^T and the logout character act in every state and never reach the child;
  NUL is stripped whenever an ignore set exists; commands come out in byte order;
* the bytes for the child are exactly the input minus the dropped bytes, in order, and a chunk
  scanned at once gives what its pieces give.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.keys import (
    KILL_CHAR,
    QUIT_CHAR,
    RESTART_CHAR,
    TOGGLE_CHAR,
    Key,
    KeyMap,
    parse_char,
    parse_ignore,
)

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)

CTRL_R, CTRL_Q, CTRL_X, CTRL_T = b"\x12", b"\x11", b"\x18", b"\x14"
CTRL_B, CTRL_D, CTRL_C = b"\x02", b"\x04", b"\x03"


# -- parse_char: getOptionChar (behaviour §1.5) ---------------------------------------------


def test_the_fixed_and_default_command_characters_are_procservs():
    assert (RESTART_CHAR, QUIT_CHAR, KILL_CHAR, TOGGLE_CHAR) == (0x12, 0x11, 0x18, 0x14)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("^^", ord("^")),
        ("^A", 1),
        ("^B", 2),
        ("^X", 0x18),
        ("^Z", 26),
        ("^a", ord("^")),  # lowercase is not a control spec
        ("^x", ord("^")),
        ("^[", ord("^")),
        ("^]", ord("^")),
        ("^?", ord("^")),
        ("^@", ord("^")),
        ("^", ord("^")),
        ("q", ord("q")),
        ("quit", ord("q")),  # only the first character counts
        ("^Xyz", 0x18),
        ("^^X", ord("^")),
        ("", 0),
        (None, 0),
    ],
)
def test_parse_char_reads_specs_like_getoptionchar(spec, expected):
    assert parse_char(spec) == expected


@pytest.mark.parametrize("letter", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
def test_parse_char_caret_uppercase_letter_is_its_control_character(letter):
    assert parse_char("^" + letter) == ord(letter) - 64


def test_parse_char_accepts_bytes_too():
    assert parse_char(b"^T") == 0x14
    assert parse_char(b"") == 0


# -- parse_ignore: the --ignore scan -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("^D^C^]", b"\x04\x03^]"),  # procServUtils' value: ^ and ], not 0x1d
        ("^^", b"^"),
        ("^^A", b"^A"),
        ("^A^Z", b"\x01\x1a"),
        ("^a", b"^a"),
        ("abc", b"abc"),
        ("^", b"^"),
        ("x^", b"x^"),
        ("^^^^", b"^^"),
        ("", b""),
    ],
)
def test_parse_ignore_scans_left_to_right_like_procserv(spec, expected):
    assert parse_ignore(spec) == expected


def test_parse_ignore_for_procservutils_ignores_ctrl_d_ctrl_c_caret_and_bracket():
    assert set(parse_ignore("^D^C^]")) == {4, 3, ord("^"), ord("]")}


def _procserv_ignore_scan(optarg: bytes) -> bytes:
    """A line-by-line transcription of procServ 2.7.0's ``-i`` loop (procServ.cc)."""
    buf = optarg + b"\0"  # C strings: optarg[i+1] may be the terminator
    out = bytearray()
    i = 0
    while i < len(optarg):
        if buf[i] == ord("^") and buf[i + 1] == ord("^"):
            out.append(ord("^"))
            i += 2
        elif buf[i] == ord("^") and ord("A") <= buf[i + 1] <= ord("Z"):
            out.append(buf[i + 1] - 64)
            i += 2
        else:
            out.append(buf[i])
            i += 1
    return bytes(out)


@SETTINGS
@given(st.binary(max_size=30).filter(lambda b: 0 not in b) | st.text(alphabet="^ABXZaz]x", max_size=30).map(str.encode))
def test_parse_ignore_agrees_with_procservs_loop(spec):
    assert parse_ignore(spec) == _procserv_ignore_scan(spec)


@SETTINGS
@given(st.binary(min_size=1, max_size=4).filter(lambda b: 0 not in b))
def test_parse_char_agrees_with_getoptionchar(spec):
    buf = spec + b"\0"
    if buf[0] == ord("^") and buf[1] == ord("^"):
        expected = ord("^")
    elif buf[0] == ord("^") and ord("A") <= buf[1] <= ord("Z"):
        expected = buf[1] - 64
    else:
        expected = buf[0]
    assert parse_char(spec) == expected


# -- the ignore set ------------------------------------------------------------------------------


def test_default_keymap_drops_kill_toggle_and_nul_but_not_restart_or_quit():
    dropped = set(KeyMap().dropped)
    assert dropped == {0x18, 0x14, 0}
    assert RESTART_CHAR not in dropped and QUIT_CHAR not in dropped


def test_ignore_string_and_logout_char_are_added_to_the_dropped_set():
    keys = KeyMap(logout=0x04, ignore=parse_ignore("^D^C^]"))
    assert set(keys.dropped) == {0x18, 0x14, 0x04, 0x03, ord("^"), ord("]"), 0}


def test_nul_is_stripped_when_an_ignore_set_exists():
    _, to_child = KeyMap().scan(b"hello\r\x00", child_running=True)
    assert to_child == b"hello\r"


def test_nul_is_stripped_with_an_empty_ignore_string_and_no_command_chars():
    keys = KeyMap(kill=0, toggle=0, logout=0, ignore=b"")
    assert keys.scan(b"a\x00b", child_running=True)[1] == b"ab"


def test_nul_is_kept_when_kill_toggle_and_logout_are_disabled_and_no_ignore_given():
    keys = KeyMap(kill=0, toggle=0, logout=0)
    assert keys.scan(b"a\x00b\r\x00", child_running=True) == ([], b"a\x00b\r\x00")


@pytest.mark.parametrize("only", ["kill", "toggle", "logout"])
def test_any_single_command_char_makes_nul_dropped(only):
    chars = {"kill": 0, "toggle": 0, "logout": 0}
    chars[only] = 0x02
    keys = KeyMap(**chars)
    assert keys.scan(b"a\x00b", child_running=True)[1] == b"ab"


# -- KeyMap.scan against the state table (behaviour §4.4) -------------------------------------


def test_ctrl_r_reaches_a_running_child_and_is_no_command():
    assert KeyMap().scan(CTRL_R, child_running=True) == ([], CTRL_R)


def test_ctrl_q_reaches_a_running_child_and_is_no_command():
    assert KeyMap().scan(CTRL_Q, child_running=True) == ([], CTRL_Q)


def test_ctrl_r_while_shut_down_requests_a_start():
    keys, _ = KeyMap().scan(CTRL_R, child_running=False)
    assert keys == [Key.START]


def test_ctrl_q_while_shut_down_quits_the_server():
    keys, _ = KeyMap().scan(CTRL_Q, child_running=False)
    assert keys == [Key.QUIT]


def test_ctrl_x_while_running_kills_and_never_reaches_the_child():
    assert KeyMap().scan(b"a" + CTRL_X + b"b", child_running=True) == ([Key.KILL], b"ab")


def test_ctrl_x_while_shut_down_requests_a_start_and_never_reaches_the_child():
    assert KeyMap().scan(CTRL_X, child_running=False) == ([Key.START], b"")


@pytest.mark.parametrize("running", [True, False])
def test_ctrl_t_toggles_in_every_state_and_never_reaches_the_child(running):
    assert KeyMap().scan(b"a" + CTRL_T + b"b", child_running=running) == ([Key.TOGGLE], b"ab")


@pytest.mark.parametrize("running", [True, False])
def test_logout_char_logs_out_in_every_state_and_never_reaches_the_child(running):
    keys = KeyMap(logout=0x02)
    assert keys.scan(b"a" + CTRL_B + b"b", child_running=running) == ([Key.LOGOUT], b"ab")


def test_logout_is_not_a_command_by_default():
    assert KeyMap().scan(CTRL_B, child_running=True) == ([], CTRL_B)


def test_with_kill_disabled_ctrl_x_is_not_a_command_and_reaches_a_running_child():
    keys = KeyMap(kill=0)
    assert keys.scan(CTRL_X, child_running=True) == ([], CTRL_X)


def test_with_kill_disabled_ctrl_x_does_not_start_a_stopped_child():
    keys, _ = KeyMap(kill=0).scan(CTRL_X, child_running=False)
    assert keys == []


def test_with_kill_disabled_ctrl_r_still_starts_a_stopped_child():
    keys, _ = KeyMap(kill=0).scan(CTRL_R, child_running=False)
    assert keys == [Key.START]


def test_with_toggle_disabled_ctrl_t_is_passed_to_the_child():
    assert KeyMap(toggle=0).scan(CTRL_T, child_running=True) == ([], CTRL_T)


def test_custom_kill_char_replaces_ctrl_x():
    keys = KeyMap(kill=ord("q"))
    assert keys.scan(b"q" + CTRL_X, child_running=True) == ([Key.KILL], CTRL_X)


def test_ignored_chars_are_dropped_while_running():
    keys = KeyMap(ignore=parse_ignore("^D^C"))
    assert keys.scan(b"ab" + CTRL_D + CTRL_C + b"cd", child_running=True) == ([], b"abcd")


def test_an_ignored_command_char_still_acts():
    keys = KeyMap(ignore=CTRL_R + CTRL_Q)
    assert keys.scan(CTRL_R + CTRL_Q, child_running=False) == ([Key.START, Key.QUIT], b"")


def test_commands_come_out_in_byte_order_while_shut_down():
    keys, _ = KeyMap(logout=0x02).scan(
        CTRL_T + CTRL_X + b"a" + CTRL_Q + CTRL_R + CTRL_B, child_running=False
    )
    assert keys == [Key.TOGGLE, Key.START, Key.QUIT, Key.START, Key.LOGOUT]


def test_commands_come_out_in_byte_order_while_running():
    keys, to_child = KeyMap(logout=0x02).scan(
        CTRL_X + CTRL_R + CTRL_T + CTRL_Q + CTRL_B + CTRL_X, child_running=True
    )
    assert keys == [Key.KILL, Key.TOGGLE, Key.LOGOUT, Key.KILL]
    assert to_child == CTRL_R + CTRL_Q


def test_one_byte_that_is_several_commands_acts_in_procservs_order():
    # processInput checks start/quit (shut down), then logout, toggle, kill for every byte.
    same = KeyMap(kill=0x02, toggle=0x02, logout=0x02)
    assert same.scan(CTRL_B, child_running=False)[0] == [Key.START, Key.LOGOUT, Key.TOGGLE]
    assert same.scan(CTRL_B, child_running=True)[0] == [Key.LOGOUT, Key.TOGGLE, Key.KILL]


def test_plain_text_passes_unchanged():
    data = b"dbl\r\x7f\x1b[A\xff\xfe"
    assert KeyMap().scan(data, child_running=True) == ([], data)


def test_empty_input_is_no_command_and_nothing_for_the_child():
    assert KeyMap().scan(b"", child_running=True) == ([], b"")


# -- properties --------------------------------------------------------------------------------

_special = st.sampled_from([0x00, 0x02, 0x03, 0x04, 0x11, 0x12, 0x14, 0x18, ord("^"), ord("]")])
_input_bytes = st.lists(st.one_of(_special, st.integers(0, 255)), max_size=60).map(bytes)
_chars = st.one_of(st.just(0), _special, st.integers(1, 255))
_keymaps = st.builds(
    KeyMap,
    kill=_chars,
    toggle=_chars,
    logout=_chars,
    ignore=st.one_of(st.none(), st.lists(_special, max_size=4).map(bytes)),
)


@SETTINGS
@given(_keymaps, _input_bytes, st.booleans())
def test_bytes_for_the_child_are_the_input_minus_dropped_bytes_in_order(keys, data, running):
    _, to_child = keys.scan(data, child_running=running)
    assert not set(to_child) & set(keys.dropped)
    assert to_child == bytes(b for b in data if b not in keys.dropped)


@SETTINGS
@given(_keymaps, _input_bytes, st.booleans())
def test_kill_toggle_and_logout_never_reach_the_child(keys, data, running):
    _, to_child = keys.scan(data, child_running=running)
    for char in (keys.kill, keys.toggle, keys.logout):
        if char:
            assert char not in to_child


@SETTINGS
@given(_keymaps, _input_bytes, st.booleans())
def test_commands_match_a_per_byte_reading_of_the_state_table(keys, data, running):
    expected = []
    for byte in data:
        if not running:
            if byte == keys.restart or (keys.kill and byte == keys.kill):
                expected.append(Key.START)
            if byte == keys.quit:
                expected.append(Key.QUIT)
        if keys.logout and byte == keys.logout:
            expected.append(Key.LOGOUT)
        if keys.toggle and byte == keys.toggle:
            expected.append(Key.TOGGLE)
        if running and keys.kill and byte == keys.kill:
            expected.append(Key.KILL)
    assert keys.scan(data, child_running=running)[0] == expected


@SETTINGS
@given(_keymaps, _input_bytes, st.integers(0, 60), st.booleans())
def test_scanning_at_once_equals_scanning_split_anywhere(keys, data, cut, running):
    whole_keys, whole_child = keys.scan(data, child_running=running)
    head_keys, head_child = keys.scan(data[:cut], child_running=running)
    tail_keys, tail_child = keys.scan(data[cut:], child_running=running)
    assert head_keys + tail_keys == whole_keys
    assert head_child + tail_child == whole_child
