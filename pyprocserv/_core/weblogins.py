"""The web console's login rate limit: failed logins per client address and per (address, name).

Rules:
1. A login is refused without checking the password while its address, or its user name from
   that address, is blocked; :meth:`LoginLimiter.wait` says for how many seconds more (the
   ``Retry-After``). A name is never blocked by itself: a guesser from one address must not lock
   its user out from every other address (the guesses from each address are limited apart; the
   server's one-at-a-time scrypt bounds them all together).
2. ``max_failures`` failures of one key within ``window`` seconds block it for ``window``
   seconds. After that, each further failure blocks it again for twice as long as the last
   time, up to ``max_block``: a guesser gets a handful of tries a minute, then fewer and fewer.
3. A key with no failure for ``forget_after`` seconds is forgotten, its back-off with it. A
   successful login forgets the failures of its (address, name) pair (not its address's: one
   valid account must not reset the count of guesses against others).
4. Addresses are counted by what a client can cheaply change: an IPv6 client by its /64
   network, an IPv4-mapped address as IPv4 (``addresses`` rule 2); every loopback address
   (127/8, ``::1``) as one client, this host (a local user can connect from any of 127/8);
   anything else (a UNIX socket peer) as given.
   Unknown user names count like known ones, so the limiter tells nothing about which exist.
5. Memory is bounded: at most ``max_entries`` keys of each kind; past that the key whose last
   failure is oldest is dropped first. Each key keeps at most ``max_failures`` times.
6. No clock: callers pass ``now`` (monotonic seconds), so the back-off is tested without waiting.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from typing import final

from .addresses import peer_ip

_MAX_KEY_CHARS = 256
LOOPBACK = "loopback"  # the key of every loopback address (rule 4)


def client_key(peer: str) -> str:
    """The key a client address is counted under (rule 4)."""
    address = peer_ip(peer)
    if address is None:
        return peer[:_MAX_KEY_CHARS]
    if address.is_loopback:
        return LOOPBACK
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@final
class _Failures:
    __slots__ = ("times", "blocked_until", "block", "last")

    def __init__(self, max_failures: int) -> None:
        self.times: deque[float] = deque(maxlen=max_failures)
        self.blocked_until = 0.0
        self.block = 0.0  # the last block's length; 0 until the first
        self.last = 0.0


@final
class _Table:
    """Failures per key, oldest last-failure first, at most ``max_entries`` keys (rule 5)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, _Failures] = OrderedDict()

    def forget_older_than(self, when: float) -> None:
        while self.entries:
            key, oldest = next(iter(self.entries.items()))
            if oldest.last >= when:
                return
            del self.entries[key]

    def touch(self, key: str, max_failures: int) -> _Failures:
        entry = self.entries.pop(key, None) or _Failures(max_failures)
        self.entries[key] = entry
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry


@final
class LoginLimiter:
    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        *,
        max_block: float = 3600.0,
        forget_after: float | None = None,
        max_entries: int = 10_000,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_block < window or max_entries < 1:
            raise ValueError("login limiter: need max_failures >= 1, window > 0, max_block >= window, max_entries >= 1")
        self.max_failures = max_failures
        self.window = window
        self.max_block = max_block
        self.forget_after = max(forget_after or 0.0, 2 * max_block)
        self._addresses = _Table(max_entries)
        self._pairs = _Table(max_entries)

    def __len__(self) -> int:
        return len(self._addresses.entries) + len(self._pairs.entries)

    @staticmethod
    def _pair(peer: str, user: str) -> str:
        return f"{client_key(peer)} {user[:_MAX_KEY_CHARS]}"  # a key has no space; a name none either

    def _keys(self, peer: str, user: str) -> tuple[tuple[_Table, str], tuple[_Table, str]]:
        return (self._addresses, client_key(peer)), (self._pairs, self._pair(peer, user))

    def _forget_old(self, now: float) -> None:
        for table in (self._addresses, self._pairs):
            table.forget_older_than(now - self.forget_after)

    def wait(self, peer: str, user: str, now: float) -> float:
        """Seconds until a login from ``peer`` as ``user`` may be tried; 0 if it may now (rule 1)."""
        self._forget_old(now)
        wait = 0.0
        for table, key in self._keys(peer, user):
            entry = table.entries.get(key)
            if entry is not None:
                wait = max(wait, entry.blocked_until - now)
        return wait

    def failed(self, peer: str, user: str, now: float) -> None:
        """A login from ``peer`` as ``user`` failed at ``now`` (rule 2)."""
        self._forget_old(now)
        for table, key in self._keys(peer, user):
            entry = table.touch(key, self.max_failures)
            entry.last = now
            entry.times.append(now)
            full = len(entry.times) == self.max_failures and now - entry.times[0] < self.window
            if entry.block or full:
                entry.block = min(self.max_block, entry.block * 2 if entry.block else self.window)
                entry.blocked_until = max(entry.blocked_until, now + entry.block)

    def succeeded(self, peer: str, user: str) -> None:
        """``user`` logged in from ``peer``: the pair's failures are forgotten (rule 3)."""
        self._pairs.entries.pop(self._pair(peer, user), None)
