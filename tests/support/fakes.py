"""A child without a process and its spawner: the fake-server tests run on these (autojump_clock)."""

from __future__ import annotations

import trio

from pyprocserv import Config, ProcessServer


class FakeChild:
    """A child without a process: output is fed by the test, input is recorded."""

    _next_pid = 4242

    def __init__(self, argv: tuple[str, ...] = ("fake",), exit_on_signal: bool = True) -> None:
        FakeChild._next_pid += 1
        self.pid = FakeChild._next_pid
        self.argv = argv
        self.exit_on_signal = exit_on_signal
        self.input = bytearray()
        self.signals: list[int] = []  # while it lived; the group kill after its exit is not here
        self.window_sizes: list[tuple[int, int]] = []
        self.reading = True  # False: write() blocks like a child that never reads
        self.closed = False
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](1000)
        self._exited = trio.Event()
        self._returncode: int | None = None
        self._readable = trio.Event()
        self._readable.set()

    # test side
    def say(self, data: bytes) -> None:
        self._out_send.send_nowait(data)

    def exit(self, returncode: int) -> None:
        if self._returncode is None:
            self._returncode = returncode
            self._exited.set()
            self._out_send.close()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    # Child protocol
    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self._out_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""

    async def write(self, data: bytes) -> None:
        while not self.reading:
            await trio.sleep(3600)
        await trio.lowlevel.checkpoint()
        self.input += data

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._returncode is not None
        return self._returncode

    def signal_group(self, sig: int) -> None:
        if self.exited:
            return
        self.signals.append(sig)
        if self.exit_on_signal or sig == 9:
            self.exit(-sig)

    def set_window_size(self, rows: int, columns: int) -> None:
        self.window_sizes.append((rows, columns))

    def output_pending(self) -> bool:
        return False

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class FakeSpawner:
    """Hands out FakeChild objects and records every start (with its trio time)."""

    def __init__(self, **child_kwargs: object) -> None:
        self.children: list[FakeChild] = []
        self.start_times: list[float] = []
        self.calls: list[dict] = []
        self._kwargs = child_kwargs
        self._spawned = trio.lowlevel.ParkingLot()

    async def __call__(self, argv: tuple[str, ...], **kwargs: object) -> FakeChild:
        await trio.lowlevel.checkpoint()
        child = FakeChild(argv, **self._kwargs)  # type: ignore[arg-type]
        self.children.append(child)
        self.start_times.append(trio.current_time())
        self.calls.append(kwargs)
        self._spawned.unpark_all()
        return child

    async def wait_for(self, count: int) -> FakeChild:
        while len(self.children) < count:
            await self._spawned.park()
        return self.children[count - 1]


def fake_server(spawner: FakeSpawner, **overrides: object) -> ProcessServer:
    """A server whose children are ``spawner``'s: /bin/cat named mychild, procServ's 15 s holdoff,
    unless ``overrides`` (Config fields) say otherwise."""
    options: dict[str, object] = dict(command=("/bin/cat",), name="mychild", holdoff=15)
    options.update(overrides)
    return ProcessServer(Config(**options), spawn=spawner)  # type: ignore[arg-type]
