"""The PV status channel with real Channel Access clients against a real server and child.

Proves procServControl's PV names, types and strings; reads and commands through caproto's
client and through pyepics on libca (the C client EPICS sites use), each with the console
showing the same transitions and a put with completion returning once the action happened;
refusal of writes from a host that is not allowed (a client bound to 127.0.0.2); the watchdog
restarting a child whose own caproto IOC turns INVALID, with backoff and budget, and never
a healthy one; two servers on one host found by broadcast; and no caproto import without PVs.
PVs behave as procServControl's records: STATUS Shutdown in a MAJOR STATE alarm (none under
``-w``), monitors counted across a KILL post only changes, the record fields (.DESC, .RTYP,
.NAME, .SEVR, .STAT, .DISP) read by caproto and pyepics, in host mode too, and gone with their PV.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
from pathlib import Path

import caproto as ca
import pytest
import trio
from caproto import ChannelType
from caproto.sync.client import read, write

from support.client import Client
from support.launch import PY, serve_and_connect, short_tmpdir
from support.ports import free_port
from pyprocserv import Config, ProcessServer, RestartMode
from pyprocserv._core.watchdog import WatchConfig

HERE = Path(__file__).parent


async def ca_read(name: str, as_string: bool = False):
    kind = ChannelType.STRING if as_string else None
    response = await trio.to_thread.run_sync(functools.partial(read, name, data_type=kind, timeout=5, repeater=False))
    value = response.data[0]
    if isinstance(value, bytes):
        value = value.decode()
    return value


async def ca_write(name: str, value, notify: bool = True):
    await trio.to_thread.run_sync(functools.partial(write, name, value, notify=notify, timeout=30, repeater=False))


async def serve(nursery, prefix: str, command: tuple[str, ...], **options) -> tuple[ProcessServer, Client]:
    options.setdefault("holdoff", 0)
    config = Config(command=command, control=("0",), pv_prefix=prefix, **options)
    return await serve_and_connect(nursery, config)  # as an embedder would: the Config says it all


async def test_procservcontrol_pvs_read_the_status_model(nursery, ca_env):
    server, console = await serve(
        nursery, "CS:PS:T1:", ("/bin/sh", "-c", "echo line one; echo line two; exec cat"),
        name="t1ioc", pv_description="A test IOC",
    )
    assert await ca_read("CS:PS:T1:STATUS", as_string=True) == "Running"
    assert await ca_read("CS:PS:T1:PID") == server.status.pid
    assert await ca_read("CS:PS:T1:AUTORESTART", as_string=True) == "On"
    assert await ca_read("CS:PS:T1:AUTORESTART_MODE", as_string=True) == "On"
    assert await ca_read("CS:PS:T1:IOCNAME") == "t1ioc"
    assert await ca_read("CS:PS:T1:DESCRIPTION") == "A test IOC"
    assert await ca_read("CS:PS:T1:PORT") == server.endpoints[0][4:]
    assert await ca_read("CS:PS:T1:START_CNT") == 1
    assert await ca_read("CS:PS:T1:CLIENTS") == 1 and await ca_read("CS:PS:T1:LOGGERS") == 0
    assert await ca_read("CS:PS:T1:SHOWOUT", as_string=True) == "Yes"
    with trio.fail_after(5):
        while "line two" not in bytes((await trio.to_thread.run_sync(
                functools.partial(read, "CS:PS:T1:IOCOUT", timeout=5, repeater=False))).data).decode():
            await trio.sleep(0.1)
    iocout = bytes((await trio.to_thread.run_sync(functools.partial(read, "CS:PS:T1:IOCOUT", timeout=5, repeater=False))).data)
    assert b"line one\nline two" in iocout and b"\r" not in iocout
    first = await ca_read("CS:PS:T1:HEARTBEAT")
    with trio.fail_after(5):
        while await ca_read("CS:PS:T1:HEARTBEAT") == first:
            await trio.sleep(0.2)
    for name in ("STATUS", "START", "STOP", "RESTART", "TOGGLE", "KILL"):
        assert await ca_read(f"CS:PS:T1:{name}") is not None
    server.shutdown()


async def test_caproto_client_drives_stop_start_restart_toggle_kill(nursery, ca_env):
    server, console = await serve(nursery, "T2:", ("/bin/cat",), holdoff=1)
    first_pid = server.status.pid
    await ca_write("T2:STOP", 1)  # put with completion: returns once the child is gone
    assert not server.status.running and server.status.restart_mode is RestartMode.OFF
    assert await ca_read("T2:STATUS", as_string=True) == "Shutdown"
    assert await ca_read("T2:AUTORESTART", as_string=True) == "Off"
    assert await ca_read("T2:EXIT_CODE") == -9
    text = await console.expect(b"auto restart is disabled\r\n")
    assert b"\r\n@@@ Toggled auto restart to OFF\r\n" in text
    assert b"@@@ pyprocserv: CA put T2:STOP=1 from 127.0.0.1" in text

    await ca_write("T2:START", 1)
    assert server.status.running and await ca_read("T2:STATUS", as_string=True) == "Running"
    await console.expect(b'@@@ The PID of new child "/bin/cat" is: %d\r\n' % server.status.pid)

    before = server.status.start_count
    await ca_write("T2:RESTART", 1)  # ON, then kill: returns when the new child runs
    assert server.status.running and server.status.start_count == before + 1
    assert await ca_read("T2:AUTORESTART", as_string=True) == "On"
    assert await ca_read("T2:STOP", as_string=True) == "Done"
    await console.expect(b"Toggled auto restart to ON\r\n")

    await ca_write("T2:TOGGLE", 1)
    assert await ca_read("T2:AUTORESTART", as_string=True) == "Off"
    await console.expect(b"Toggled auto restart to OFF\r\n")

    pid = server.status.pid
    await ca_write("T2:KILL", 1)  # kill without a mode change: OFF, so it stays down
    assert server.status.pid is None and await ca_read("T2:PID") == 0
    assert pid != first_pid
    await console.expect(b"Received a sigChild for process %d. The process was killed by signal 9\r\n" % pid)
    server.shutdown()


async def test_pyepics_on_libca_reads_and_drives_the_same_pvs(nursery, ca_env):
    server, console = await serve(nursery, "T3:", ("/bin/sh", "-c", "echo ready; exec cat"))
    env = dict(os.environ)
    result = await trio.run_process(
        [PY, str(HERE / "children" / "pyepics_client.py"), "T3:"], env=env, capture_stdout=True,
        capture_stderr=True, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert seen["status"] == "Running" and seen["pid"] > 0 and seen["autorestart"] == "On"
    assert "ready" in seen["iocout"]
    assert seen["after_stop"] == ["Shutdown", "Off", 0]
    assert seen["after_start"][0] == "Running" and seen["after_start"][1] > 0
    assert seen["after_restart"][0] == "Running" and seen["after_restart"][2] == "On"
    assert seen["after_restart"][1] != seen["after_start"][1]
    assert seen["after_toggle"] == "Off"
    assert seen["after_kill"][:2] == ["Shutdown", 0] and seen["after_kill"][2] > 0
    text = await console.expect(b"CA put T3:TOGGLE=1")
    text += await console.expect(b"Toggled auto restart to OFF\r\n")
    assert text.count(b"Toggled auto restart to") == 3  # STOP's OFF, RESTART's ON, TOGGLE's OFF
    text = await console.expect(b"auto restart is disabled\r\n")  # KILL's exit, no restart
    assert b"CA put T3:KILL=1" in text and b"killed by signal 9" in text
    server.shutdown()


def ca_put_from(source: str, port: int, name: str, value: int) -> tuple[int, object]:
    """A minimal CA client (caproto's sans-IO core) whose TCP connection comes from ``source``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    circuit = ca.VirtualCircuit(our_role=ca.CLIENT, address=("127.0.0.1", port), priority=0)

    def send(*commands) -> None:
        sock.sendall(b"".join(circuit.send(*commands)))

    def receive() -> list:
        commands, _ = circuit.recv(sock.recv(4096))
        for command in commands:
            circuit.process_command(command)
        return commands

    try:
        send(ca.VersionRequest(priority=0, version=ca.DEFAULT_PROTOCOL_VERSION))
        send(ca.HostNameRequest("trusted-looking-name"), ca.ClientNameRequest("operator"))
        channel = ca.ClientChannel(name, circuit)
        send(channel.create())
        rights = None
        while channel.states[ca.CLIENT] is not ca.CONNECTED:
            for command in receive():
                if isinstance(command, ca.AccessRightsResponse):
                    rights = command.access_rights
        send(channel.write([value], data_type=ChannelType.LONG, notify=True, ioid=7))
        while True:
            for command in receive():
                if isinstance(command, (ca.WriteNotifyResponse, ca.ErrorResponse)):
                    return rights, command
    finally:
        sock.close()


async def test_a_write_from_a_host_that_is_not_allowed_is_refused_and_logged(nursery, ca_env, tmp_path):
    log = tmp_path / "log"
    server, console = await serve(nursery, "T4:", ("/bin/cat",), logfile=str(log))
    port = int(ca_env["EPICS_CA_SERVER_PORT"])
    pid = server.status.pid
    rights, reply = await trio.to_thread.run_sync(ca_put_from, "127.0.0.2", port, "T4:STOP", 1)
    assert rights == ca.AccessRights.READ  # libca's caput refuses locally with this
    assert isinstance(reply, ca.ErrorResponse)
    assert server.status.running and server.status.pid == pid
    assert b"@@@ pyprocserv: refused CA put to T4:STOP from 127.0.0.2: not an allowed host\r\n" in log.read_bytes()
    rights, reply = await trio.to_thread.run_sync(ca_put_from, "127.0.0.1", port, "T4:KILL", 1)
    assert rights == ca.AccessRights.READ | ca.AccessRights.WRITE
    assert isinstance(reply, ca.WriteNotifyResponse) and reply.status.success
    assert server.status.pid != pid
    server.shutdown()


async def test_write_hosts_star_lets_every_host_write(nursery, ca_env):
    server, console = await serve(nursery, "T5:", ("/bin/cat",), pv_write_hosts=("*",))
    port = int(ca_env["EPICS_CA_SERVER_PORT"])
    rights, reply = await trio.to_thread.run_sync(ca_put_from, "127.0.0.2", port, "T5:STOP", 1)
    assert isinstance(reply, ca.WriteNotifyResponse)
    assert not server.status.running
    server.shutdown()


async def test_watchdog_restarts_an_invalid_child_with_backoff_then_stops_at_the_budget(nursery, monkeypatch, ca_env):
    child_port = free_port(udp=True)
    our_port = ca_env["EPICS_CA_SERVER_PORT"]
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", f"127.0.0.1:{child_port} 127.0.0.1:{our_port}")
    state = Path(short_tmpdir()) / "state"
    state.write_text("ok\n")
    server, console = await serve(
        nursery, "WD:", (PY, "-u", str(HERE / "children" / "health_ioc.py"), "CHILD:", str(state)),
        environment={"EPICS_CA_SERVER_PORT": str(child_port)},
        watch=WatchConfig(pv="CHILD:HEALTH", hold=1.0, max_per_hour=4, bad_values=("GRUMPY",)),
    )
    await console.expect(b"IOC ready\r\n", timeout=20)
    # healthy: no restart, however long we look
    with trio.move_on_after(2.5):
        await console.expect(b"Watchdog: CHILD:HEALTH is ")
        raise AssertionError("the watchdog judged a healthy child: " + console.received.decode(errors="replace"))
    assert server.status.start_count == 1 and server.status.watchdog == "OK"
    assert await ca_read("WD:WD_STATE", as_string=True) == "OK"

    state.write_text("invalid\n")  # every start from now on comes up INVALID
    await console.send(b"invalid\r")
    starts = []
    for n in (1, 2, 3, 4):
        await console.expect(b"restarting the child (%d of 4 per hour)\r\n" % n, timeout=20)
        starts.append(trio.current_time())
        await console.expect(b"IOC ready\r\n", timeout=20)
    await console.expect(b"Watchdog: restart budget spent (4 per hour)", timeout=20)
    # hold 1 s: backoffs of 1, 2 and 4 s. The first two hide behind the IOC's own start-up
    # plus the hold; the third shows.
    assert starts[3] - starts[2] >= 3.9
    assert starts[3] - starts[2] > starts[1] - starts[0] + 1
    assert await ca_read("WD:WD_STATE", as_string=True) == "Budget spent"
    assert await ca_read("WD:WD_COUNT") == 4
    assert server.status.start_count == 5
    await console.send(b"grumpy\r")  # still bad, by value now: no restart past the budget
    await console.send(b"ok\r")
    await console.expect(b"Watchdog: CHILD:HEALTH is good again\r\n", timeout=10)
    assert server.status.start_count == 5
    server.shutdown()


async def test_watchdog_takes_a_bad_value_as_bad_and_leaves_a_stopped_child_alone(nursery, monkeypatch, ca_env):
    child_port = free_port(udp=True)
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", f"127.0.0.1:{child_port}")
    state = Path(short_tmpdir()) / "state"
    state.write_text("ok\n")
    server, console = await serve(
        nursery, "WE:", (PY, "-u", str(HERE / "children" / "health_ioc.py"), "CHILE:", str(state)),
        environment={"EPICS_CA_SERVER_PORT": str(child_port)},
        watch=WatchConfig(pv="CHILE:HEALTH", hold=1.0, max_per_hour=5, bad_values=("GRUMPY",)),
    )
    await console.expect(b"IOC ready\r\n", timeout=20)
    await console.send(b"grumpy\r")
    await console.expect(b"CHILE:HEALTH is 'GRUMPY': restarting the child if it stays so for 1 s\r\n")
    await console.expect(b"restarting the child (1 of 5 per hour)\r\n", timeout=10)
    await console.expect(b"IOC ready\r\n", timeout=20)
    server.stop()  # an operator stops it: disconnected, but nobody restarts a stopped child
    await console.expect(b"auto restart is disabled\r\n")
    with trio.move_on_after(3):
        await console.expect(b"restarting the child (2")
        raise AssertionError("the watchdog restarted a stopped child")
    assert not server.status.running
    server.shutdown()


async def test_two_servers_on_one_host_are_both_found_by_broadcast(nursery, monkeypatch, ca_env):
    # Both servers share the CA port; a unicast search reaches only one of them (SO_REUSEPORT),
    # a broadcast search reaches both: EPICS_CA_ADDR_LIST=<broadcast address> (README).
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "127.255.255.255")
    a, _ = await serve(nursery, "HOST:A:", ("/bin/cat",), name="ioc-a")
    b, _ = await serve(nursery, "HOST:B:", ("/bin/cat",), name="ioc-b")
    for _ in range(3):
        assert await ca_read("HOST:A:IOCNAME") == "ioc-a"
        assert await ca_read("HOST:B:IOCNAME") == "ioc-b"
        assert await ca_read("HOST:A:PID") == a.status.pid and await ca_read("HOST:B:PID") == b.status.pid
    a.shutdown()
    b.shutdown()


def test_without_pvs_caproto_is_never_imported():
    code = (
        "import sys, trio, pyprocserv\n"
        "async def main():\n"
        "    server = pyprocserv.ProcessServer(pyprocserv.Config(command=('/bin/true',), control=('0',)))\n"
        "    async with trio.open_nursery() as n:\n"
        "        await n.start(server.run)\n"
        "        server.shutdown()\n"
        "trio.run(main)\n"
        "print('caproto' in sys.modules, 'pyprocserv._ca.pvs' in sys.modules)\n"
    )
    result = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    assert result.stdout.split() == ["False", "False"], result.stderr


async def test_a_pv_server_that_fails_is_restarted_and_the_child_never_notices(nursery, ca_env, monkeypatch, caplog):
    from pyprocserv._ca import pvs as _pvs

    real_refresh = _pvs.ProcessPVs.refresh
    failures = []

    async def refresh_that_breaks_once(self):
        if not failures and self.server.status.users:
            failures.append(1)
            raise KeyError(7)  # as caproto raised on an unknown channel id
        await real_refresh(self)

    monkeypatch.setattr(_pvs.ProcessPVs, "refresh", refresh_that_breaks_once)
    server, console = await serve(nursery, "SUP:", ("/bin/cat",))
    pid = server.status.pid
    text = await console.expect(b"restarting PV server in 1 s\r\n")
    assert b"@@@ pyprocserv: PV server failed (KeyError: 7); the IOC is not affected" in text
    with trio.fail_after(10):
        while dict(server.status.extras).get("PV server") != "running":
            await server.wait_status_change()
    assert await ca_read("SUP:PID") == pid  # served again, by a new CA server
    assert server.status.running and server.status.pid == pid and server.status.start_count == 1
    await console.send(b"echo\r")
    await console.expect(b"echo")
    assert "KeyError: 7" in caplog.text  # the library logs; the programs print its records to stderr
    server.shutdown()


async def ca_read_alarm(name: str) -> tuple[object, str, str]:
    """(value as a string, severity name, status name) as a DBR_TIME_STRING read gives them."""
    response = await trio.to_thread.run_sync(functools.partial(
        read, name, data_type=ChannelType.TIME_STRING, timeout=5, repeater=False))
    return (response.data[0].decode(), ca.AlarmSeverity(response.metadata.severity).name,
            ca.AlarmStatus(response.metadata.status).name)


async def test_status_shutdown_is_a_major_state_alarm_and_running_none(nursery, ca_env):
    # no puts: the child exits by itself and auto restart is OFF (--noautorestart)
    server, console = await serve(nursery, "AL:", ("/bin/sh", "-c", "read line; exit 3"),
                                  restart_mode=RestartMode.OFF)
    assert await ca_read_alarm("AL:STATUS") == ("Running", "NO_ALARM", "NO_ALARM")
    await console.send(b"bye\r")
    await console.expect(b"auto restart is disabled\r\n")
    with trio.fail_after(5):
        while await ca_read("AL:PID") != 0:  # PID's write came after STATUS's: both are in
            await trio.sleep(0.05)
    assert await ca_read_alarm("AL:STATUS") == ("Shutdown", "MAJOR_ALARM", "STATE")
    assert (await ca_read_alarm("AL:PID"))[1:] == ("NO_ALARM", "NO_ALARM")  # the alarm is STATUS's own
    server.shutdown()


async def test_status_shutdown_under_w_is_no_alarm(nursery, ca_env):
    # -w: the IOC starts by hand (procServControl's MANUALSTART), so Shutdown is not an alarm
    server, console = await serve(nursery, "AW:", ("/bin/cat",), wait=True)
    assert await ca_read_alarm("AW:STATUS") == ("Shutdown", "NO_ALARM", "NO_ALARM")
    server.shutdown()


class Monitors:
    """A CA client on caproto's protocol core that subscribes to PVs and keeps every update
    (value as a string, severity) per PV, in the order they arrived on the one circuit."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.circuit = ca.VirtualCircuit(our_role=ca.CLIENT, address=("127.0.0.1", 0), priority=0)
        self.updates: dict[str, list[tuple[str, str]]] = {}
        self._names: dict[int, str] = {}  # subscription id -> PV name
        self._arrived = trio.Event()
        self.scope = trio.CancelScope()

    async def send(self, *commands) -> None:
        await self.stream.send_all(b"".join(self.circuit.send(*commands)))

    async def receive(self) -> list:
        data = await self.stream.receive_some(65536)
        assert data, "the server closed the circuit"
        commands, _ = self.circuit.recv(data)
        for command in commands:
            self.circuit.process_command(command)
            if isinstance(command, ca.EventAddResponse):
                value = command.data[0]
                self.updates[self._names[command.subscriptionid]].append(
                    (value.decode() if isinstance(value, bytes) else str(value),
                     ca.AlarmSeverity(command.metadata.severity).name))
                self._arrived.set()
                self._arrived = trio.Event()
        return commands

    async def subscribe(self, names: list[str]) -> None:
        await self.send(ca.VersionRequest(priority=0, version=ca.DEFAULT_PROTOCOL_VERSION))
        await self.send(ca.HostNameRequest("monitor"), ca.ClientNameRequest("monitor"))
        channels = [ca.ClientChannel(name, self.circuit) for name in names]
        await self.send(*(channel.create() for channel in channels))
        while not all(channel.states[ca.CLIENT] is ca.CONNECTED for channel in channels):
            await self.receive()
        for channel in channels:
            request = channel.subscribe(data_type=ChannelType.TIME_STRING,
                                        mask=ca.SubscriptionType.DBE_VALUE | ca.SubscriptionType.DBE_ALARM)
            self._names[request.subscriptionid] = channel.name
            self.updates[channel.name] = []
            await self.send(request)

    async def run(self) -> None:
        with self.scope:
            while True:
                await self.receive()

    async def aclose(self) -> None:
        self.scope.cancel()
        await self.stream.aclose()

    async def wait_until(self, arrived) -> None:  # type: ignore[no-untyped-def]
        while not arrived():
            await self._arrived.wait()

    async def wait_for(self, name: str, count: int) -> None:
        """Until ``name`` had ``count`` more updates than now."""
        target = len(self.updates[name]) + count
        await self.wait_until(lambda: len(self.updates[name]) >= target)


async def test_a_monitor_fires_only_when_its_own_pv_changed_value_or_alarm(nursery, ca_env):
    server, console = await serve(nursery, "MO:", ("/bin/cat",), holdoff=0)
    names = [f"MO:{suffix}" for suffix in (
        "STATUS", "PID", "CLIENTS", "LOGGERS", "IOCNAME", "AUTORESTART", "START_CNT", "EXIT_CODE",
        "KILL", "HEARTBEAT")]
    stream = await trio.open_tcp_stream("127.0.0.1", int(ca_env["EPICS_CA_SERVER_PORT"]))
    monitors = Monitors(stream)
    await monitors.subscribe(names)
    nursery.start_soon(monitors.run)
    with trio.fail_after(5):
        await monitors.wait_until(lambda: all(monitors.updates[name] for name in names))  # the first ones
    pid = server.status.pid
    await ca_write("MO:KILL", 1)  # returns once the child is gone; auto restart ON brings a new one
    with trio.fail_after(10):
        while not (server.status.running and server.status.pid != pid):
            await server.wait_status_change()
    await monitors.wait_for("MO:HEARTBEAT", 2)  # written after the restart: what came before is in
    for name in names:
        updates = monitors.updates[name]
        repeats = [a for a, b in zip(updates, updates[1:]) if a == b]
        assert not repeats, f"{name} posted unchanged: {updates}"
    assert len(monitors.updates["MO:CLIENTS"]) == 1 and len(monitors.updates["MO:IOCNAME"]) == 1
    assert monitors.updates["MO:START_CNT"] == [("1", "NO_ALARM"), ("2", "NO_ALARM")]
    assert monitors.updates["MO:KILL"] == [("Done", "NO_ALARM"), ("Busy", "NO_ALARM"), ("Done", "NO_ALARM")]
    await monitors.aclose()
    server.shutdown()


async def test_record_fields_are_served_for_every_pv_and_follow_the_record(nursery, ca_env):
    server, console = await serve(nursery, "FL:", ("/bin/cat",), restart_mode=RestartMode.OFF)
    fields = {
        "FL:STATUS.DESC": "Process status", "FL:STATUS.RTYP": "mbbi", "FL:STATUS.NAME": "FL:STATUS",
        "FL:STATUS.SEVR": "NO_ALARM", "FL:STATUS.STAT": "NO_ALARM", "FL:STATUS.VAL": "Running",
        "FL:START.RTYP": "busy", "FL:AUTORESTART.RTYP": "bi", "FL:SHOWOUT.RTYP": "bo",
        "FL:IOCNAME.RTYP": "stringin", "FL:IOCOUT.RTYP": "waveform", "FL:PID.RTYP": "longin",
        "FL:PID.DESC": "Child PID, 0 when none", "FL:KILL.DESC": "Kill IOC (auto restart unchanged)",
    }
    for name, value in fields.items():
        assert await ca_read(name, as_string=True) == value, name
    assert await ca_read("FL:START.DISP") == 0  # DBF_UCHAR, 0: puts are not disabled
    with pytest.raises(ca.CaprotoTimeoutError):  # an unknown field is not found
        await trio.to_thread.run_sync(functools.partial(read, "FL:STATUS.NOPE", timeout=0.5, repeater=False))
    with pytest.raises(ca.ErrorResponseReceived):  # fields are read-only
        await ca_write("FL:START.DISP", [1])

    port = int(ca_env["EPICS_CA_SERVER_PORT"])
    monitors = Monitors(await trio.open_tcp_stream("127.0.0.1", port))
    await monitors.subscribe(["FL:STATUS.SEVR", "FL:STATUS.DESC", "FL:HEARTBEAT"])
    nursery.start_soon(monitors.run)
    await ca_write("FL:STOP", 1)  # Shutdown, MAJOR
    assert await ca_read_alarm("FL:STATUS.SEVR") == ("MAJOR", "MAJOR_ALARM", "STATE")
    assert await ca_read("FL:STATUS.STAT", as_string=True) == "STATE"
    await ca_write("FL:START", 1)  # Running, no alarm
    await monitors.wait_for("FL:HEARTBEAT", 2)
    assert monitors.updates["FL:STATUS.SEVR"] == [
        ("NO_ALARM", "NO_ALARM"), ("MAJOR", "MAJOR_ALARM"), ("NO_ALARM", "NO_ALARM")]
    assert monitors.updates["FL:STATUS.DESC"] == [("Process status", "NO_ALARM")]
    await monitors.aclose()

    # pyepics on libca: genie_python gives NAME.DISP 0.1 s to connect before each put
    result = await trio.run_process(
        [PY, str(HERE / "children" / "pyepics_fields.py"), "FL:START.DISP", "FL:STATUS.DESC",
         "FL:STATUS.SEVR", "FL:STATUS.RTYP", "FL:STATUS"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert seen["FL:START.DISP"]["native"] == 0 and seen["FL:START.DISP"]["connect"] < 0.1
    assert seen["FL:STATUS.DESC"]["text"] == "Process status"
    assert seen["FL:STATUS.SEVR"]["text"] == "NO_ALARM" and seen["FL:STATUS.RTYP"]["text"] == "mbbi"
    assert (seen["FL:STATUS"]["text"], seen["FL:STATUS"]["severity"]) == ("Running", 0)
    server.stop()
    with trio.fail_after(5):
        while server.status.running:
            await server.wait_status_change()
    result = await trio.run_process(
        [PY, str(HERE / "children" / "pyepics_fields.py"), "FL:STATUS", "FL:STATUS.SEVR"],
        capture_stdout=True, capture_stderr=True, check=False)
    seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert (seen["FL:STATUS"]["text"], seen["FL:STATUS"]["severity"], seen["FL:STATUS"]["status"]) == (
        "Shutdown", 2, 7)  # MAJOR, STATE
    assert seen["FL:STATUS.SEVR"]["text"] == "MAJOR"
    server.shutdown()


async def test_fields_go_with_their_group_and_a_field_search_leaves_nothing_behind(nursery, ca_env):
    from caproto.server import PVGroup, pvproperty

    from pyprocserv._ca.pvs import PVServer

    class Lamp(PVGroup):
        LIT = pvproperty(value=0, dtype=int, read_only=True, doc="Lit")

        async def follow(self) -> None:
            await trio.sleep_forever()

    pv_server = await nursery.start(PVServer(("127.0.0.1",)).run, [])
    context = pv_server.context
    lamp = Lamp(prefix="LAMP:")
    pv_server.add(lamp)
    names = ["LAMP:LIT.DESC", "LAMP:LIT.SEVR", "LAMP:LIT.VAL", "LAMP:LIT.DISP"]
    assert [await ca_read(name, as_string=True) for name in names] == ["Lit", "NO_ALARM", "0", ""]
    assert context["LAMP:LIT.DESC"] is context["LAMP:LIT.DESC"]  # one entry: monitors reach it
    assert set(context.pvdb) == {"LAMP:LIT"}  # caproto would have kept each NAME.FIELD here
    pv_server.remove(lamp)
    for name in ["LAMP:LIT", *names]:
        with pytest.raises(KeyError):
            context[name]
    assert context.fields == {}
    again = Lamp(prefix="LAMP:")
    pv_server.add(again)  # the same names, new records: fields made afresh
    assert context["LAMP:LIT.DESC"].record is again.LIT
    nursery.cancel_scope.cancel()


async def test_host_mode_pvs_have_the_same_fields_and_alarms(ca_env):
    from test_manage import HostProcess, write_conf

    conf = short_tmpdir()
    write_conf(conf, """\
        [lamp]
        command = /bin/cat
        [manual]
        command = /bin/cat
        autostart = 0
    """)
    async with HostProcess(conf, "--pv-prefix", "HF:", env=ca_env) as host:
        await host.wait_for({"lamp": "Running", "manual": "Running"})
        with trio.fail_after(20):
            while True:
                try:
                    if await ca_read("HF:NRUNNING") == 1:
                        break
                except ca.CaprotoTimeoutError:
                    pass  # the CA server is still starting
                await trio.sleep(0.2)
        assert await ca_read("HF:ALL.RTYP", as_string=True) == "mbbo"
        # the doc cut to DBR_STRING's 39 characters
        assert await ca_read("HF:ALL.DESC", as_string=True) == "Stop, run or restart every autostart in"
        assert await ca_read("HF:SUMMARY.RTYP", as_string=True) == "waveform"
        assert await ca_read("HF:lamp:START.DISP") == 0
        assert await ca_read("HF:lamp:STATUS.SEVR", as_string=True) == "NO_ALARM"
        # not autostart: started by hand (-w), so Shutdown is its normal state, not an alarm
        assert await ca_read_alarm("HF:manual:STATUS") == ("Shutdown", "NO_ALARM", "NO_ALARM")
        await ca_write("HF:ALL", 0)  # Stop the autostart ones
        assert await ca_read_alarm("HF:lamp:STATUS") == ("Shutdown", "MAJOR_ALARM", "STATE")
        assert await ca_read("HF:lamp:STATUS.SEVR", as_string=True) == "MAJOR"


async def test_a_search_that_fails_is_reported_and_the_ca_server_keeps_serving(nursery, ca_env, monkeypatch, capsys,
                                                                               caplog):
    from pyprocserv._ca import pvs as _pvs

    def broken_field(record, name, field):
        raise RuntimeError("a bug in a field")  # as a failed reply's sendto raises in the same loop

    monkeypatch.setattr(_pvs, "make_field", broken_field)
    server, console = await serve(nursery, "SE:", ("/bin/cat",))
    assert await ca_read("SE:PID") == server.status.pid
    with pytest.raises(ca.CaprotoTimeoutError):
        await trio.to_thread.run_sync(functools.partial(read, "SE:STATUS.DESC", timeout=0.5, repeater=False))
    assert await ca_read("SE:PID") == server.status.pid
    err = capsys.readouterr().err + caplog.text  # stderr, and the log (which goes to stderr)
    assert "PV server failed" not in err  # the same CA server goes on (caproto's loop ended it)
    assert "search not answered: RuntimeError('a bug in a field')" in err
    server.shutdown()


async def test_a_refused_put_leaves_no_alarm_behind(nursery, ca_env):
    server, console = await serve(nursery, "RP:", ("/bin/cat",))
    port = int(ca_env["EPICS_CA_SERVER_PORT"])
    rights, reply = await trio.to_thread.run_sync(ca_put_from, "127.0.0.1", port, "RP:SHOWOUT", 5)
    assert isinstance(reply, ca.ErrorResponse)  # no state 5: the put fails...
    assert await ca_read_alarm("RP:SHOWOUT") == ("Yes", "NO_ALARM", "NO_ALARM")  # ...and that is all
    server.shutdown()


async def test_pyepics_callbacks_fire_only_when_their_pv_changed(nursery, ca_env):
    server, console = await serve(nursery, "PM:", ("/bin/cat",), holdoff=0)
    names = [f"PM:{suffix}" for suffix in ("STATUS", "PID", "CLIENTS", "IOCNAME", "STATUS.SEVR", "HEARTBEAT")]
    async with trio.open_nursery() as watching:
        client = await watching.start(functools.partial(
            trio.run_process, [PY, str(HERE / "children" / "pyepics_monitor.py"), *names],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False))
        output = b""
        with trio.fail_after(15):
            while b"ready\n" not in output:
                output += await client.stdout.receive_some()
        pid = server.status.pid
        await ca_write("PM:KILL", 1)
        with trio.fail_after(10):
            while not (server.status.running and server.status.pid != pid):
                await server.wait_status_change()
        await client.stdin.send_all(b"go\n")
        with trio.fail_after(15):
            while not output.endswith(b"}\n"):
                data = await client.stdout.receive_some()
                assert data, output
                output += data
    updates = json.loads(output.decode().splitlines()[-1])
    for name in names:
        repeats = [a for a, b in zip(updates[name], updates[name][1:]) if a == b]
        assert not repeats, f"{name} posted unchanged: {updates[name]}"
    assert updates["PM:CLIENTS"] == [["1", 0]] and len(updates["PM:IOCNAME"]) == 1
    # STATUS as pyepics' time form gives it: the index (0 Running, 1 Shutdown) and severity
    assert updates["PM:STATUS"][0] == ["0", 0] and updates["PM:STATUS"][-1] == ["0", 0]
    server.shutdown()
