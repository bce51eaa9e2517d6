"""The host's own PVs in host mode (``pyprocserv-manage run --pv-prefix HOST:``).

``HEARTBEAT``, ``NPROCS``, ``NRUNNING``, ``SUMMARY`` (one line per instance) and ``ALL``, a
command for every instance marked ``autostart``: Stop, Run or Restart, as the supervisor IOC
manager's ``MAN:all``. A put with completion returns when every one of them got there.

Rules:
1. These PVs see an instance's server only as a :class:`Root` (an extra, ``_extras``).
2. Run undoes Stop: the instance's configured restart mode (ON unless its options say
   ``--noautorestart`` or ``--oneshot``) comes back, then the child starts. Stop turns auto
   restart OFF (procServControl's STOP), so a Run that left it OFF would leave a crashed IOC down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from caproto.server import PVGroup, pvproperty

from ._pvs import REPORT_PERIOD, GuardedEnum, WritePolicy, _update, report_refusals
from ._reports import ReportLimiter

if TYPE_CHECKING:
    from ._extras import Root
    from ._host import Host

ALL_TIMEOUT = 60.0


class HostPVs(PVGroup):
    HEARTBEAT = pvproperty(value=0, dtype=int, read_only=True, doc="Counts seconds")
    NPROCS = pvproperty(value=0, dtype=int, read_only=True, doc="Instances")
    NRUNNING = pvproperty(value=0, dtype=int, read_only=True, doc="Instances whose child runs")
    SUMMARY = pvproperty(value="", dtype=str, max_length=16000, read_only=True,
                         max_subscription_backlog=10,
                         doc="name state pid, one line per instance")
    ALL = pvproperty(value="Run", dtype=GuardedEnum, enum_strings=["Stop", "Run", "Restart"],
                     doc="Stop, run or restart every autostart instance")

    def __init__(self, host: Host, prefix: str, policy: WritePolicy) -> None:
        super().__init__(prefix=prefix)
        self.host = host
        self.policy = policy
        self.refusals = ReportLimiter(REPORT_PERIOD)

    def say(self, text: str) -> None:
        self.host.announce(text)

    async def follow(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._beat)
            while True:
                await self.refresh()
                await self.host.changed.park()

    async def _beat(self) -> None:
        beat = 0
        while True:
            beat = (beat + 1) % 2147483647
            await self.HEARTBEAT.write(beat)
            report_refusals(self)
            await trio.sleep(1.0)

    async def refresh(self) -> None:
        lines = []
        running = 0
        for name, managed in sorted(self.host.managed.items()):
            server = managed.server
            if server is None:
                lines.append(f"{name} Failed -")
                continue
            status = server.status
            running += status.running
            lines.append(f"{name} {'Running' if status.running else 'Shutdown'} {status.pid or '-'}")
        if self.host.config_problem:
            lines.append(f"# {self.host.config_problem}")
        await _update(self.NPROCS, len(self.host.managed))
        await _update(self.NRUNNING, running)
        await _update(self.SUMMARY, "\n".join(lines))

    @ALL.putter
    async def ALL(self, instance, value):  # type: ignore[no-untyped-def]
        servers: list[Root] = [m.server for m in self.host.managed.values() if m.server is not None and m.instance.autostart]
        self.say(f"CA put {instance.pvname}={value}: {len(servers)} autostart instance(s)")
        before = {id(s): s.status.start_count for s in servers}
        for server in servers:
            command(server, value)

        def done() -> bool:
            if value == "Stop":
                return all(not s.status.running for s in servers)
            if value == "Run":
                return all(s.status.running for s in servers)
            return all(s.status.running and s.status.start_count > before[id(s)] for s in servers)

        with trio.move_on_after(ALL_TIMEOUT):
            while not done():
                await self.host.changed.park()
        return value


def run(server: Root) -> None:
    """Run: back to the configured restart mode (Stop turned it OFF), and start the child."""
    server.set_restart_mode(server.config.restart_mode)
    server.start()


def command(server: Root, value: str) -> None:
    """Stop, Run or Restart one instance (``ALL`` and ``MAN:{ioc}_control``)."""
    {"Stop": server.stop, "Run": lambda: run(server), "Restart": server.restart}[value]()


__all__ = ["HostPVs"]
