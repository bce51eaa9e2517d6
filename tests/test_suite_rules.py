"""The rules of this test suite hold (conftest.py): real tests have a deadline, fake ones do not."""

import trio


async def test_real_trio_tests_run_under_a_deadline():
    assert trio.current_effective_deadline() < float("inf")


async def test_virtual_clock_tests_have_no_real_deadline(autojump_clock):
    assert trio.current_effective_deadline() == float("inf")
