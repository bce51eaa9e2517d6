"""A browser of raw HTTP and WebSockets for the web console's tests (issue #12).

``WebClient(port)`` keeps the cookies it is given, as a browser does, and speaks to one
loopback port: ``get``, ``post`` (with our ``Origin`` unless told otherwise), ``login``,
``csrf`` (read from the status page), ``act`` (a button), ``socket`` (a trio-websocket client
with the cookies and our Origin) and ``handshake`` (the status a WebSocket upgrade gets).
``attach`` reads a console's replay and says ready, as the page does. Every wait has a limit.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import trio
from trio_websocket import open_websocket


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def text(self) -> str:
        return self.body.decode()


class WebClient:
    def __init__(self, port: int, *, cookies: dict[str, str] | None = None, tls: ssl.SSLContext | None = None,
                 base: str = "/") -> None:
        self.port = port
        self.cookies = dict(cookies or {})
        self.tls = tls
        self.base = base
        self.origin = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                      *, raw: bytes | None = None) -> Reply:
        head = {"Host": f"127.0.0.1:{self.port}", "Connection": "close", **(headers or {})}
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body or method == "POST":
            head["Content-Length"] = str(len(body))
        data = raw if raw is not None else (f"{method} {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode() + body
        reply = b""
        with trio.fail_after(10):  # a server that keeps the connection fails here, not at the test limit
            reply = await self._exchange(data)
        top, _, content = reply.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers_seen = [(k.lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        for name, value in headers_seen:
            if name == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, val = cookie.partition("=")
                if val:
                    self.cookies[key] = val
                else:
                    self.cookies.pop(key, None)
        return Reply(int(lines[0].split()[1]), headers_seen, content)

    async def _exchange(self, data: bytes) -> bytes:
        reply = b""
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        if self.tls is not None:
            stream = trio.SSLStream(stream, self.tls, server_hostname="127.0.0.1")
        async with stream:
            await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                reply += chunk
        return reply

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)

    async def post(self, path: str, form: dict | None = None, headers: dict | None = None,
                   *, origin: bool = True) -> Reply:
        head = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if origin:
            head["Origin"] = self.origin
        return await self.request("POST", path, urlencode(form or {}).encode(), head)

    async def login(self, user: str, password: str) -> Reply:
        return await self.post(self.base + "login", {"user": user, "password": password})

    async def csrf(self) -> str:
        page = await self.get(self.base)
        match = re.search(r'data-csrf="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)

    async def act(self, action: str, csrf: str | None, ioc: str) -> Reply:
        return await self.post(f"{self.base}api/ioc/{quote(ioc, safe='')}/{action}",
                               headers={"X-CSRF-Token": csrf} if csrf else {})

    def socket(self, path: str, origin: str | None = None):
        headers = [(b"origin", (origin or self.origin).encode())]
        if self.cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        return open_websocket("127.0.0.1", self.port, path, use_ssl=False, extra_headers=headers)

    def console(self, ioc: str, origin: str | None = None, *, spy: bool = False):
        return self.socket(f"{self.base}ws/ioc/{quote(ioc, safe='')}/console" + ("?spy=1" if spy else ""), origin)

    async def handshake(self, path: str, origin: str | None = None) -> int:
        """The status a WebSocket handshake on ``path`` gets (trio-websocket leaks a refused one's socket)."""
        reply = await self.request("GET", path, headers={
            "Origin": origin or self.origin, "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA=="})
        return reply.status


async def read_until(ws, needle: bytes, *, timeout: float = 10) -> bytes:
    seen = b""
    with trio.fail_after(timeout):
        while needle not in seen:
            message = await ws.get_message()
            if isinstance(message, bytes):
                seen += message
    return seen


async def attach(ws) -> bytes:
    """Read the replay up to its end marker, then say ready, as the page does."""
    replay = b""
    with trio.fail_after(10):
        while (message := await ws.get_message()) != '{"replayed": true}':
            replay += message
    await ws.send_message('{"ready": true}')
    return replay
