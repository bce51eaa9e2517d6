"""Every trio test with real processes or sockets runs under an absolute time limit.

Tests on ``autojump_clock`` are left alone: their time is virtual (a 15 s holdoff passes in
microseconds, and a limit in virtual seconds would measure nothing).
"""

from __future__ import annotations

import functools
import gc
import inspect

import pytest
import trio

from support.fakes import FakeSpawner, fake_server
from support.launch import remove_short_tmpdirs
from support.ports import free_port

REAL_TEST_LIMIT = 60.0  # seconds; the slowest real test needs a few


def _bounded(test):
    @functools.wraps(test)
    async def wrapper(*args, **kwargs):
        with trio.fail_after(REAL_TEST_LIMIT):
            return await test(*args, **kwargs)

    return wrapper


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(test) and "autojump_clock" not in getattr(item, "fixturenames", ()):
            item.obj = _bounded(test)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test():
    """Unclosed sockets and files surface (ResourceWarning is an error) in the test that leaked
    them, not in whichever test happens to run when the garbage collector does."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _remove_short_tmpdirs_after_each_test():
    """A suite run leaves nothing in /tmp (a few hundred directories a run, otherwise)."""
    yield
    remove_short_tmpdirs()


@pytest.fixture
def ca_env(monkeypatch):
    """A private CA port for this test's server, and clients that search only there.

    caproto's sync client keeps its sockets in module globals; they are closed afterwards.
    """
    port = free_port(udp=True)
    env = {
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.255.255.255",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    from caproto.sync import client

    for sock in client.sockets.values():
        sock.close()
    client.sockets.clear()
    client.global_circuits.clear()


@pytest.fixture
def spawner() -> FakeSpawner:
    """The fake child's spawner, for servers on the virtual clock: what it started, and when."""
    return FakeSpawner()


@pytest.fixture
def started_server(nursery, spawner):
    """``await started_server(**config)``: a running server whose children are ``spawner``'s."""

    async def start(**overrides):
        return await nursery.start(fake_server(spawner, **overrides).run)

    return start
