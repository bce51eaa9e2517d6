"""The watchdog's shell: a Channel Access monitor of one PV, and the restarts it decides.

Which CA client: our own few lines of trio on caproto's sans-IO protocol core (the same
library that serves our PVs), because neither offered client fits a trio daemon: caproto
dropped its trio client, its threading client backs off an unanswered search to one retry
after ~8 s (a restarted IOC would go unseen that long) and its threads outlive a disconnect,
and pyepics would put libca (compiled EPICS) and its threads into the server. Here one task
searches every half second until the PV answers, subscribes, and starts over when the
circuit drops; every decision is taken by the pure :class:`WatchdogPolicy`.
"""

from __future__ import annotations

import math
import random
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import caproto as ca
import trio

from .._core import messages
from .._core.watchdog import WatchConfig, WatchdogPolicy, WatchState, bad_reason

if TYPE_CHECKING:
    from .._shell.extras import Root

SEARCH_INTERVAL = 0.5


@dataclass(frozen=True)
class Reading:
    connected: bool
    severity: int = 0
    value: str = ""


def _as_text(data: Any, enum_strings: list[str] | None) -> str:
    try:
        value = data[0]
    except (TypeError, IndexError):
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\0")
    if enum_strings is not None:
        try:
            return enum_strings[int(value)]
        except (ValueError, IndexError):
            return str(value)
    return str(value)


async def search(name: str, interval: float = SEARCH_INTERVAL) -> tuple[str, int]:
    """Ask every address of EPICS_CA_ADDR_LIST (and the auto list) until a server answers."""
    broadcaster = ca.Broadcaster(our_role=ca.CLIENT)
    cid = random.randint(0, 65535)
    payload = broadcaster.send(
        ca.VersionRequest(0, ca.DEFAULT_PROTOCOL_VERSION),
        ca.SearchRequest(name, cid, ca.DEFAULT_PROTOCOL_VERSION),
    )
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        await sock.bind(("0.0.0.0", 0))
        while True:
            for address in ca.get_client_address_list():
                try:
                    await sock.sendto(payload, address)
                except OSError:
                    pass  # an unreachable entry must not stop the others
            with trio.move_on_after(interval):
                while True:
                    data, sender = await sock.recvfrom(ca.MAX_UDP_RECV)
                    try:
                        commands = broadcaster.recv(data, sender)
                    except ca.CaprotoError:
                        continue
                    for command in commands:
                        if isinstance(command, ca.SearchResponse) and command.cid == cid:
                            return ca.extract_address(command)


async def subscribe(address: tuple[str, int], name: str, report: Callable[[Reading], None]) -> None:
    """Connect, subscribe with DBR_TIME (value and severity), report until the circuit drops."""
    circuit = ca.VirtualCircuit(our_role=ca.CLIENT, address=address, priority=0)
    channel = ca.ClientChannel(name, circuit)
    stream = await trio.open_tcp_stream(*address)
    async with stream:

        async def send(*commands: Any) -> None:
            await stream.send_all(b"".join(circuit.send(*commands)))

        async def receive() -> list:
            data = await stream.receive_some(ca.MAX_UDP_RECV)
            if not data:
                raise trio.BrokenResourceError("server closed the circuit")
            commands, _ = circuit.recv(data)
            for command in commands:
                circuit.process_command(command)
            return commands

        await send(ca.VersionRequest(priority=0, version=ca.DEFAULT_PROTOCOL_VERSION))
        await send(channel.host_name(socket.gethostname()), channel.client_name("pyprocserv-watchdog"))
        await send(channel.create())
        while channel.states[ca.CLIENT] is not ca.CONNECTED:
            await receive()
        enum_strings = None
        if channel.native_data_type == ca.ChannelType.ENUM:
            await send(channel.read(data_type=ca.ChannelType.CTRL_ENUM, ioid=1))
            while enum_strings is None:
                for command in await receive():
                    if isinstance(command, ca.ReadNotifyResponse) and command.ioid == 1:
                        enum_strings = [
                            s.decode("latin-1") if isinstance(s, bytes) else s
                            for s in command.metadata.enum_strings
                        ]
        kind = ca.field_types["time"][channel.native_data_type]
        await send(channel.subscribe(data_type=kind, subscriptionid=2, mask=ca.SubscriptionType.DBE_VALUE | ca.SubscriptionType.DBE_ALARM))
        while True:
            for command in await receive():
                if isinstance(command, ca.EventAddResponse) and command.subscriptionid == 2:
                    report(Reading(True, int(command.metadata.severity), _as_text(command.data, enum_strings)))


async def monitor(name: str, report: Callable[[Reading], None], interval: float = SEARCH_INTERVAL) -> None:
    """Forever: find ``name``, follow it, and report it disconnected whenever it is lost."""
    while True:
        address = await search(name, interval)
        try:
            await subscribe(address, name, report)
        except (OSError, trio.BrokenResourceError, ca.CaprotoError):
            pass
        report(Reading(connected=False))
        await trio.sleep(interval)


async def run_watchdog(server: Root, config: WatchConfig) -> None:
    """Watch ``config.pv`` and restart ``server``'s child as :class:`WatchdogPolicy` decides."""
    policy = WatchdogPolicy(config)

    def report() -> None:
        server.set_watch_state(policy.state, policy.restarts)

    def act(decision: Any) -> None:
        if decision is not None:
            server.announce(decision.message, who=messages.WATCHDOG)
            if decision.restart:
                server.respawn()

    def reading(value: Reading) -> None:
        now = trio.current_time()
        policy.child(server.status.running, now)
        act(policy.pv(bad_reason(value.connected, value.severity, value.value, config.bad_values), now))
        wake.set()

    async def follow_child() -> None:
        generation = None
        while True:
            policy.child(server.status.running, trio.current_time())
            wake.set()
            generation = await server.wait_status_change(generation)

    wake = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor, config.pv, reading)
        nursery.start_soon(follow_child)
        while True:
            act(policy.tick(trio.current_time()))
            report()
            wake = trio.Event()
            deadline = policy.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await wake.wait()


__all__ = ["WatchConfig", "WatchState", "run_watchdog"]
