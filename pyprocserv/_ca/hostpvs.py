"""The host's own PVs in host mode: ``run --pv-prefix HOST:`` and ``run --manager-pvs PREFIX``.

``HEARTBEAT``, ``NPROCS``, ``NRUNNING``, ``SUMMARY`` (one line per instance) and ``ALL``, a
command for every instance marked ``autostart``: Stop, Run or Restart, as the supervisor IOC
manager's ``MAN:all``. A put with completion returns when every one of them got there.

With ``--manager-pvs PREFIX``, the supervisor IOC manager's names (jdmax/MEOP_PyIOC), so its
screens and scripts work unchanged:

* ``PREFIX:MAN:{ioc}_control``: ENUM Stop/Run/Reset (0/1/2), command and readback in one PV as
  that manager has it: a put acts and completes once the instance got there (Stop: auto restart
  OFF, kill; Run: the configured restart mode, start; Reset: a new child now); the PV then
  reads Run while the child runs and Stop (MINOR alarm) while it does not.
* ``PREFIX:MAN:{ioc}_hb``: seconds since the instance's last sign of life, 999 while its child
  is not running (MAJOR alarm). The sign of life is the value of the instance's ``time_pv`` (a PV
  the child publishes, epoch seconds, as that manager's ``PREFIX:MAN:{ioc}_time``) when the
  configuration names one, else the child's last console output (or its start).
* ``PREFIX:MAN:all``: Stop/Run/Reset for every instance marked ``autostart``.

Rules:
1. These PVs see an instance's server only as a :class:`Root` (an extra, ``_shell.extras``),
   and host mode only as a :class:`HostView`: this layer never imports the programs.
2. Run undoes Stop: the instance's configured restart mode (ON unless its options say
   ``--noautorestart`` or ``--oneshot``) comes back, then the child starts. Stop turns auto
   restart OFF (procServControl's STOP), so a Run that left it OFF would leave a crashed IOC down.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import trio
from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty

from .pvs import REPORT_PERIOD, GuardedEnum, WritePolicy, _update, report_refusals
from .._core import messages
from .._core.reports import ReportLimiter

if TYPE_CHECKING:
    from .._shell.extras import Root

ALL_TIMEOUT = 60.0
CONTROL_STATES = ["Stop", "Run", "Reset"]  # the supervisor IOC manager's 0, 1, 2
NOT_RUNNING_HB = 999  # that manager's _hb while the process is not running
HB_PERIOD = 1.0


class Instance(Protocol):
    """One host-mode instance as the host's PVs see it: its server, None while it is down."""

    @property
    def server(self) -> Root | None: ...


class HostView(Protocol):
    """What the host's PVs need of host mode (``_apps.host.Host`` is one)."""

    @property
    def managed(self) -> Mapping[str, Instance]: ...

    @property
    def changed(self) -> trio.lowlevel.ParkingLot: ...  # unparked on every change of any instance

    @property
    def config_problem(self) -> str | None: ...  # why the last reload was not applied

    def autostart_servers(self) -> Sequence[Root]: ...

    def announce(self, text: str) -> None: ...


class _HostGroup(PVGroup):
    """A group of the host's own PVs: its commands act on the host's instances."""

    def __init__(self, host: HostView, prefix: str, policy: WritePolicy) -> None:
        super().__init__(prefix=prefix)
        self.host = host
        self.policy = policy
        self.refusals = ReportLimiter(REPORT_PERIOD)

    def say(self, text: str) -> None:
        self.host.announce(text)


class HostPVs(_HostGroup):
    HEARTBEAT = pvproperty(value=0, dtype=int, read_only=True, doc="Counts seconds")
    NPROCS = pvproperty(value=0, dtype=int, read_only=True, doc="Instances")
    NRUNNING = pvproperty(value=0, dtype=int, read_only=True, doc="Instances whose child runs")
    SUMMARY = pvproperty(value="", dtype=str, max_length=16000, read_only=True,
                         max_subscription_backlog=10,
                         doc="name state pid, one line per instance")
    ALL = pvproperty(value="Run", dtype=GuardedEnum, enum_strings=["Stop", "Run", "Restart"],
                     doc="Stop, run or restart every autostart instance")

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
        servers = self.host.autostart_servers()
        self.say(messages.ca_put_all(instance.pvname, value, len(servers)))
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


class ManagerAllPVs(_HostGroup):
    """``PREFIX:MAN:all``: Stop, Run or Reset every autostart instance (the manager's ``all``)."""

    all_ = pvproperty(value="Run", dtype=GuardedEnum, enum_strings=CONTROL_STATES, name="all",
                     doc="Control all IOCs with autostart")

    def __init__(self, host: HostView, prefix: str, policy: WritePolicy) -> None:
        super().__init__(host, f"{prefix}:MAN:", policy)

    async def follow(self) -> None:
        while True:
            report_refusals(self)
            await trio.sleep(HB_PERIOD)

    @all_.putter
    async def all_(self, instance, value):  # type: ignore[no-untyped-def]
        servers = self.host.autostart_servers()
        self.say(messages.ca_put_all(instance.pvname, value, len(servers)))
        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(control, server, value, self.host.changed)
        return value


class ManagerPVs(PVGroup):
    """One instance's ``PREFIX:MAN:{ioc}_control`` and ``_hb`` (see the module's docstring)."""

    # Each its own alarm: caproto's default alarm group is one alarm shared by the group's PVs.
    control = pvproperty(value="Stop", dtype=GuardedEnum, enum_strings=CONTROL_STATES, name="_control",
                         alarm_group="control", doc="Control (0=Stop, 1=Run, 2=Reset)")
    hb = pvproperty(value=NOT_RUNNING_HB, dtype=ChannelType.LONG, read_only=True, name="_hb",
                    alarm_group="hb", doc="Seconds since the last sign of life")

    def __init__(self, server: Root, prefix: str, name: str, policy: WritePolicy,
                 time_pv: str | None = None) -> None:
        super().__init__(prefix=f"{prefix}:MAN:{name}")
        self.server = server
        self.policy = policy
        self.time_pv = time_pv
        self.refusals = ReportLimiter(REPORT_PERIOD)
        self.alive_at: float | None = None  # wall clock of the last sign of life
        self._busy = False  # a put is acting: the readback waits for its result
        server.add_output_listener(self._output)

    def close(self) -> None:
        self.server.remove_output_listener(self._output)

    def say(self, text: str) -> None:
        self.server.announce(text)

    def _output(self, data: bytes) -> None:
        if self.time_pv is None:
            self.alive_at = time.time()

    def _time_reading(self, reading) -> None:  # type: ignore[no-untyped-def]
        if reading.connected:
            try:
                self.alive_at = float(reading.value)
            except ValueError:
                pass  # not a time: the age goes on growing, as for a silent child

    def heartbeat(self, now: float) -> int:
        """The age of the last sign of life; 999 while no child runs."""
        status = self.server.status
        if not status.running:
            return NOT_RUNNING_HB
        since = self.alive_at
        if since is None or (self.time_pv is None and since < (status.child_started_at or 0)):
            since = status.child_started_at or now  # no sign of life yet: the child's start
        return max(0, int(now - since))

    async def follow(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.time_pv:
                from .camonitor import monitor

                nursery.start_soon(monitor, self.time_pv, self._time_reading)
            nursery.start_soon(self._follow_status)
            while True:
                hb = self.heartbeat(time.time())
                await _update(self.hb, hb, severity=AlarmSeverity.MAJOR_ALARM if hb == NOT_RUNNING_HB
                              else AlarmSeverity.NO_ALARM)
                report_refusals(self)
                await trio.sleep(HB_PERIOD)

    async def _follow_status(self) -> None:
        generation = None
        while True:
            if not self._busy:
                await self._show_state()
            generation = await self.server.wait_status_change(generation)

    def _state(self) -> tuple[str, AlarmSeverity]:
        """The readback: Run while the child runs, else Stop (MINOR, as that manager's mbbo has it)."""
        if self.server.status.running:
            return "Run", AlarmSeverity.NO_ALARM
        return "Stop", AlarmSeverity.MINOR_ALARM

    async def _show_state(self) -> None:
        state, severity = self._state()
        if self.control.value != state or self.control.alarm.severity != severity:
            # a readback, not a command: verify_value=False keeps the putter out of it
            await self.control.write(state, verify_value=False, severity=severity,
                                     status=AlarmStatus.STATE if severity else AlarmStatus.NO_ALARM)

    @control.putter
    async def control(self, instance, value):  # type: ignore[no-untyped-def]
        self.say(messages.ca_put(instance.pvname, value))
        self._busy = True
        try:
            changed = trio.lowlevel.ParkingLot()

            async def relay() -> None:  # status changes wake the wait in control()
                generation = None
                while True:
                    generation = await self.server.wait_status_change(generation)
                    changed.unpark_all()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay)
                await control(self.server, value, changed)
                nursery.cancel_scope.cancel()
        finally:
            self._busy = False
        state, severity = self._state()
        await self.control.alarm.write(severity=severity,  # caproto then stores the value returned
                                       status=AlarmStatus.STATE if severity else AlarmStatus.NO_ALARM)
        return state


async def control(server: Root, value: str, changed: trio.lowlevel.ParkingLot) -> None:
    """Stop, Run or Reset one instance; return once it got there (or after ALL_TIMEOUT)."""
    before = server.status.start_count
    if value == "Reset":  # the manager's stop, then start: a new child, in the configured mode
        server.set_restart_mode(server.config.restart_mode)
        server.respawn()
    else:
        command(server, value)

    def done() -> bool:
        status = server.status
        if value == "Stop":
            return not status.running
        return status.running and (value == "Run" or status.start_count > before)

    with trio.move_on_after(ALL_TIMEOUT):
        while not done():
            await changed.park()


def run(server: Root) -> None:
    """Run: back to the configured restart mode (Stop turned it OFF), and start the child."""
    server.set_restart_mode(server.config.restart_mode)
    server.start()


def command(server: Root, value: str) -> None:
    """Stop, Run or Restart one instance (``ALL`` and ``MAN:{ioc}_control``)."""
    {"Stop": server.stop, "Run": lambda: run(server), "Restart": server.restart}[value]()


__all__ = ["HostPVs", "HostView", "ManagerAllPVs", "ManagerPVs"]
