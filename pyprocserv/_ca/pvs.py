"""The PV status channel: procServControl's records over Channel Access (caproto's trio server).

Rules:
1. Imported only when PVs are enabled (``--pv-prefix``): a server without PVs never imports
   caproto.
2. Names, types and enum strings are DLS procServControl's (``IOCNAME``, ``STATUS``
   Running/Shutdown, ``AUTORESTART`` Off/On, the ``START``/``STOP``/``RESTART``/``TOGGLE``
   busy records, ``IOCOUT``, ...), so existing screens, IBEX's BlockServer and
   odinprocservcontrol work unchanged. Extras follow iocStats' names.
3. Every value comes from the server's one status model (:class:`~pyprocserv.Status`) and the
   console output the console also shows; the PVs keep no state of their own.
4. Commands behave as procServControl's do through the console (STOP: auto restart OFF, then
   kill; RESTART: ON, then kill or start), and a put with completion returns when the action
   has happened (or after a timeout, with a MINOR alarm on the command PV).
5. Each PV is a record of its own: its own alarm (STATUS Shutdown is a MAJOR STATE alarm, none
   under ``-w``, as procServControl's MANUALSTART), posted to monitors only when its value or
   alarm changed, and the fields clients read or check (:data:`FIELDS`: ``.DESC``, ``.RTYP``,
   ``.NAME``, ``.SEVR``, ``.STAT``, ``.DISP``), read-only, taken from the record at each read,
   made on first use and dropped with the record. Not caproto's record fields: it builds some
   60 field PVs per record, about 120 KiB each time, which host mode would pay 25 times per
   instance.
6. Writes only from the hosts allowed (default: this host, 127.0.0.1 and ::1). A refused client
   is told it has no write access (libca refuses locally); a forced write fails; both, and every
   accepted command, leave an ``@@@`` line on the console and in the log; refusals at most
   once a minute per peer, with a count.
7. Nothing a CA peer sends ends more than its own circuit: each circuit runs in its own
   nursery, and whatever caproto raises there closes that circuit (one line on stderr, at most
   once a minute per peer). A message announcing more than :data:`MAX_PAYLOAD` is refused
   before it is buffered. Each caproto defect this works around is named where it is fixed
   (and in the README); the caproto versions tested are pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import logging
import operator
import socket
import time
from typing import TYPE_CHECKING, Callable

import caproto as ca
import caproto.trio.server as ca_trio
import trio
from caproto import (AccessRights, AlarmSeverity, AlarmStatus, CaprotoValueError, ChannelAlarm, ChannelByte,
                     ChannelEnum, ChannelString, ChannelType)
from caproto._data import Forbidden
from caproto.server import PVGroup, PvpropertyEnum, pvproperty
from caproto.server.common import DisconnectedCircuit
from caproto.trio.util import open_memory_channel

from .._core import messages
from .._core.addresses import peer_ip
from .._core.log import History
from .._core.policy import RestartMode
from .._core.reports import ReportLimiter
from .._core.watchdog import WatchState

if TYPE_CHECKING:
    from .._shell.extras import Root

IOCOUT_LINES = 20
IOCOUT_SIZE = 5120  # DLS procServControl's NELM
IOCOUT_PERIOD = 0.5  # at most 2 updates a second
STRING_MAX = 39  # DBR_STRING holds 40 bytes with the NUL
STATUS_STRINGS = ["Running", "Shutdown", "procServ Stopped", "Invalid portname"]  # DLS's indexes
MODE_STRINGS = {RestartMode.OFF: "Off", RestartMode.ON: "On", RestartMode.ONESHOT: "Oneshot"}

# Bounds on what one CA peer can make us hold (caproto has none of them).
MAX_PAYLOAD = 16384  # EPICS_CA_MAX_ARRAY_BYTES' default; every PV here fits (IOCOUT 5120, SUMMARY 16000)
COMMAND_BACKLOG = 256  # commands read ahead of the one being handled (caproto: 10000)
PUTS_IN_FLIGHT = 16  # puts handled at once per circuit (caproto: one task per put, unbounded)
REPORT_PERIOD = 60.0  # refused puts and failed circuits: at most one report a minute per peer

# The peer address of the Channel Access request being handled (set per circuit command).
_PEER: contextvars.ContextVar[str | None] = contextvars.ContextVar("pyprocserv_ca_peer", default=None)

log = logging.getLogger(__name__)

for _name in ("caproto.circ", "caproto.ctx", "caproto.trio.server"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)  # refused writes and resets are ours to report


class WritePolicy:
    """Which hosts may write: addresses, networks (``10.0.0.0/8``), names, or ``*`` for all."""

    def __init__(self, hosts: tuple[str, ...] = ("localhost",)) -> None:
        self.everyone = "*" in hosts
        self.networks: list[ipaddress._BaseNetwork] = []
        for host in hosts:
            if host == "*":
                continue
            if host == "localhost":
                self.networks += [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")]
                continue
            try:
                self.networks.append(ipaddress.ip_network(host, strict=False))
            except ValueError:
                try:
                    infos = socket.getaddrinfo(host, None)
                except socket.gaierror as exc:
                    raise ValueError(f"--pv-write-hosts: unknown host '{host}' ({exc.strerror})") from None
                for info in infos:
                    self.networks.append(ipaddress.ip_network(info[4][0]))

    def allows(self, address: str | None) -> bool:
        if self.everyone:
            return True
        if address is None:
            return False
        ip = peer_ip(address)
        if ip is None:
            return False
        return any(ip in net for net in self.networks if net.version == ip.version)


class OversizedMessage(ca.RemoteProtocolError):
    """A CA message announcing more payload than any PV here could need."""


class _BoundedProtocol(ca.VirtualCircuit):
    """caproto's protocol core, refusing a message by its header (caproto buffers whatever a
    header announces: 768 MiB in 3.7 s for a 1 GiB announcement, from one unauthenticated peer)."""

    def recv(self, *buffers):  # type: ignore[no-untyped-def]
        commands, needed = super().recv(*buffers)  # at most 4096 new bytes: the server reads no more
        announced = len(self._data) + needed  # the whole pending message, header included
        if announced > MAX_PAYLOAD + 24:  # 24: the extended header
            raise OversizedMessage(f"a message of {announced} bytes (at most {MAX_PAYLOAD} + header)")
        return commands, needed


class _MonitorUpdates:
    """A queue of monitor updates whose ``put`` never waits (and so never yields).

    caproto's trio queues wait for room, and every wait is a point where other tasks run:
    * a circuit's queue is filled inside the one task that serves every circuit's monitors,
      so one client that stops reading would freeze every monitor of every client;
    * the context's queue is filled by ``ChannelData.publish`` while it iterates its own dict
      of subscribers, so a client subscribing meanwhile ends the writer ("dictionary changed
      size during iteration"), and with it the PVs' and the server's tasks.
    Full, a circuit's queue raises ``trio.WouldBlock`` (the circuit's ``QueueFull``), and caproto
    drops that circuit's backlog through :meth:`clear`; the context's queue, drained at CPU speed
    by one task, drops the update (``drop_when_full``).
    """

    def __init__(self, channel, *, drop_when_full: bool = False) -> None:  # type: ignore[no-untyped-def]
        self._send, self._receive = channel
        self._drop_when_full = drop_when_full

    async def put(self, update) -> None:  # type: ignore[no-untyped-def]
        try:
            self._send.send_nowait(update)
        except trio.WouldBlock:
            if not self._drop_when_full:
                raise

    def clear(self) -> None:
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            while True:
                self._receive.receive_nowait()


class _Circuit(ca_trio.VirtualCircuit):
    """One client's circuit: bounded queues, and the peer address for access rights.

    Its tasks run in its own nursery (``_Context.tcp_handler`` sets ``nursery``); when any of
    them ends, the circuit ends.
    """

    def __init__(self, circuit, client, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(circuit, client, context)
        # caproto closes the socket from a helper thread per circuit; a trio socket closes
        # synchronously, and every close comes from the run's own thread.
        client.close = functools.partial(_close_client, client)
        self.command_chan = open_memory_channel(COMMAND_BACKLOG)
        self.command_queue = self.command_chan.send
        self.subscription_queue = _MonitorUpdates(self.subscription_chan)
        self._puts = trio.Semaphore(PUTS_IN_FLIGHT)

    async def _process_command(self, command):  # type: ignore[no-untyped-def]
        token = _PEER.set(self.circuit.address[0] if self.circuit.address else None)
        try:
            return await super()._process_command(command)
        finally:
            _PEER.reset(token)

    async def command_queue_loop(self, task_status):  # type: ignore[no-untyped-def]
        # caproto's loop may end quietly (LoopExit) and leave the circuit reading commands
        # nobody handles: end the circuit with it.
        try:
            await super().command_queue_loop(task_status)
        finally:
            self.nursery.cancel_scope.cancel()

    async def subscription_queue_loop(self, task_status):  # type: ignore[no-untyped-def]
        try:
            await super().subscription_queue_loop(task_status)
        finally:
            self.nursery.cancel_scope.cancel()

    async def _start_write_task(self, handle_write):  # type: ignore[no-untyped-def]
        # A peer that puts and never reads the replies would pile up one task per put.
        await self._puts.acquire()

        async def put() -> None:
            try:
                await handle_write()
            finally:
                self._puts.release()

        self.nursery.start_soon(put)

    async def receive_until_closed(self) -> None:
        try:
            while True:
                await self.recv()
        except (DisconnectedCircuit, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer left, or the circuit closed its socket


def _close_client(client) -> None:  # type: ignore[no-untyped-def]
    sock = getattr(client, "_sock", None)
    if sock is not None:
        sock.close()


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class _Context(ca_trio.Context):
    CircuitClass = _Circuit

    def __init__(self, pvdb, interfaces=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(pvdb, interfaces)
        self.failures = ReportLimiter(REPORT_PERIOD)
        self.fields: dict[str, dict[str, ca.ChannelData]] = {}  # PV name -> its fields in use
        self.subscription_queue = _MonitorUpdates(self.subscription_chan, drop_when_full=True)

    async def _bind_tcp_sockets_with_consistent_port_number(self, make_socket):  # type: ignore[no-untyped-def]
        # caproto leaks the socket of a failed bind (another server has the port): close it.
        async def closing_make_socket(interface: str, port: int):  # type: ignore[no-untyped-def]
            sock = trio.socket.socket()
            try:
                await sock.bind((interface, port))
            except BaseException:
                sock.close()
                raise
            return sock

        return await super()._bind_tcp_sockets_with_consistent_port_number(closing_make_socket)

    def __getitem__(self, name: str):  # type: ignore[no-untyped-def]
        """A PV, or a field of one (``NAME.FIELD``), by the name a client searched for.

        caproto caches every ``NAME.FIELD`` it finds in ``pvdb``, where nothing removes it when
        its group goes. Fields live in :attr:`fields` instead: made on first use, at most
        ``len(FIELDS)`` per PV, dropped with their PV (:meth:`forget`).
        """
        try:
            return self.pvdb[name]
        except KeyError:
            pass
        try:
            parsed = ca.parse_record_field(name)
        except ValueError:
            raise KeyError(name) from None
        record = self.pvdb[parsed.record]
        field = parsed.field
        entry = record if field in (None, "VAL") else self._field(parsed.record, record, field)
        long_string = parsed.modifiers is not None and ca.RecordModifiers.long_string in parsed.modifiers.modifiers
        if long_string and entry.data_type not in (ChannelType.STRING, ChannelType.CHAR):
            raise KeyError(name)
        return entry

    def _field(self, name: str, record, field: str):  # type: ignore[no-untyped-def]
        fields = self.fields.setdefault(name, {})
        entry = fields.get(field)
        if entry is None or entry.record is not record:  # a group came back under the same names
            entry = fields[field] = make_field(record, name, field)
        return entry

    def forget(self, names) -> None:  # type: ignore[no-untyped-def]
        """Stop serving these PVs and their fields."""
        for name in names:
            self.pvdb.pop(name, None)
            self.fields.pop(name, None)

    async def tcp_handler(self, client, addr) -> None:  # type: ignore[no-untyped-def]
        """One circuit in a nursery of its own: whatever its peer makes caproto raise ends this
        circuit only. (caproto runs every circuit's tasks in the server's nursery, so one
        KeyError from an unknown channel id ends the server, and with it the IOC's process.)"""
        circuit = self.CircuitClass(_BoundedProtocol(ca.SERVER, addr, None), client, self)
        self.circuits.add(circuit)
        try:
            async with trio.open_nursery() as nursery:
                circuit.nursery = nursery
                await circuit.run()
                await circuit.receive_until_closed()
                nursery.cancel_scope.cancel()
        except* (DisconnectedCircuit, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer left while we answered it: nothing to report
        except* Exception as failure:
            self.report(addr[0], f"circuit closed: {_first_leaf(failure)!r}"[:200])
        finally:
            with trio.CancelScope(shield=True):
                await self._forget(circuit)

    async def _forget(self, circuit: _Circuit) -> None:
        """Drop all the context holds for a circuit that ended, however it ended."""
        self.circuits.discard(circuit)
        _close_client(circuit.client)
        with contextlib.suppress(Exception):
            await circuit._on_disconnect()  # its subscriptions, unless caproto did that already
        circuit.connected = False
        # caproto leaves an empty entry behind for every subscription spec ever used; a spec
        # includes the channel filter from the name, so a peer could grow them without end.
        for spec in [spec for spec, subs in self.subscriptions.items() if not subs]:
            del self.subscriptions[spec]

    async def _subscription_queue_iteration(self, sub_specs, metadata, values, flags, sub):  # type: ignore[no-untyped-def]
        """One monitor update to its subscribers. caproto iterates the live list of subscribers
        across awaits, and clients that subscribe or leave meanwhile end the server with
        "deque mutated during iteration": send to a copy, skipping circuits that ended."""
        subscribers = [(spec, each) for spec in sub_specs for each in tuple(self.subscriptions.get(spec, ()))] \
            if sub is None else [(sub_specs[0], sub)]
        for spec, each in subscribers:
            if not each.circuit.connected:
                continue
            try:
                await self._subscription_queue_send(spec, each, metadata=metadata, values=values, flags=flags)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # that circuit is ending
            except Exception as exc:  # one subscriber's update must not stop the others'
                self.report(each.circuit.circuit.address[0], f"monitor update failed: {exc!r}"[:200])

    async def _broadcaster_recv_datagram(self, bytes_received, address):  # type: ignore[no-untyped-def]
        try:
            await super()._broadcaster_recv_datagram(bytes_received, address)
        except Exception as exc:  # caproto catches only RemoteProtocolError; anything else ends its UDP loop
            self.report(address[0], f"search datagram dropped: {exc!r}"[:200])

    async def broadcaster_queue_loop(self, task_status):  # type: ignore[no-untyped-def]
        # caproto's loop calls the base class's iteration (``super()`` in its own class), past
        # the guard below: one search it failed on (a reply's sendto, a name lookup) ended the
        # whole CA server.
        send, receive = self.command_chan
        async with send, receive:
            task_status.started()
            async for addr, commands in receive:
                await self._broadcaster_queue_iteration(addr, commands)

    async def _broadcaster_queue_iteration(self, addr, commands):  # type: ignore[no-untyped-def]
        try:
            await super()._broadcaster_queue_iteration(addr, commands)
        except Exception as exc:
            self.report(addr[0], f"search not answered: {exc!r}"[:200])

    def report(self, peer: str, what: str) -> None:
        """One line in the log (stderr), at most once a minute per peer (a hostile peer could fill it)."""
        count = self.failures.note(peer, time.monotonic())
        if count is not None:
            since = f" ({count} times since the last report)" if count > 1 else ""
            log.warning("pyprocserv: Channel Access from %s: %s%s", peer, what, since)


class GuardedEnum(PvpropertyEnum):
    """A writable ENUM that only the allowed hosts may write (by peer address, not claimed name)."""

    def check_access(self, host: str, user: str) -> AccessRights:
        if self.group.policy.allows(_PEER.get()):
            return AccessRights.READ | AccessRights.WRITE
        return AccessRights.READ

    async def auth_write(self, hostname, username, data, data_type, metadata, *, flags=0, user_address=None):  # type: ignore[no-untyped-def]
        address = user_address[0] if user_address else None
        if not self.group.policy.allows(address):
            peer = address or hostname
            count = self.group.refusals.note(peer, time.monotonic())
            if count == 1:
                self.group.say(messages.ca_put_refused(self.pvname, peer))
            elif count:
                self.group.say(messages.ca_puts_refused(count, peer, self.pvname))
            raise Forbidden(f"{peer} may not write {self.pvname}")
        return await super().auth_write(
            hostname, username, data, data_type, metadata, flags=flags, user_address=user_address
        )

    async def write(self, value, **options):  # type: ignore[no-untyped-def]
        # Refused here, before caproto's write, which would leave a MAJOR WRITE alarm on the PV
        # that no later write clears.
        if options.get("verify_value", True) and not _is_state(self.preprocess_value(value), self.enum_strings):
            raise CaprotoValueError(f"{value!r} is not a state of {self.pvname} ({', '.join(self.enum_strings)})")
        await super().write(value, **options)

    async def verify_value(self, value):  # type: ignore[no-untyped-def]
        # caproto stores an index past the strings, and every read of the PV fails after it.
        if not _is_state(value, self.enum_strings):
            raise CaprotoValueError(f"{value!r} is not a state of {self.pvname} ({', '.join(self.enum_strings)})")
        return await super().verify_value(value)


def _is_state(value: object, strings: tuple[str, ...]) -> bool:
    if isinstance(value, str):
        return value in strings
    try:
        return 0 <= operator.index(value) < len(strings)  # type: ignore[arg-type]
    except TypeError:
        return False


def report_refusals(group: PVGroup) -> None:
    """Announce the refused puts counted but not yet reported, once their minute is over."""
    for peer, count in group.refusals.due(time.monotonic()):
        group.say(messages.ca_puts_refused_since(count, peer))


def _busy(doc: str) -> pvproperty:
    return pvproperty(value="Done", dtype=GuardedEnum, enum_strings=["Done", "Busy"], doc=doc)


def _text(value: str) -> str:
    return value[:STRING_MAX]


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else ""


class ProcessPVs(PVGroup):
    """One process server's PVs (prefix + suffix, e.g. ``CS:PS:MYIOC:STATUS``)."""

    IOCNAME = pvproperty(value="", dtype=ChannelType.STRING, read_only=True, doc="IOC Name")
    DESCRIPTION = pvproperty(value="", dtype=ChannelType.STRING, read_only=True,
                             doc="User-friendly description")
    AUTORESTART = pvproperty(value="On", dtype=ChannelType.ENUM, enum_strings=["Off", "On"],
                             read_only=True, doc="Autorestart readback")
    AUTORESTART_MODE = pvproperty(value="On", dtype=ChannelType.ENUM, enum_strings=list(MODE_STRINGS.values()),
                                  read_only=True, doc="Auto restart mode")
    SHOWOUT = pvproperty(value="Yes", dtype=GuardedEnum, enum_strings=["No", "Yes"],
                         doc="Show IOC output")
    STATUS = pvproperty(value="Shutdown", dtype=ChannelType.ENUM, enum_strings=STATUS_STRINGS,
                        read_only=True, doc="Process status")
    TOGGLE = _busy("Autorestart toggle")
    START = _busy("Start IOC")
    STOP = _busy("Stop IOC")
    RESTART = _busy("Restart IOC")
    KILL = _busy("Kill IOC (auto restart unchanged)")
    IOCOUT = pvproperty(value="", dtype=str, max_length=IOCOUT_SIZE, read_only=True,
                        max_subscription_backlog=10,
                        doc="Last 20 lines of IOC output")
    PORT = pvproperty(value="", dtype=ChannelType.STRING, read_only=True, doc="Control endpoint")
    PID = pvproperty(value=0, dtype=int, read_only=True, doc="Child PID, 0 when none")
    START_CNT = pvproperty(value=0, dtype=int, read_only=True, doc="Child starts")
    RESTART_CNT = pvproperty(value=0, dtype=int, read_only=True, doc="Child starts after the first")
    START_TIME = pvproperty(value="", dtype=ChannelType.STRING, read_only=True,
                            doc="Last child start")
    UPTIME = pvproperty(value=0, dtype=int, read_only=True, doc="Seconds the child has run")
    EXIT_CODE = pvproperty(value=0, dtype=int, read_only=True,
                           doc="Last exit: status, or -N for signal N")
    EXIT_TIME = pvproperty(value="", dtype=ChannelType.STRING, read_only=True,
                           doc="Time of the last exit")
    CLIENTS = pvproperty(value=0, dtype=int, read_only=True, doc="Control connections")
    LOGGERS = pvproperty(value=0, dtype=int, read_only=True, doc="Log connections")
    HEARTBEAT = pvproperty(value=0, dtype=int, read_only=True, doc="Counts seconds")
    WD_STATE = pvproperty(value="Off", dtype=ChannelType.ENUM, enum_strings=["Off"] + [s.value for s in WatchState],
                          read_only=True, doc="PV watchdog state")
    WD_COUNT = pvproperty(value=0, dtype=int, read_only=True, doc="Watchdog restarts")

    def __init__(self, server: Root, prefix: str, policy: WritePolicy, description: str = "") -> None:
        super().__init__(prefix=prefix)
        self.server = server
        self.policy = policy
        self.description = description
        self.refusals = ReportLimiter(REPORT_PERIOD)
        self._out = History(IOCOUT_LINES, max_bytes=IOCOUT_SIZE * 4)
        self._out_dirty = trio.Event()
        self.command_timeout = max(30.0, server.config.holdoff + 15.0)
        server.add_output_listener(self._output)  # now: the child's first lines are IOCOUT's too

    def close(self) -> None:
        """Stop following the console (the group is being dropped)."""
        self.server.remove_output_listener(self._output)

    def say(self, text: str) -> None:
        self.server.announce(text)

    # -- keeping the PVs equal to the status model -------------------------------------------

    async def follow(self) -> None:
        """Mirror every status change, the console output and the clock into the PVs."""
        server = self.server
        config = server.config
        await self.IOCNAME.write(_text(config.child_name))
        await self.DESCRIPTION.write(_text(self.description or config.child_name))
        endpoints = server.status.endpoints
        await self.PORT.write(_text(endpoints[-1].split(":", 1)[1] if endpoints else ""))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_status)
            nursery.start_soon(self._follow_output)
            nursery.start_soon(self._tick)

    async def _follow_status(self) -> None:
        generation = None
        while True:
            await self.refresh()
            generation = await self.server.wait_status_change(generation)

    async def refresh(self) -> None:
        """Write the status model's values into the PVs that differ."""
        status = self.server.status
        severity = AlarmSeverity.NO_ALARM
        if not status.running and not self.server.config.wait:
            severity = AlarmSeverity.MAJOR_ALARM  # procServControl: Shutdown is MAJOR unless MANUALSTART
        await _update(self.STATUS, "Running" if status.running else "Shutdown", severity=severity)
        await _update(self.AUTORESTART, "On" if status.restart_mode is RestartMode.ON else "Off")
        await _update(self.AUTORESTART_MODE, MODE_STRINGS[status.restart_mode])
        await _update(self.PID, status.pid or 0)
        await _update(self.START_CNT, status.start_count)
        await _update(self.RESTART_CNT, max(0, status.start_count - 1))
        if status.running:
            await _update(self.START_TIME, _when(status.child_started_at))
        if status.last_exit_code is not None:
            await _update(self.EXIT_CODE, status.last_exit_code)
            await _update(self.EXIT_TIME, _when(status.last_exit_at))
        await _update(self.CLIENTS, status.users)
        await _update(self.LOGGERS, status.loggers)
        await _update(self.WD_STATE, status.watchdog.value if status.watchdog is not None else "Off")
        await _update(self.WD_COUNT, status.watchdog_restarts)

    async def _tick(self) -> None:
        beat = 0
        while True:
            beat = (beat + 1) % 2147483647
            await self.HEARTBEAT.write(beat)
            status = self.server.status
            uptime = int(time.time() - status.child_started_at) if status.running and status.child_started_at else 0
            await _update(self.UPTIME, uptime)
            report_refusals(self)
            await trio.sleep(1.0)

    def _output(self, data: bytes) -> None:
        self._out.feed(data)
        self._out_dirty.set()

    async def _follow_output(self) -> None:
        while True:
            await self._out_dirty.wait()
            self._out_dirty = trio.Event()
            if self.SHOWOUT.value == "Yes":
                # Bytes: caproto stores them as the channel's Latin-1 text, which goes on the wire
                # as these very bytes (text outside Latin-1 would fail every read: ECA_INTERNAL).
                await self.IOCOUT.write(iocout_bytes(self._out.replay()))
            await trio.sleep(IOCOUT_PERIOD)

    # -- commands ------------------------------------------------------------------------------

    async def _command(self, instance, value: str, action: Callable[[], None], done: Callable[[], bool], command: str):  # type: ignore[no-untyped-def]
        if value != "Busy":
            return "Done"
        self.say(messages.ca_command(instance.pvname, _PEER.get(), command))
        cleared = {}
        if instance.alarm.severity:  # a timeout's alarm ends with the next command
            cleared = {"severity": AlarmSeverity.NO_ALARM, "status": AlarmStatus.NO_ALARM}
        await instance.write("Busy", verify_value=False, **cleared)
        action()
        with trio.move_on_after(self.command_timeout):
            generation = None
            while not done():
                generation = await self.server.wait_status_change(generation)
            await self.refresh()  # a client that reads right after its put sees the new state
            return "Done"
        # Not done in time: the put completes anyway, and the record says so with an alarm.
        await instance.write("Done", verify_value=False, severity=AlarmSeverity.MINOR_ALARM,
                             status=AlarmStatus.TIMEOUT)
        return "Done"

    @START.putter
    async def START(self, instance, value):  # type: ignore[no-untyped-def]
        return await self._command(instance, value, self.server.start, lambda: self.server.status.running, "START")

    @STOP.putter
    async def STOP(self, instance, value):  # type: ignore[no-untyped-def]
        return await self._command(instance, value, self.server.stop, lambda: not self.server.status.running,
                                   "STOP")

    @RESTART.putter
    async def RESTART(self, instance, value):  # type: ignore[no-untyped-def]
        before = self.server.status.start_count
        return await self._command(
            instance, value, self.server.restart,
            lambda: self.server.status.running and self.server.status.start_count > before,
            "RESTART",
        )

    @KILL.putter
    async def KILL(self, instance, value):  # type: ignore[no-untyped-def]
        pid = self.server.status.pid
        return await self._command(instance, value, self.server.kill,
                                   lambda: self.server.status.pid != pid, "KILL")

    @TOGGLE.putter
    async def TOGGLE(self, instance, value):  # type: ignore[no-untyped-def]
        return await self._command(instance, value, self.server.toggle_autorestart, lambda: True,
                                   "TOGGLE")

    @SHOWOUT.putter
    async def SHOWOUT(self, instance, value):  # type: ignore[no-untyped-def]
        if value == "Yes":
            self._out_dirty.set()
        return value


async def _update(instance, value, severity: AlarmSeverity | None = None) -> None:  # type: ignore[no-untyped-def]
    """Write only what changed, so monitors see changes and nothing else (an alarm given is a
    STATE alarm, as an mbbi's state severities are)."""
    alarm = {}
    if severity is not None and severity != instance.alarm.severity:
        alarm = {"severity": severity, "status": AlarmStatus.STATE if severity else AlarmStatus.NO_ALARM}
    if instance.value != value or alarm:
        await instance.write(value, **alarm)


def iocout_bytes(raw: bytes) -> bytes:
    """Console bytes as IOCOUT carries them: UTF-8 (undecodable bytes replaced), lines joined by
    \\n, control characters removed, the last IOCOUT_SIZE - 1 bytes from a character's start."""
    text = raw.decode("utf-8", "replace").replace("\r", "")
    text = "".join(ch for ch in text if ch == "\n" or ch >= " " or ch == "\t")
    lines = text.split("\n")[-IOCOUT_LINES:]
    data = "\n".join(lines).encode()[-(IOCOUT_SIZE - 1):]
    start = 0
    while start < len(data) and data[start] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        start += 1
    return data[start:]


SEVERITY_STRINGS = ("NO_ALARM", "MINOR", "MAJOR", "INVALID")  # menuAlarmSevr
# menuAlarmStat's first 16 states, in its order: CA carries at most 16 enum strings (EPICS's
# own STAT does the same over CA). These records use NO_ALARM, WRITE, STATE and TIMEOUT.
ALARM_STATUS_STRINGS = tuple(status.name for status in AlarmStatus)[:16]


class _Field:
    """One field of a record (``NAME.FIELD``), read-only, its value taken from the record at
    each read. Made on a client's first search for it, and dropped with its record."""

    def __init__(self, record, name: str, value: Callable, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(value=value(record, name), **kwargs)  # type: ignore[call-arg]
        self.record = record
        self._record_name = name
        self._value = value

    def check_access(self, host: str, user: str) -> AccessRights:
        return AccessRights.READ

    async def _read(self, data_type):  # type: ignore[no-untyped-def]
        self._data["value"] = self._value(self.record, self._record_name)  # type: ignore[attr-defined]
        # the record's time stamp, as an IOC's fields have
        self._data["timestamp"] = self.record._data["timestamp"]  # type: ignore[attr-defined]
        return await super()._read(data_type)  # type: ignore[misc]


class _StringField(_Field, ChannelString):
    pass


class _MenuField(_Field, ChannelEnum):
    pass


class _CharField(_Field, ChannelByte):
    pass


def _alarm_status(status: int) -> str:
    return ALARM_STATUS_STRINGS[status] if status < len(ALARM_STATUS_STRINGS) else "SOFT"  # never set here


def _description(record, name: str) -> str:  # type: ignore[no-untyped-def]
    return _text(getattr(getattr(record, "pvspec", None), "doc", None) or "")


# The fields clients read or check: Phoebus shows .DESC, genie_python waits for .DISP before a
# put, alarm tools read .SEVR/.STAT, pyepics and scripts ask .RTYP and .NAME.
FIELDS: dict[str, tuple[type, Callable, dict]] = {
    "DESC": (_StringField, _description, {}),
    "RTYP": (_StringField, lambda record, name: record.reported_record_type, {}),
    "NAME": (_StringField, lambda record, name: _text(name), {}),
    "SEVR": (_MenuField, lambda record, name: SEVERITY_STRINGS[record.alarm.severity],
             {"enum_strings": SEVERITY_STRINGS}),
    "STAT": (_MenuField, lambda record, name: _alarm_status(record.alarm.status),
             {"enum_strings": ALARM_STATUS_STRINGS}),
    "DISP": (_CharField, lambda record, name: b"\0", {"max_length": 1, "strip_null_terminator": False}),
}


def make_field(record, name: str, field: str):  # type: ignore[no-untyped-def]
    """The field ``field`` of the PV ``record`` called ``name``; KeyError for an unknown field."""
    kind, value, options = FIELDS[field]
    entry = kind(record, name, value, **options)
    if field in ("SEVR", "STAT"):
        entry.alarm = record.alarm  # posted with the record's alarm, and read with it
    return entry


def record_type(pv) -> str:  # type: ignore[no-untyped-def]
    """The record type a PV reports (``.RTYP``, DBR_CLASS_NAME): procServControl's where it has
    the record (busy commands, bi AUTORESTART, bo SHOWOUT, mbbi STATUS, stringin, waveform
    IOCOUT), else the input or output record an IOC would use for that type."""
    read_only = getattr(getattr(pv, "pvspec", None), "read_only", False)
    direction = "in" if read_only else "out"
    if pv.data_type is ChannelType.ENUM:
        if tuple(pv.enum_strings) == ("Done", "Busy"):
            return "busy"
        return ("b" if len(pv.enum_strings) <= 2 else "mbb") + direction[0]
    if pv.data_type is ChannelType.STRING:
        return "string" + direction
    if pv.data_type is ChannelType.CHAR or pv.max_length > 1:
        return "waveform"
    if pv.data_type in (ChannelType.LONG, ChannelType.INT):
        return "long" + direction
    return "a" + direction[0]  # ai, ao


def _as_records(group: PVGroup) -> None:
    """Give each PV its own alarm and record type, as each record in an IOC has.

    caproto gives every PV of a group one shared alarm: STATUS's MAJOR showed on every PV, each
    alarm write re-posted every PV of the group, and the next numeric write (caproto's limit
    check writes NO_ALARM) cleared it again.
    """
    for pv in group.pvdb.values():
        pv.alarm = ChannelAlarm()
        pv.reported_record_type = record_type(pv)


class PVServer:
    """One Channel Access server for any number of groups, which may come and go."""

    def __init__(self, interfaces: tuple[str, ...] = ("0.0.0.0",)) -> None:
        self.interfaces = interfaces
        self.context: _Context | None = None
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[int, trio.CancelScope] = {}

    async def run(self, groups: list[PVGroup] = (), *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def,assignment]
        pvdb: dict = {}
        for group in groups:
            _as_records(group)
            pvdb.update(group.pvdb)
        context = self.context = _Context(pvdb, interfaces=list(self.interfaces))
        context.beacon_sock.close()  # caproto creates it and never uses it
        ready = trio.Event()

        async def startup(async_lib) -> None:  # type: ignore[no-untyped-def]
            ready.set()

        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(lambda: context.run(startup_hook=startup))
                await ready.wait()
                for group in groups:
                    self._follow(group)
                task_status.started(self)
        finally:
            # caproto closes a circuit's socket from a helper thread, which cannot work once
            # the run is ending: close what is left here.
            for circuit in list(context.circuits):
                _close_client(circuit.client)

    def _follow(self, group: PVGroup) -> None:
        scope = trio.CancelScope()
        self._scopes[id(group)] = scope

        async def follow() -> None:
            with scope:
                await group.follow()

        assert self._nursery is not None
        self._nursery.start_soon(follow)

    def add(self, group: PVGroup) -> None:
        """Serve one more group's PVs (searches look the names up each time)."""
        assert self.context is not None
        _as_records(group)
        self.context.pvdb.update(group.pvdb)
        self._follow(group)

    def remove(self, group: PVGroup) -> None:
        assert self.context is not None
        self.context.forget(group.pvdb)
        scope = self._scopes.pop(id(group), None)
        if scope is not None:
            scope.cancel()


async def serve(
    groups: list[PVGroup],
    interfaces: tuple[str, ...] = ("0.0.0.0",),
    *,
    task_status: trio.TaskStatus[PVServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the groups' PVs over Channel Access until cancelled (one server for all of them)."""
    await PVServer(interfaces).run(groups, task_status=task_status)
