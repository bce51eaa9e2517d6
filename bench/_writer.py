"""Benchmark child: write N bytes of console lines of one byte value to stdout, then wait.

Usage: _writer.py N BYTE [--exit]

The output is lines of 79 copies of chr(BYTE) and a newline (N is rounded down to a multiple of
80), written in blocks of 65,520 bytes with os.write, as fast as the terminal takes them.
The payload byte value never appears on the command line, so a greeting that shows the command
cannot contain it. Afterwards the child waits until its parent (the process server, or the
ceiling reader) is gone, so no output is lost to a child's exit (procServ 2.7.0 can lose the
tail of a dying child's output), and no orphan outlives the measurement; --exit exits at once.
"""

import os
import sys
import time

LINE = 80


def main() -> None:
    n = int(sys.argv[1]) // LINE * LINE
    byte = int(sys.argv[2])
    line = bytes([byte]) * (LINE - 1) + b"\n"
    block = line * (65536 // LINE)
    view = memoryview(block)
    left = n
    while left:
        chunk = view[: min(left, len(block))]
        while chunk:
            chunk = chunk[os.write(1, chunk):]
        left -= min(left, len(block))
    if "--exit" in sys.argv[3:]:
        return
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
