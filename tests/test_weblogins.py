"""The login rate limit (pyprocserv._core.weblogins), with the time passed in.

These tests prove that five failures a minute block an address for a minute, for every name,
and never a name from the other addresses (a guesser cannot lock a user out), that each failure
after a block doubles the next one up to the cap, that a success forgets the (address, name)
failures but not the address's, that an IPv6 client cannot dodge the limit by changing
its interface identifier, that old entries are forgotten, and that a flood of distinct names
and addresses keeps the table at its cap.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.weblogins import LoginLimiter, client_key

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)


def _fail(limiter: LoginLimiter, times: int, now: float, peer: str = "192.0.2.1", user: str = "alice") -> None:
    for _ in range(times):
        limiter.failed(peer, user, now)


def test_a_few_failures_do_not_block():
    limiter = LoginLimiter()
    _fail(limiter, 4, now=100.0)
    assert limiter.wait("192.0.2.1", "alice", 100.0) == 0


def test_five_failures_in_a_minute_block_the_address_but_not_the_name_elsewhere():
    limiter = LoginLimiter()
    _fail(limiter, 5, now=100.0)
    assert limiter.wait("192.0.2.1", "alice", 100.0) == 60
    assert limiter.wait("192.0.2.1", "bob", 130.0) == 30  # the address, whatever name it tries
    assert limiter.wait("198.51.100.7", "alice", 130.0) == 0  # alice, from her own address
    assert limiter.wait("::ffff:192.0.2.1", "alice", 130.0) == 30  # the same address on a dual stack
    assert limiter.wait("198.51.100.7", "bob", 130.0) == 0
    assert limiter.wait("192.0.2.1", "alice", 160.0) == 0


def test_five_failures_spread_over_more_than_a_minute_do_not_block():
    limiter = LoginLimiter()
    for second in range(0, 75, 15):
        limiter.failed("192.0.2.1", "alice", float(second))
    assert limiter.wait("192.0.2.1", "alice", 60.0) == 0


def test_each_failure_after_a_block_doubles_the_next_up_to_the_cap():
    limiter = LoginLimiter(max_block=300.0)
    _fail(limiter, 5, now=0.0)
    now, blocks = 0.0, []
    for _ in range(5):
        now += limiter.wait("192.0.2.1", "alice", now)
        limiter.failed("192.0.2.1", "alice", now)
        blocks.append(limiter.wait("192.0.2.1", "alice", now))
    assert blocks == [120, 240, 300, 300, 300]


def test_a_guesser_hour_long_block_leaves_the_user_free_from_another_address():
    limiter = LoginLimiter()
    now = 0.0
    for _ in range(30):  # a guesser who retries as soon as allowed, for hours
        now += limiter.wait("203.0.113.66", "alice", now)
        limiter.failed("203.0.113.66", "alice", now)
    assert limiter.wait("203.0.113.66", "alice", now) == 3600
    assert limiter.wait("192.0.2.1", "alice", now) == 0


def test_a_success_forgets_the_pairs_failures_but_not_the_addresss():
    limiter = LoginLimiter()
    _fail(limiter, 4, now=0.0)
    limiter.succeeded("192.0.2.1", "alice")
    assert limiter.wait("192.0.2.1", "alice", 1.0) == 0
    limiter.failed("192.0.2.1", "alice", 1.0)
    assert limiter.wait("192.0.2.1", "bob", 1.0) == 60  # the address had its fifth failure


def test_an_ipv6_client_is_counted_by_its_slash_64():
    limiter = LoginLimiter()
    for host in range(5):
        limiter.failed(f"2001:db8:1:2::{host + 1:x}", f"user{host}", 0.0)
    assert limiter.wait("2001:db8:1:2:ffff::1", "carol", 0.0) == 60
    assert limiter.wait("2001:db8:1:3::1", "carol", 0.0) == 0


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("2001:db8::1", "2001:db8::/64"),
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::ffff:127.0.0.9", "loopback"),
        ("::1", "loopback"),
        ("/run/pyprocserv/web.sock", "/run/pyprocserv/web.sock"),
        ("x" * 1000, "x" * 256),
    ],
)
def test_client_key(peer, key):
    assert client_key(peer) == key


def test_guesses_from_many_loopback_addresses_count_as_one_client():
    limiter = LoginLimiter()
    for n in range(5):  # on Linux a local user may connect from any 127/8 address
        limiter.failed(f"127.0.{n}.{n + 2}", f"guess-{n}", 0.0)
    assert limiter.wait("127.0.99.1", "alice", 1.0) == 59
    assert limiter.wait("::1", "alice", 1.0) == 59
    assert limiter.wait("192.0.2.1", "alice", 1.0) == 0


def test_an_entry_is_forgotten_after_its_quiet_time():
    limiter = LoginLimiter(max_block=120.0, forget_after=240.0)
    _fail(limiter, 5, now=0.0)
    assert len(limiter) == 2
    assert limiter.wait("192.0.2.1", "alice", 239.0) == 0 and len(limiter) == 2
    limiter.wait("192.0.2.1", "alice", 241.0)
    assert len(limiter) == 0
    limiter.failed("192.0.2.1", "alice", 241.0)  # the back-off starts over too
    assert limiter.wait("192.0.2.1", "alice", 241.0) == 0


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=300), st.floats(0, 1.0)), max_size=300))
def test_a_flood_of_names_and_addresses_keeps_the_table_at_its_cap(attempts):
    limiter = LoginLimiter(max_entries=20)
    now = 0.0
    for address, user, step in attempts:
        now += step
        limiter.failed(f"10.{address >> 8 & 255}.{address & 255}.1", user, now)
        assert limiter.wait("10.0.0.1", user, now) >= 0
        assert len(limiter) <= 40


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="login limiter"):
        LoginLimiter(max_failures=0)
    with pytest.raises(ValueError, match="login limiter"):
        LoginLimiter(window=60, max_block=30)
