#!/usr/bin/env python3
"""Two IOCs, each under its own process server, in one trio program.

Run it, then ``telnet localhost 20001`` or ``telnet localhost 20002``. Press Enter here to
print both servers' status; ^C here shuts both down in order.
"""

import sys

import trio

import pyprocserv

DEMO = [sys.executable, "examples/demo_ioc.py"]


async def main() -> None:
    configs = [
        pyprocserv.Config(command=DEMO, name="ioc-a", control=["20001"], holdoff=2, logfile="ioc-a.log"),
        pyprocserv.Config(command=DEMO, name="ioc-b", control=["20002", "unix:/tmp/ioc-b.sock"], history=50),
    ]
    servers = [pyprocserv.ProcessServer(config) for config in configs]
    try:
        async with trio.open_nursery() as nursery:
            for server in servers:
                await nursery.start(server.run)  # returns once it listens and the child runs
                print(server.config.child_name, "serves", ", ".join(server.endpoints))
            while await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
                for server in servers:
                    s = server.status
                    print(f"{s.name}: running={s.running} pid={s.pid} starts={s.start_count} users={s.users}")
            for server in servers:  # stdin closed: stop both
                server.shutdown()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    trio.run(main)
