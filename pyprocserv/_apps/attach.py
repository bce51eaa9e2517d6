"""A console client for ``pyprocserv-manage attach`` when neither telnet nor socat is there.

Keys go to the server as they are typed (the terminal in raw mode, as telnet's character
mode), the console comes back with telnet's option bytes removed; leave with the server's
logout key (the launcher sets ^D) or by closing the connection from the other side.
"""

from __future__ import annotations

import os
import sys

import trio

from .._shell.stdio import RawTerminal, TerminalStream
from .._core.telnet import ECHO, SGA, Data, TelnetConnection


async def _attach(endpoint: str) -> None:
    if endpoint.startswith("/") or endpoint.startswith("@"):
        stream: trio.abc.Stream = await trio.open_unix_socket("\0" + endpoint[1:] if endpoint.startswith("@") else endpoint)
    else:
        host, _, port = endpoint.rpartition(":")
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
    # the client side of the negotiation: take the server's echo, offer nothing of our own
    codec = TelnetConnection(local_options=frozenset(), remote_options=frozenset({ECHO, SGA}),
                             solicit_remote=frozenset())
    terminal = TerminalStream(0, 1)
    async with stream, trio.open_nursery() as nursery:

        async def keys() -> None:
            while data := await terminal.receive_some(4096):
                await stream.send_all(TelnetConnection.encode(data))
            nursery.cancel_scope.cancel()

        nursery.start_soon(keys)
        while data := await stream.receive_some(65536):
            codec.receive_data(data)
            reply = codec.data_to_send()
            if reply:
                await stream.send_all(reply)
            for event in codec.events():
                if isinstance(event, Data):
                    await terminal.send_all(event.data)
        nursery.cancel_scope.cancel()


def attach(endpoint: str) -> int:
    with RawTerminal(0):
        try:
            trio.run(_attach, endpoint)
        except OSError as exc:
            print(f"pyprocserv-manage attach: {endpoint}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    os.write(1, b"\r\n")
    return 0
