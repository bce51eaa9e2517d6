"""What a browser console costs the server per reader: no compression made for each one.

Browsers offer permessage-deflate on every WebSocket. Accepted, it makes the server compress
every message once for each reader (its own zlib state of ~100-200 KiB and about 4 times the
CPU per byte with 100 spies, ``bench/web_spies.py --deflate``), against architecture §3 rule 2:
the console's bytes go to every browser as they are.
"""

from __future__ import annotations

import pytest
import trio

pytest.importorskip("anycorn")  # in the test extra: CI always has it
from starlette.applications import Starlette  # noqa: E402
from starlette.routing import WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402

from pyprocserv._web.serve import serve_asgi  # noqa: E402

OUTPUT = b"#" * 4000  # what compresses best: terminal output


async def console_like(websocket: WebSocket) -> None:
    """Accept and send one binary message, as the console does."""
    await websocket.accept()
    await websocket.send_bytes(OUTPUT)
    await websocket.receive()  # until the browser goes


async def test_a_browser_offering_permessage_deflate_gets_output_uncompressed(nursery):
    port = await nursery.start(serve_asgi, Starlette(routes=[WebSocketRoute("/ws", console_like)]), "127.0.0.1", 0)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"  # Chromium's offer
        )
        received = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 4:
                chunk = await stream.receive_some(1 << 16)
                assert chunk, received
                received += chunk
            head, _, frame = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b"sec-websocket-extensions" not in head.lower(), head
            assert frame[0] == 0x82, hex(frame[0])  # FIN, binary, and RSV1 clear: not compressed
            assert frame[1:4] == b"\x7e" + len(OUTPUT).to_bytes(2, "big")  # 126: a 16-bit length follows
            while len(frame) < 4 + len(OUTPUT):
                frame += await stream.receive_some(1 << 16)
    assert frame[4:] == OUTPUT
