"""Browser consoles as sessions of the shell: the webterm codec, and ``serve_console`` on the fake
server with in-memory message transports, on trio's virtual clock.

A browser console must behave as a telnet console does (the same keys, fan-out, budget, skips
and history), with a replay-end marker, keys held back until the browser is ready, and a
read-only spy role.
"""

from __future__ import annotations

import json
import logging
import math
import signal

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from support.client import attach
from pyprocserv import KeyMap, RestartMode
from pyprocserv._core.telnet import Data, WindowSize
from pyprocserv._shell.console import Outbox
from pyprocserv._shell.session import MAX_OUTPUT_MESSAGE
from pyprocserv._core.webterm import MAX_TEXT, REPLAY_END, Closed, Ready, WebTermConnection

READY = json.dumps({"ready": True})


def resize(columns: int, rows: int) -> str:
    return json.dumps({"resize": [columns, rows]})


# -- the codec ----------------------------------------------------------------------------------


def decode(*messages: bytes | str) -> list[object]:
    codec = WebTermConnection()
    for message in messages:
        codec.receive_message(message)
    return list(codec.events())


def test_keys_count_only_after_ready_and_sizes_at_once():
    assert decode(b"\x1b[?1;2c", resize(80, 24), READY, b"ls\r", READY, b"") == [
        WindowSize(columns=80, rows=24), Ready(), Data(b"ls\r"),
    ]


def test_unknown_fields_are_ignored_so_a_newer_page_still_works():
    assert decode(READY, json.dumps({"ready": True, "theme": "dark"}), json.dumps({"zoom": 2})) == [Ready()]


@pytest.mark.parametrize("text", [
    "not json", "[1, 2]", '"ready"', "{", "[" * 5000, json.dumps({"ready": 1}), json.dumps({"ready": False}),
    resize(0, 24), resize(80, 65536), json.dumps({"resize": [80, True]}), json.dumps({"resize": [80]}),
    json.dumps({"resize": "80x24"}), json.dumps({"resize": [80.0, 24]}), " " * (MAX_TEXT + 1),
])
def test_a_message_that_breaks_the_protocol_closes_and_nothing_follows(text):
    events = decode(READY, text, b"typed after", resize(80, 24))
    assert events[0] == Ready() and len(events) == 2 and isinstance(events[1], Closed)
    assert events[1].reason  # says what was wrong


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70000) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["resize", "ready", "x"]), inner, max_size=3),
    max_leaves=8,
)
messages = st.one_of(
    st.binary(max_size=20),
    st.text(max_size=30),
    json_values.map(json.dumps),
    st.builds(lambda c, r: resize(c, r), st.integers(-1, 70000), st.integers(-1, 70000)),
    st.just(READY),
)


@given(st.lists(messages, max_size=20))
def test_any_message_sequence_gives_events_or_one_clean_close(sequence):
    codec = WebTermConnection()
    events: list[object] = []
    for message in sequence:
        codec.receive_message(message)  # never raises
        events += codec.events()
    assert all(type(e) in (Data, WindowSize, Ready, Closed) for e in events)
    closes = [i for i, e in enumerate(events) if isinstance(e, Closed)]
    assert closes in ([], [len(events) - 1])  # at most one, and nothing after it
    ready_at = next((i for i, e in enumerate(events) if isinstance(e, Ready)), len(events))
    assert not any(isinstance(e, Data) for e in events[:ready_at])  # no key before ready
    assert all(1 <= e.columns <= 0xFFFF and 1 <= e.rows <= 0xFFFF for e in events if isinstance(e, WindowSize))


# -- an in-memory message transport and a browser on it ------------------------------------------


class MemoryTransport:
    """One end of an in-memory message transport, as the web layer adapts a WebSocket."""

    def __init__(self, send: trio.MemorySendChannel, receive: trio.MemoryReceiveChannel) -> None:
        self._send = send
        self._receive = receive

    async def send_message(self, message: bytes | str) -> None:
        await self._send.send(message)

    async def receive_message(self) -> bytes | str:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.BrokenResourceError("the other end closed") from None

    async def aclose(self, *, going_away: bool = False) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def transport_pair(buffer: float = math.inf) -> tuple[MemoryTransport, MemoryTransport]:
    """(browser's end, server's end); ``buffer`` 0: the server's sends wait until the browser reads."""
    to_server, from_browser = trio.open_memory_channel(math.inf)
    to_browser, from_server = trio.open_memory_channel(buffer)
    return MemoryTransport(to_server, from_server), MemoryTransport(to_browser, from_browser)


class Browser:
    """What xterm.js would see: binary messages of output, text messages of the protocol."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.messages: list[bytes | str] = []

    async def read_until(self, wanted: bytes | str) -> list[bytes | str]:
        """Messages up to the one holding ``wanted`` (a text message equal to it, or bytes in a binary one)."""
        start = len(self.messages)
        while True:
            try:
                with trio.fail_after(60):
                    message = await self.transport.receive_message()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                raise AssertionError(f"{exc!r} before {wanted!r}: {self.messages[start:]!r}") from None
            self.messages.append(message)
            if message == wanted or (isinstance(wanted, bytes) and isinstance(message, bytes) and wanted in message):
                return self.messages[start:]

    async def send(self, message: bytes | str) -> None:
        await self.transport.send_message(message)

    async def ready(self) -> list[bytes | str]:
        """Read the replay up to its end, then say ready; the replay's messages."""
        replay = await self.read_until(REPLAY_END)
        await self.send(READY)
        return replay

    async def ended(self) -> bool:
        """True once the server closed this console (whatever was still queued is read)."""
        with trio.move_on_after(5):
            while True:
                try:
                    self.messages.append(await self.transport.receive_message())
                except trio.BrokenResourceError:
                    return True
        return False


def browse(nursery: trio.Nursery, server, role: str = "operator", *, buffer: float = math.inf) -> Browser:
    browser_end, server_end = transport_pair(buffer)
    nursery.start_soon(lambda: server.serve_console(server_end, role=role))
    return Browser(browser_end)


def output(messages: list[bytes | str]) -> bytes:
    return b"".join(m for m in messages if isinstance(m, bytes))


# -- serve_console --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_session_fails(caplog):
    """A session that ends by our own error is logged and looks like a clean end: catch it."""
    yield
    failures = [r.getMessage() for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert failures == []


async def test_greeting_and_history_then_the_marker_then_live_output_as_the_child_wrote_it(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(history=2)
    child = await spawner.wait_for(1)
    child.say(b"one\r\ntwo\r\nthree\r\n")
    await trio.testing.wait_all_tasks_blocked()
    browser = browse(nursery, server)
    replay = await browser.ready()
    assert replay[-1] == REPLAY_END and all(isinstance(m, bytes) for m in replay[:-1])
    shown = output(replay)
    assert shown.startswith(b"@@@ Welcome to procServ") and shown.endswith(b"two\r\nthree\r\n")
    assert b"0 user(s) and 0 logger(s) connected (plus you)" in shown
    assert b"\xff" not in shown  # no telnet offer
    child.say(b"live \xff\r\n")
    assert await browser.read_until(b"live") == [b"live \xff\r\n"]  # 0xFF as it is, not doubled
    server.shutdown()


async def test_operator_keys_reach_the_child_only_after_ready(autojump_clock, nursery, started_server, spawner):
    server = await started_server()
    child = await spawner.wait_for(1)
    browser = browse(nursery, server)
    await browser.read_until(REPLAY_END)
    await browser.send(b"\x1b[?1;2c")  # xterm.js answering a query in the replay
    await trio.testing.wait_all_tasks_blocked()
    await browser.send(READY)
    await browser.send(b"ls\r")
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(child.input) == b"ls\r"
    assert server.status.users == 1 and server.status.loggers == 0
    server.shutdown()


async def test_a_big_message_is_typed_a_kibibyte_a_turn_so_others_run_between(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server()
    child = await spawner.wait_for(1)
    browser = browse(nursery, server)
    await browser.ready()
    keys = bytes(range(32, 127)) * 172  # 16,340 bytes in one message: the page's piece of a paste
    await browser.send(keys)
    turns_of_others = 0  # this task's turns while the keys go in
    while len(child.input) < len(keys):
        await trio.lowlevel.checkpoint()
        turns_of_others += 1
        assert turns_of_others < 100_000, bytes(child.input)[-40:]
    assert bytes(child.input) == keys  # every key, in order
    assert turns_of_others >= len(keys) // 1024  # not one turn for the whole message
    server.shutdown()


async def test_operator_keys_are_handled_as_telnet_handles_them(autojump_clock, nursery, started_server, spawner):
    server = await started_server(holdoff=0, keys=KeyMap(ignore=b"#"))
    child = await spawner.wait_for(1)
    browser = browse(nursery, server)
    await browser.ready()
    await browser.send(b"a#b")  # -i: ignored
    await browser.send(b"\x14")  # ^T
    await browser.read_until(b"auto restart to OFF")
    assert server.status.restart_mode is RestartMode.OFF
    await browser.send(b"\x18")  # ^X
    await browser.read_until(b"killed by signal 9")
    assert bytes(child.input) == b"ab" and child.signals == [signal.SIGKILL]
    server.shutdown()


async def test_the_logout_key_ends_the_console(autojump_clock, nursery, started_server, spawner):
    server = await started_server(keys=KeyMap(logout=4))
    await spawner.wait_for(1)
    browser = browse(nursery, server)
    await browser.ready()
    await browser.send(b"\x04")
    assert await browser.ended()
    assert server.status.users == 0
    server.shutdown()


async def test_the_browser_size_sizes_the_pty_as_naws_does(autojump_clock, nursery, started_server, spawner):
    server = await started_server(holdoff=0)
    child = await spawner.wait_for(1)
    browser = browse(nursery, server)
    await browser.send(resize(100, 30))  # counts before ready: the page is sized before it replays
    await browser.ready()
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes == [(30, 100)]
    await browser.send(resize(132, 50))
    await browser.send(b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert child.window_sizes == [(30, 100), (50, 132)]
    child.exit(0)
    await spawner.wait_for(2)
    assert spawner.calls[1]["window_size"] == (50, 132)  # the next child starts at that size
    server.shutdown()


async def test_a_spy_reads_the_control_form_counts_as_a_logger_and_cannot_type_or_resize(
    autojump_clock, nursery, tmp_path, started_server, spawner,
):
    server = await started_server(logfile=str(tmp_path / "log"), logstamp="<%Y> ")
    child = await spawner.wait_for(1)
    spy = browse(nursery, server, "spy")
    replay = await spy.ready()
    assert b"Welcome" not in output(replay) and output(replay).startswith(b"@@@ procServ server PID: ")
    assert server.status.users == 0 and server.status.loggers == 1
    operator = browse(nursery, server)
    assert b"0 user(s) and 1 logger(s) connected (plus you)" in output(await operator.read_until(REPLAY_END))
    await spy.send(b"hello\x18\x14")
    await spy.send(resize(100, 30))
    child.say(b"a\xff\r\n")
    assert output(await spy.read_until(b"a\xff")) == b"a\xff\r\n"  # no stamp, no doubling
    await trio.testing.wait_all_tasks_blocked()
    assert child.input == b"" and child.signals == [] and child.window_sizes == []
    assert server.status.restart_mode is RestartMode.ON
    server.shutdown()


async def test_a_slow_browser_is_skipped_with_a_notice_and_nobody_waits_for_it(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(client_budget=3000)  # one budget for all consoles together
    child = await spawner.wait_for(1)
    slow = browse(nursery, server, buffer=0)  # its messages wait until it reads them
    fast = attach(nursery, server)
    await fast.expect(b"\xfd\x22")
    for i in range(100):
        child.say(b"line %03d ..............................\r\n" % i)
    text = await fast.expect(b"line 099")  # the telnet client got everything, at once
    assert text.count(b"line ") == 100 and b"skipped" not in text
    seen = output(await slow.read_until(b"line 099"))
    assert REPLAY_END in slow.messages
    assert b"@@@ pyprocserv: " in seen and b"bytes of output skipped" in seen
    assert seen.count(b"line ") < 100
    server.shutdown()


class SlowLink:
    """A browser on a slow link: each message takes a second to go; what it holds meanwhile is counted."""

    def __init__(self, held: list[int]) -> None:
        browser_end, self._server_end = transport_pair()
        self.browser = Browser(browser_end)
        self._held = held  # bytes held by the messages in flight on every SlowLink: [now, peak]

    async def send_message(self, message: bytes | str) -> None:
        self._held[0] += len(message)
        self._held[1] = max(self._held[1], self._held[0])
        try:
            await trio.sleep(1)
            await self._server_end.send_message(message)
        finally:
            self._held[0] -= len(message)

    async def receive_message(self) -> bytes | str:
        return await self._server_end.receive_message()

    async def aclose(self, *, going_away: bool = False) -> None:
        await self._server_end.aclose()


async def test_slow_spies_hold_the_budget_and_one_bounded_message_each_then_read_on_after_a_notice(
    autojump_clock, nursery, started_server, spawner,
):
    """Spies on a streaming IOC: what the console queues for them stays within the budget,
    each holds at most one message of ``MAX_OUTPUT_MESSAGE`` besides, and a spy that reads again
    is told what it missed and gets the output that follows."""
    budget = 1 << 20
    server = await started_server(client_budget=budget)
    child = await spawner.wait_for(1)
    held = [0, 0]
    links = [SlowLink(held) for _ in range(10)]
    for link in links:
        nursery.start_soon(lambda link=link: server.serve_console(link, role="spy"))
    await trio.testing.wait_all_tasks_blocked()
    queued_peak = 0
    chunk = (b"#" * 79 + b"\n") * 100  # 8000 bytes: 800 KB a second, far more than a slow link takes
    for _ in range(1000):
        child.say(chunk)
        await trio.sleep(0.01)
        readers = server._console.readers
        queued = max(r.outbox.queued for r in readers) + sum(r.outbox.own for r in readers)
        queued_peak = max(queued_peak, queued)
    assert queued_peak <= budget  # the budget's own accounting: shared chunks counted once
    assert held[1] <= len(links) * MAX_OUTPUT_MESSAGE  # not up to half a MiB joined per spy
    child.say(b"the end\r\n")
    for link in links:
        seen = output(await link.browser.read_until(b"the end"))
        assert b"bytes of output skipped" in seen and seen.endswith(b"the end\r\n")
        assert REPLAY_END in link.browser.messages
    server.shutdown()


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20), st.lists(st.integers(1, 700), max_size=30))
def test_bounded_gets_hand_over_every_byte_in_order_and_none_longer_than_asked(chunks, limits):
    async def drain() -> list[bytes]:
        outbox = Outbox(1 << 20)
        for i, chunk in enumerate(chunks):
            if i % 3:
                outbox.share(chunk)
            else:
                outbox.put(chunk, bounded=False)  # bytes of this reader's own, counted apart
        got = []
        for limit in [*limits, *[64] * len(chunks) * 5]:
            if not outbox.queued:
                break
            data = await outbox.get(limit)
            assert data is not None and 0 < len(data) <= limit
            got.append(data)
        assert outbox.queued == 0 and outbox.own == 0
        return got

    assert b"".join(trio.run(drain)) == b"".join(chunks)


async def test_a_replay_over_the_budget_is_skipped_and_the_marker_still_comes_first(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server(client_budget=2000, history=100)
    child = await spawner.wait_for(1)
    for i in range(100):
        child.say(b"line %03d ..............................\r\n" % i)
    await trio.testing.wait_all_tasks_blocked()
    browser = browse(nursery, server)
    assert await browser.read_until(REPLAY_END) == [REPLAY_END]
    child.say(b"live\r\n")
    seen = output(await browser.read_until(b"live"))
    assert b"bytes of output skipped" in seen and seen.endswith(b"live\r\n")
    server.shutdown()


async def test_closing_the_transport_ends_the_console_and_the_counts_drop(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server()
    await spawner.wait_for(1)
    operator = browse(nursery, server)
    spy = browse(nursery, server, "spy")
    await operator.ready()
    await spy.ready()
    assert (server.status.users, server.status.loggers) == (1, 1)
    await operator.transport.aclose()
    await spy.transport.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert (server.status.users, server.status.loggers) == (0, 0)
    server.shutdown()


async def test_a_message_that_breaks_the_protocol_ends_only_that_console(
    autojump_clock, nursery, started_server, spawner,
):
    server = await started_server()
    child = await spawner.wait_for(1)
    bad = browse(nursery, server)
    good = browse(nursery, server)
    await bad.ready()
    await good.ready()
    await bad.send("not json")
    assert await bad.ended()
    await good.send(b"still here")
    await trio.testing.wait_all_tasks_blocked()
    assert child.input == b"still here" and server.status.users == 1
    server.shutdown()


async def test_a_shutdown_ends_every_browser_console(autojump_clock, nursery, started_server, spawner):
    server = await started_server()
    await spawner.wait_for(1)
    browser = browse(nursery, server)
    await browser.ready()
    server.shutdown()
    assert await browser.ended()
    assert b"@@@ " in output(browser.messages)  # the goodbye reached it first


async def test_an_unknown_role_is_refused_by_name(autojump_clock, started_server, spawner):
    server = await started_server()
    with pytest.raises(ValueError, match="operator, spy, not 'admin'"):
        await server.serve_console(transport_pair()[1], role="admin")
    server.shutdown()
