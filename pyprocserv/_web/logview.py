"""The browser console's log: its tail, its download and a live follow, with the file I/O in threads.

``follow(websocket, path)`` serves one WebSocket that sends the log's new bytes as they are
written; :func:`tail` and :func:`in_thread` are what the log page and the download read with.
Who may read the log is the caller's business (the app checks the login, the right and the
Origin before it hands the socket over).

Rules:
1. No file I/O on the event loop: opening, stat and reading run in worker threads, at most
   :data:`LOG_THREADS` at once in a trio run, apart from the threads the rest of the server uses
   (spawning a child, standard output). A log on a stuck disk or NFS server holds those threads
   and the requests waiting for them, never the loop, so every console goes on.
2. A follower reads what is new (``_shell.logfile.LogReader``: across rotations) and sends it
   as binary messages of at most :data:`CHUNK` bytes, the log's bytes as they are; it reads
   again at once after something, after :data:`POLL` seconds after nothing.
3. Bounded: a follower holds one chunk, the one being sent, and reads the next only once that is
   sent, so a browser that does not read holds up no more than that. A follower more than
   :data:`LAG` bytes behind the file's end skips to its last CHUNK bytes and says so first.
4. Text messages are JSON events: ``{"skipped": N}`` (N bytes not sent, rule 3; ``null``: an
   unknown amount, whole files rotated out before the follower read them, ``LogReader.lost``),
   ``{"file": "new"}`` (a rotation or a truncation: what follows is a new file from its start),
   ``{"error": TEXT}`` before a close with code 1011 when the log cannot be read.
5. It starts at ``?from=N``, a byte offset (the end of the tail the page shows), else at the
   end of the file now; an offset beyond the end (the file was rotated or truncated since) means
   its start. Anything but decimal digits is refused by a close with code 1008 and a reason.
6. What the browser sends is read and dropped; its close, or a failed send, ends the follow.
   So does ``gone`` returning (the log's IOC has left the fleet, say by a reload): a close with
   1001 (going away), as that IOC's consoles get.
"""

from __future__ import annotations

import json
import threading
from typing import AsyncIterator, Awaitable, Callable, Generator, TypeVar, final

import trio
from starlette.websockets import WebSocket

from .._shell.logfile import LogReader, last_bytes
from .._shell.session import MessageTransport
from .console import WebSocketTransport

LOG_THREADS = 8  # worker threads reading logs at once (rule 1)
POLL = 0.5  # seconds between looks at a log with nothing new (rule 2)
CHUNK = 64 << 10  # bytes of the log in one message, and all a follower holds (rule 3)
LAG = 1 << 20  # bytes a follower may be behind before it skips (rule 3)
MAX_OFFSET_DIGITS = 20  # a ?from= longer than any file offset is refused
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

T = TypeVar("T")
Keep = Callable[[MessageTransport, Callable[[MessageTransport], Awaitable[None]]], Awaitable[object]]
_THREADS: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("pyprocserv_log_threads")


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in one of the log's worker threads (rule 1). Cancelled, it leaves the thread
    to finish alone: a stuck read holds its thread, not the request."""
    try:
        limiter = _THREADS.get()
    except LookupError:
        limiter = trio.CapacityLimiter(LOG_THREADS)
        _THREADS.set(limiter)
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter, abandon_on_cancel=True)


async def tail(path: str, limit: int) -> tuple[bytes, int]:
    """The last ``limit`` bytes of the log and the offset they end at; ``OSError`` if unreadable."""
    return await in_thread(last_bytes, path, limit)


async def chunks_in_thread(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """The chunks of a blocking generator (a download), each read in a log thread; closed in a
    thread too, after a read that a cancelled request left running (the lock orders them)."""
    lock, closed = threading.Lock(), []

    def next_chunk() -> bytes | None:
        with lock:
            return None if closed else next(chunks, None)

    def close() -> None:
        with lock:
            closed.append(True)
            chunks.close()

    try:
        while (chunk := await in_thread(next_chunk)) is not None:
            yield chunk
    finally:
        trio.lowlevel.start_thread_soon(close, lambda _: None)


def start_offset(text: str | None) -> int | None:
    """The ``?from=`` offset: None when absent; ``ValueError`` naming it unless decimal digits."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_OFFSET_DIGITS):
        raise ValueError(f"from={text[:40]!r}: give the byte offset to follow the log from, in decimal digits")
    return int(text)


async def follow(websocket: WebSocket, path: str, *, keep: Keep | None = None,
                 gone: Callable[[], Awaitable[object]] | None = None) -> None:
    """Send the log at ``path`` to ``websocket`` as it is written until the browser leaves (rules
    2-6). ``keep(transport, serve)``, if given, runs ``serve`` on ``transport`` or a wrapper of it
    (the app's: only while the visitor keeps the right to read the log); ``gone()``, if given,
    returns when the log's IOC goes away (rule 6)."""
    try:
        start = start_offset(websocket.query_params.get("from"))
    except ValueError as exc:
        await websocket.accept()
        await websocket.close(POLICY_VIOLATION, reason=str(exc)[:120])
        return
    await websocket.accept()
    transport = WebSocketTransport(websocket)
    reader = _Reader(LogReader(path, start))  # opens nothing yet: its first read does, in a thread
    going_away = False

    async def until_gone(done: trio.CancelScope) -> None:
        nonlocal going_away
        if gone is not None:
            await gone()
            going_away = True
            done.cancel()

    async def serve(messages: MessageTransport) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_gone, nursery.cancel_scope)
            nursery.start_soon(_send_new, websocket, messages, reader, nursery.cancel_scope)
            try:
                while True:
                    await messages.receive_message()  # rule 6: dropped
            except trio.BrokenResourceError:
                nursery.cancel_scope.cancel()

    try:
        await (serve(transport) if keep is None else keep(transport, serve))
    finally:
        trio.lowlevel.start_thread_soon(reader.close, lambda _: None)  # a stuck read may still hold it
        await transport.aclose(going_away=going_away)  # cancelled (the server stops): its own stop closes it


async def _send_new(websocket: WebSocket, transport: MessageTransport, reader: _Reader,
                    done: trio.CancelScope) -> None:
    try:
        while True:
            try:
                skipped, new_file, data = await in_thread(reader.next_chunk)
            except OSError as exc:
                await transport.send_message(json.dumps({"error": f"cannot read the log: {exc.strerror or exc}"}))
                try:
                    await websocket.close(INTERNAL_ERROR)
                except Exception:
                    pass  # the browser left first
                break
            if skipped:
                await transport.send_message(json.dumps({"skipped": None if skipped < 0 else skipped}))
            if new_file:
                await transport.send_message('{"file": "new"}')
            if data:
                await transport.send_message(data)
            else:
                await trio.sleep(POLL)
    except trio.BrokenResourceError:
        pass  # the browser left
    done.cancel()


@final
class _Reader:
    """A follower's ``LogReader``, used in one thread at a time: a read that a cancelled follow
    left running, and the close, may meet; the lock orders them and nothing opens after it."""

    def __init__(self, reader: LogReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self._closed = False

    def next_chunk(self) -> tuple[int, bool, bytes]:
        """In a thread: the bytes skipped (rule 3; -1: an unknown amount, rule 4), whether a new
        file began, and the next chunk."""
        with self._lock:
            if self._closed:
                return 0, False, b""
            reader = self._reader
            skipped = 0
            behind = reader.unread()
            if behind > LAG:
                skipped = behind - CHUNK
                reader.skip(skipped)
            files, lost = reader.files, reader.lost
            data = reader.read(CHUNK)
            if reader.lost > lost:
                skipped = -1
            return skipped, reader.files > files and files > 0, data

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reader.close()
