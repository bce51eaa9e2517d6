#!/usr/bin/env python3
"""Two IOCs, each under its own process server, in one trio program.

Run it (``python3 examples/two_iocs.py [PORT_A PORT_B]``, ports 20001 and 20002 by default),
then ``telnet localhost 20001`` or ``telnet localhost 20002``. Press Enter here to print both
servers' status. ^C here (SIGINT), SIGTERM or the end of stdin shuts both down in order and
exits 0: stopping is this program's normal end. The log file and the UNIX socket go into a
fresh temporary directory, printed at start; the log stays there for reading afterwards.
"""

import os
import signal
import sys
import tempfile

import trio

import pyprocserv

DEMO = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_ioc.py")]


async def main(port_a: str = "20001", port_b: str = "20002") -> None:
    # Held from the first moment: a ^C is a request to stop, never a KeyboardInterrupt traceback.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        files = tempfile.mkdtemp(prefix="two_iocs-")
        print("log and socket files in", files, flush=True)
        configs = [
            pyprocserv.Config(command=DEMO, name="ioc-a", control=[port_a], holdoff=2,
                              logfile=os.path.join(files, "ioc-a.log")),
            pyprocserv.Config(command=DEMO, name="ioc-b", control=[port_b, "unix:" + os.path.join(files, "ioc-b.sock")],
                              history=50),
        ]
        servers = [pyprocserv.ProcessServer(config) for config in configs]

        async with trio.open_nursery() as serving:
            for server in servers:
                await serving.start(server.run)  # returns once it listens and the child runs
                print(server.config.child_name, "serves", ", ".join(server.endpoints), flush=True)

            async with trio.open_nursery() as waiting:

                def stop_all() -> None:
                    for server in servers:
                        server.shutdown()  # its run() returns once the child is down: `serving` waits
                    waiting.cancel_scope.cancel()

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        print("stopping both servers", flush=True)
                        stop_all()

                async def print_status_on_enter() -> None:
                    while await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
                        for server in servers:
                            s = server.status
                            print(f"{s.name}: running={s.running} pid={s.pid} starts={s.start_count} "
                                  f"users={s.users}", flush=True)
                    stop_all()  # stdin closed

                waiting.start_soon(stop_on_signal)
                waiting.start_soon(print_status_on_enter)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:3])
