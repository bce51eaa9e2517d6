#!/usr/bin/env python3
"""A stand-in for an EPICS soft IOC shell, to try pyprocserv without EPICS installed.

It prints a start-up banner, then reads commands at an ``epics> `` prompt like iocsh:
``help``, ``dbl``, ``dbgf NAME``, ``dbpf NAME VALUE``, ``exit``. ^C interrupts it (unless
pyprocserv's ``-i ^D^C`` keeps ^C away, as IOC consoles usually do).
"""

import os
import sys
import time

records = {"DEMO:AI": "3.14", "DEMO:BO": "0", "DEMO:HEARTBEAT": "0"}
started = time.time()


def main() -> int:
    print(f"Starting demo IOC (pid {os.getpid()}) in {os.getcwd()}")
    print("iocInit: all records initialised")
    while True:
        records["DEMO:HEARTBEAT"] = str(int(time.time() - started))
        sys.stdout.write("epics> ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:  # ^D on an empty line
            return 0
        words = line.split()
        if not words:
            continue
        command, args = words[0], words[1:]
        if command == "exit":
            return 0
        if command == "help":
            print("help  dbl  dbgf NAME  dbpf NAME VALUE  exit")
        elif command == "dbl":
            print("\n".join(records))
        elif command == "dbgf" and args and args[0] in records:
            print(f"DBF_STRING: {records[args[0]]!r}")
        elif command == "dbpf" and len(args) == 2 and args[0] in records:
            records[args[0]] = args[1]
            print(f"DBF_STRING: {args[1]!r}")
        else:
            print(f"Command {command} not found or bad arguments")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ndemo IOC interrupted")
        sys.exit(130)
