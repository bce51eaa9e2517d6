"""The console log (pyprocserv._shell.logfile): per-line stamps, the history ring, the ``-L`` file.

These tests prove that:
* :class:`LineStamper` puts the stamp before the first byte of every line, across any chunk
  boundaries, once per line, also before ``@@@`` lines (behaviour §5.2), so stamping a stream
  in pieces gives what stamping it whole gives;
* :class:`History` replays exactly the last N lines (the line in progress counting as one),
  however the output was chunked, and stays bounded in bytes for output without newlines;
* :class:`LogFile` appends, reopens after a rename (SIGHUP), survives a path it cannot open,
  and reports a failing write (``/dev/full``) once, then silence, then a notice when writes
  succeed again;
* size-based rotation (host mode) keeps every byte: the files read oldest to newest are
  exactly what was written, whatever the chunking, no file past its limit unless one write is,
  no more backups than asked; a reader following the log sees every byte across rotations.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support.chunks import split_at
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core import messages
from pyprocserv._core.log import History, LineStamper, parse_size, rotation_due, rotation_renames
from pyprocserv._shell.logfile import LogFile, follow, log_files, tail

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
STAMP = b"[23:06:47] "




def stamped_reference(data: bytes, stamp: bytes) -> bytes:
    """The stamp before every byte that starts a line, written the slow, obvious way."""
    out = bytearray()
    at_start = True
    for byte in data:
        if at_start:
            out += stamp
        out.append(byte)
        at_start = byte == ord("\n")
    return bytes(out)


def lines_of(data: bytes) -> list[bytes]:
    """``splitlines(keepends=True)`` for ``\\n`` only: a lone ``\\r`` does not end a console line."""
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


# -- LineStamper ------------------------------------------------------------------------------


def test_every_line_gets_the_stamp_once():
    assert LineStamper().apply(b"one\r\ntwo\r\n", STAMP) == STAMP + b"one\r\n" + STAMP + b"two\r\n"


def test_stamp_goes_before_each_at_at_at_line():
    text = messages.restarting("catchild", "/bin/cat") + messages.new_child("catchild", 6034)
    assert LineStamper().apply(text, STAMP) == (
        STAMP + b'@@@ Restarting child "catchild"\r\n'
        + STAMP + b"@@@    (as /bin/cat)\r\n"
        + STAMP + b'@@@ The PID of new child "catchild" is: 6034\r\n'
        + STAMP + b"@@@ @@@ @@@ @@@ @@@\r\n"
    )


def test_partial_line_is_stamped_once_and_its_rest_follows_without_a_stamp():
    # behaviour §5.2 [run]: "[23:06:47] partial" ... then "\r\n"
    stamper = LineStamper()
    assert stamper.apply(b"partial", STAMP) == STAMP + b"partial"
    assert stamper.apply(b" more", b"[later] ") == b" more"
    assert stamper.apply(b"\r\n", b"[later] ") == b"\r\n"
    assert stamper.apply(b"next", b"[later] ") == b"[later] next"


def test_stamp_waits_for_the_first_byte_of_the_next_line():
    stamper = LineStamper()
    assert stamper.apply(b"done\n", STAMP) == STAMP + b"done\n"
    assert stamper.at_line_start
    assert stamper.apply(b"x", b"<t> ") == b"<t> x"


def test_empty_lines_get_a_stamp_each():
    assert LineStamper().apply(b"\n\n", b"S") == b"S\nS\n"


def test_empty_chunk_changes_nothing():
    stamper = LineStamper()
    assert stamper.apply(b"", STAMP) == b""
    assert stamper.apply(b"a", STAMP) == STAMP + b"a"
    assert stamper.apply(b"", STAMP) == b""
    assert stamper.apply(b"b", STAMP) == b"b"


def test_lone_carriage_return_does_not_start_a_line():
    assert LineStamper().apply(b"a\rb\n", b"S") == b"Sa\rb\n"


_console = st.lists(
    st.one_of(st.binary(max_size=20), st.sampled_from([b"\r\n", b"\n", b"@@@ x\r\n", b"\r"])), max_size=20
).map(b"".join)


@SETTINGS
@given(_console, st.lists(st.integers(0, 300), max_size=10), st.binary(max_size=12))
def test_stamping_in_chunks_equals_stamping_the_whole(data, cuts, stamp):
    stamper = LineStamper()
    pieces = b"".join(stamper.apply(chunk, stamp) for chunk in split_at(data, cuts))
    assert pieces == LineStamper().apply(data, stamp)
    assert pieces == stamped_reference(data, stamp)


@SETTINGS
@given(_console.map(lambda b: b.replace(b"|", b"")), st.lists(st.integers(0, 300), max_size=10))
def test_one_stamp_per_line_and_nothing_else_added(data, cuts):
    stamper = LineStamper()
    out = b"".join(stamper.apply(chunk, b"|") for chunk in split_at(data, cuts))
    assert out.replace(b"|", b"") == data
    assert out.count(b"|") == len(lines_of(data))


# -- History -----------------------------------------------------------------------------------


def test_history_replays_the_last_n_lines():
    history = History(2)
    history.feed(b"one\r\ntwo\r\nthree\r\n")
    assert history.replay() == b"two\r\nthree\r\n"


def test_history_counts_the_line_in_progress_as_a_line():
    history = History(2)
    history.feed(b"one\ntwo\nthr")
    assert history.replay() == b"two\nthr"


def test_history_with_fewer_lines_than_n_replays_everything():
    history = History(10)
    history.feed(b"a\nb")
    assert history.replay() == b"a\nb"


def test_history_of_zero_lines_keeps_nothing():
    history = History(0)
    history.feed(b"a\nb\n")
    assert history.replay() == b""


def test_history_replay_does_not_consume():
    history = History(1)
    history.feed(b"x\ny\n")
    assert history.replay() == history.replay() == b"y\n"


def test_history_keeps_blank_lines():
    history = History(3)
    history.feed(b"a\n\n\nb\n")
    assert history.replay() == b"\n\nb\n"


@SETTINGS
@given(
    st.integers(1, 8),
    st.lists(st.one_of(st.binary(max_size=15).map(lambda b: b.replace(b"\r", b"")), st.just(b"\n"), st.just(b"\n\n")), max_size=40),
)
def test_history_keeps_exactly_the_last_n_lines_however_fed(n, chunks):
    history = History(n)
    for index, chunk in enumerate(chunks):
        history.feed(chunk)
        if index % 7 == 3:
            history.replay()  # replay in between must not change what is kept
    data = b"".join(chunks)
    assert history.replay() == b"".join(data.splitlines(keepends=True)[-n:])


@SETTINGS
@given(st.integers(1, 5), st.lists(st.binary(max_size=200), max_size=60))
def test_history_matches_a_splitlines_reference_on_any_bytes(n, chunks):
    history = History(n)
    for chunk in chunks:
        history.feed(chunk)
    data = b"".join(chunks)
    assert history.replay() == b"".join(lines_of(data)[-n:])


def test_history_many_lines_are_trimmed_to_n():
    history = History(3)
    for i in range(20000):
        history.feed(b"line %d\r\n" % i)
    assert history.replay() == b"line 19997\r\nline 19998\r\nline 19999\r\n"


def test_history_stays_bounded_for_a_stream_without_newlines():
    history = History(5, max_bytes=1000)
    chunk = b"x" * 100 + b"y" * 37
    for _ in range(2000):
        history.feed(chunk)
        assert len(history._buf) <= 2 * history.max_bytes + 4096 + len(chunk)
    replay = history.replay()
    assert len(replay) == 1000
    assert replay == (chunk * 2000)[-1000:]


def test_history_default_byte_bound_grows_with_the_line_count():
    assert History(10).max_bytes >= 1 << 16
    assert History(1000).max_bytes >= 1000 * 1024


# -- LogFile -------------------------------------------------------------------------------------


def test_log_file_appends_exactly_the_bytes_written(tmp_path):
    path = tmp_path / "ioc.log"
    path.write_bytes(b"old\r\n")
    log = LogFile(str(path))
    try:
        assert log.is_open
        assert log.write(b"@@@ Restarting child \"x\"\r\n") is None
        assert log.write(b"\xff\x00raw") is None
    finally:
        log.close()
    assert path.read_bytes() == b"old\r\n@@@ Restarting child \"x\"\r\n\xff\x00raw"
    assert not log.is_open


def test_log_file_is_created_with_mode_0644_under_umask_022(tmp_path):
    path = tmp_path / "new.log"
    old = os.umask(0o022)
    try:
        log = LogFile(str(path))
    finally:
        os.umask(old)
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_reopen_after_rename_writes_a_new_file(tmp_path):
    path = tmp_path / "ioc.log"
    log = LogFile(str(path))
    log.write(b"before\n")
    path.rename(tmp_path / "ioc.log.1")
    log.write(b"still old\n")
    assert log.reopen() is None
    log.write(b"after\n")
    log.close()
    assert (tmp_path / "ioc.log.1").read_bytes() == b"before\nstill old\n"
    assert path.read_bytes() == b"after\n"


def test_unopenable_path_is_not_fatal(tmp_path):
    log = LogFile(str(tmp_path / "no" / "such" / "dir.log"))
    assert not log.is_open
    assert log.failing
    assert log.write(b"data") is None
    notice = log.reopen()
    assert notice is not None and notice.startswith(b"@@@ pyprocserv: cannot write log file ")
    log.close()


def test_close_releases_the_descriptor(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    log = LogFile(str(tmp_path / "x.log"))
    log.write(b"x")
    log.close()
    log.close()  # twice is harmless
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_failing_write_gives_one_notice_then_silence_then_written_again(tmp_path):
    log = LogFile("/dev/full")
    try:
        assert log.is_open
        first = log.write(b"lost 1\n")
        assert first == messages.log_error("/dev/full", os.strerror(28))
        assert first == b"@@@ pyprocserv: cannot write log file /dev/full: No space left on device\r\n"
        assert log.write(b"lost 2\n") is None
        assert log.write(b"lost 3\n") is None

        good = tmp_path / "good.log"
        log.path = str(good)
        assert log.reopen() is None
        assert log.write(b"kept\n") == messages.log_resumed(str(good))
        assert log.write(b"kept too\n") is None
    finally:
        log.close()
    assert good.read_bytes() == b"kept\nkept too\n"


# -- rotation ------------------------------------------------------------------------------------


def test_parse_size_takes_bytes_and_binary_units():
    assert parse_size("1000") == 1000
    assert parse_size("512K") == 512 * 1024
    assert parse_size("10M") == 10 * 1024 * 1024
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("0") == 0
    with pytest.raises(ValueError):
        parse_size("ten")


def test_rotation_is_due_only_past_the_limit_and_never_for_an_empty_file():
    assert not rotation_due(90, 10, 100)
    assert rotation_due(91, 10, 100)
    assert not rotation_due(0, 500, 100)  # one huge write goes whole into a fresh file
    assert not rotation_due(10**9, 1, 0)  # 0: no rotation


def test_rotation_renames_oldest_first_and_drops_the_last_backup():
    assert rotation_renames("x.log", 3) == [
        ("x.log.3", None), ("x.log.2", "x.log.3"), ("x.log.1", "x.log.2"), ("x.log", "x.log.1"),
    ]
    assert rotation_renames("x.log", 0) == [("x.log.1", None), ("x.log", "x.log.1")]  # at least one


def written_back(path) -> bytes:
    """Every file of a rotated log, oldest first, joined."""
    return b"".join(Path(name).read_bytes() for name in reversed(log_files(str(path))))


@SETTINGS
@given(chunks=st.lists(st.binary(min_size=0, max_size=40), max_size=60), max_bytes=st.integers(1, 100))
def test_rotation_keeps_every_byte_in_order(tmp_path_factory, chunks, max_bytes):
    path = tmp_path_factory.mktemp("rot") / "ioc.log"
    log = LogFile(str(path), max_bytes=max_bytes, backups=50)  # enough backups to keep everything
    for chunk in chunks:
        assert log.write(chunk) is None
    log.close()
    assert written_back(path) == b"".join(chunks)
    for name in log_files(str(path)):
        data = Path(name).read_bytes()
        assert len(data) <= max_bytes or data in chunks  # past the limit only by one write on its own


def test_rotation_keeps_only_the_backups_asked_for(tmp_path):
    path = tmp_path / "ioc.log"
    log = LogFile(str(path), max_bytes=10, backups=2)
    for n in range(6):
        log.write(b"line %d...\n" % n)  # 10 bytes: one file each
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["ioc.log", "ioc.log.1", "ioc.log.2"]
    assert written_back(path) == b"line 3...\nline 4...\nline 5...\n"


def test_rotation_counts_what_the_file_held_when_opened(tmp_path):
    path = tmp_path / "ioc.log"
    path.write_bytes(b"x" * 8)
    log = LogFile(str(path), max_bytes=10)
    log.write(b"abc")
    log.close()
    assert (tmp_path / "ioc.log.1").read_bytes() == b"x" * 8
    assert path.read_bytes() == b"abc"


def test_follow_reads_every_byte_across_rotations(tmp_path):
    path = tmp_path / "ioc.log"
    log = LogFile(str(path), max_bytes=10, backups=5)
    chunks = [b"%d:abcdef\n" % n for n in range(8)]
    pending = list(chunks)

    def wait() -> None:  # the writer goes on whenever the reader has caught up
        if pending:
            log.write(pending.pop(0))
        else:
            raise StopIteration_

    seen = bytearray()
    log.write(pending.pop(0))
    try:
        for data in follow(str(path), wait):
            seen += data
    except StopIteration_:
        pass
    log.close()
    assert bytes(seen) == b"".join(chunks)


def test_log_files_are_listed_newest_first_and_tail_reads_across_them(tmp_path):
    path = tmp_path / "ioc.log"
    for name, text in [("ioc.log.10", b"a\nb\n"), ("ioc.log.2", b"c\nd\n"), ("ioc.log", b"e\nf"),
                       ("ioc.log.x", b"not a backup"), ("other.log.1", b"not ours")]:
        (tmp_path / name).write_bytes(text)
    files = log_files(str(path))
    assert files == [str(path), str(tmp_path / "ioc.log.2"), str(tmp_path / "ioc.log.10")]
    assert tail(files, 1) == b"f"
    assert tail(files, 3) == b"d\ne\nf"
    assert tail(files, 99) == b"a\nb\nc\nd\ne\nf"
    assert tail(files, 0) == b""
    assert tail([str(tmp_path / "ioc.log.2")], 1) == b"d\n"


class StopIteration_(Exception):
    """Ends the follow loop in the test (a real reader ends it with ^C)."""
