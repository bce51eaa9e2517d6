"""Files without windows: signals at start-up, symlinks planted by other users.

Rules for these tests:
* A signal at any moment of start-up ends the server promptly and leaves no socket, pid or
  info file; the hang (a shutdown asked for before the first start) is proved on the fake clock.
* An attacker is simulated where the old code had a window: a symlink swapped in right after
  ``bind()``, planted at the status file's temporary path, or planted at the pid or info file's
  path in a directory every user can write. The symlink's target keeps its bytes, mode and owner.
* Real processes run under ``trio.fail_after`` or subprocess timeouts.
"""

from __future__ import annotations

import trio

from helpers import FakeSpawner
from pyprocserv import Config, ProcessServer


# -- shutdown before the first start ---------------------------------------------------------


async def test_shutdown_before_the_first_start_ends_run_instead_of_waiting_for_it(autojump_clock):
    # SIGTERM delivered as soon as trio's receiver is open: shutdown() runs before the
    # supervisor's first turn, so no start will ever come.
    spawner = FakeSpawner()
    server = ProcessServer(Config(command=("/bin/cat",), name="c"), spawn=spawner, bound_endpoints=[])
    server.shutdown()
    with trio.fail_after(5):
        assert await server.run() == 0
    assert spawner.children == []
