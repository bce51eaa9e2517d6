"""Standard output for ``-L -`` and ``-d`` (pyprocserv._shell.stdio): written in order, and a shutdown can wait for it."""

from __future__ import annotations

import os

import trio

from pyprocserv._shell.stdio import StdoutWriter


async def test_finished_comes_once_everything_queued_is_written():
    read_end, write_end = os.pipe()
    try:
        writer = StdoutWriter(write_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for chunk in (b"one\r\n", b"two\r\n"):
                writer.write(chunk)
            writer.close()
            with trio.fail_after(5):
                await writer.finished()
        assert os.read(read_end, 100) == b"one\r\ntwo\r\n"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_finished_comes_when_nobody_reads_stdout_any_more():
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        writer = StdoutWriter(write_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            writer.write(b"lost\r\n")
            with trio.fail_after(5):
                await writer.finished()
        assert writer.broken
    finally:
        os.close(write_end)
