"""The phases of a server run (pyprocserv._shell.lifecycle): forward only, and nobody waits for a skipped one."""

from __future__ import annotations

import trio

from pyprocserv._shell.lifecycle import Lifecycle, Phase


def test_a_run_starts_in_starting_and_only_moves_forward():
    lifecycle = Lifecycle()
    assert lifecycle.phase is Phase.STARTING and not lifecycle.stopping
    assert lifecycle.advance(Phase.SERVING) is True
    assert lifecycle.advance(Phase.SERVING) is False  # already there
    assert lifecycle.advance(Phase.STOPPING) is True and lifecycle.stopping
    assert lifecycle.advance(Phase.SERVING) is False  # never back
    assert lifecycle.phase is Phase.STOPPING


async def test_waiting_for_a_skipped_phase_returns_once_a_later_one_is_reached(autojump_clock):
    lifecycle = Lifecycle()
    woken: list[Phase] = []

    async def wait_for(phase: Phase) -> None:
        await lifecycle.reached(phase)
        woken.append(phase)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for, Phase.SERVING)
        nursery.start_soon(wait_for, Phase.DONE)
        await trio.sleep(1)
        assert woken == []
        lifecycle.advance(Phase.STOPPING)  # a SIGTERM before the first start: SERVING is skipped
        await trio.sleep(1)
        assert woken == [Phase.SERVING]
        lifecycle.advance(Phase.DONE)
    assert woken == [Phase.SERVING, Phase.DONE]
