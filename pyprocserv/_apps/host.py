"""Host mode: every configured instance in one trio process, with one CA server for all.

Rules:
1. Each instance is the same :class:`ProcessServer` a unit would run, built from the same
   command line (:meth:`Instance.argv`), with its own endpoints, log file, restart policy and
   PV prefix. Only the PVs are served centrally: one caproto server, plus the host's own PVs.
2. An instance that fails (a busy port, a bug) is reported and retried after a pause; the
   others never notice.
3. SIGHUP re-reads the configuration: added instances start, removed ones stop, changed ones
   restart, and the rest are left alone (their children keep running); logs are reopened.
   A configuration that cannot be read changes nothing: every instance goes on as it was, the
   reason goes to stderr and the host's SUMMARY PV, and the next good reload applies.
   SIGTERM and SIGINT stop everything in order.
4. ``autostart = 0`` instances listen but start their child only on ^R, START or ``ALL Run``.
5. The CA server and reload are supervised extras (see ``_shell.extras``): a failure in either is
   reported and retried, and no instance notices.
6. ``--manager-pvs PREFIX`` adds the supervisor IOC manager's names (see ``_ca.hostpvs``).
7. Each instance's log is rotated by size (``--log-max-bytes``, ``--log-backups``, or its own
   ``log_max_bytes`` / ``log_backups`` keys; 10 MiB x 5 by default, see ``_shell.logfile``).
8. ``--web [ADDR:]PORT`` serves one browser console for every instance, with the rules and
   messages of ``pyprocserv --web`` (checked before anything starts). It is a host-level
   supervised extra like the CA server; the :class:`Host` is its fleet (``_web.fleet``), so the
   status table follows a reload, and a removed instance's consoles close with its server.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import traceback
from typing import TYPE_CHECKING

import trio

from .._core.cli import CliError, CliStop, parse_args
from .._shell.extras import Supervisor
from .instances import ConfigError, Instance, Layout, instances
from .._core.log import parse_size
from .._core.config import BROWSER_HISTORY
from .._shell.logfile import LogFile
from .main import explain
from . import wiring
from .._shell.server import ProcessServer

if TYPE_CHECKING:
    from .._ca.hostpvs import ManagerPVs
    from .._ca.pvs import ProcessPVs, PVServer

RETRY_AFTER = 10.0


@dataclasses.dataclass
class Managed:
    """One instance and the task serving it."""

    instance: Instance
    server: ProcessServer | None = None
    scope: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    group: ProcessPVs | None = None  # its PVs, while the host's CA server runs
    manager: ManagerPVs | None = None  # its PREFIX:MAN:{name}_control and _hb (--manager-pvs)


class Host:
    def __init__(self, layout: Layout, args: argparse.Namespace, web: wiring.WebSettings | None = None) -> None:
        self.layout = layout
        self.args = args
        self.web = web
        self.logdir = args.log_dir or layout.logdir
        self.managed: dict[str, Managed] = {}
        self.pvs: PVServer | None = None
        self.changed = trio.lowlevel.ParkingLot()
        self.config_problem: str | None = None  # why the last reload was not applied
        self.extras = Supervisor(self.announce, self.changed.unpark_all)
        self._nursery: trio.Nursery | None = None
        self._reloads, self._reload_requests = trio.open_memory_channel[None](1)

    def autostart_servers(self) -> list[ProcessServer]:
        """The servers of the running instances marked ``autostart`` (what ``ALL`` commands)."""
        return [m.server for m in self.managed.values() if m.server is not None and m.instance.autostart]

    def announce(self, text: str) -> None:
        """An ``@@@`` line on every instance's console and in its log."""
        for managed in list(self.managed.values()):
            if managed.server is not None:
                managed.server.announce(text)

    # -- the browser console's fleet (rule 8) ---------------------------------------------

    def names(self) -> list[str]:
        """The configured instances, sorted."""
        return sorted(self.managed)

    def get(self, name: str) -> ProcessServer | None:
        """The server of instance ``name``, or None (unknown, or retrying after a failure)."""
        managed = self.managed.get(name)
        return managed.server if managed is not None else None

    async def wait_change(self) -> None:
        """Wait for the next change of an instance's status or of the set of instances."""
        await self.changed.park()

    async def _serve_web(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.web is not None
        await wiring.serve_host_web(self, self.web, f"IOCs on {socket.gethostname()}", task_status=task_status)

    # -- configuration --------------------------------------------------------------------

    def wanted(self) -> dict[str, Instance]:
        found = {i.name: i for i in instances(self.layout)}
        if self.args.only:
            found = {name: i for name, i in found.items() if name in self.args.only}
        return found

    def config_for(self, instance: Instance):  # type: ignore[no-untyped-def]
        os.makedirs(self.layout.instance_dir(instance.name), exist_ok=True)
        logfile = instance.logfile or os.path.join(self.logdir, f"{instance.name}.log")
        os.makedirs(os.path.dirname(os.path.abspath(logfile)), exist_ok=True)
        argv = instance.argv(self.layout, logfile=logfile)
        config = parse_args(argv, cwd=instance.chdir).config
        return dataclasses.replace(
            config,
            pv_prefix=None,  # the host serves every instance's PVs from one CA server
            environment={**instance.child_environment(), **(config.environment or {})},
            wait=config.wait or not instance.autostart,
            browser_history=BROWSER_HISTORY if self.web is not None else config.browser_history,
            program_name="pyprocserv",
        )

    def log_for(self, instance: Instance, path: str | None) -> LogFile | None:
        """The instance's log file, rotated by size (its own keys, else ``run``'s options)."""
        if not path or path == "-":
            return None
        # Both checked already: the keys when the configuration was read, the options by argparse.
        max_bytes = parse_size(instance.log_max_bytes) if instance.log_max_bytes else self.args.log_max_bytes
        backups = int(instance.log_backups) if instance.log_backups else self.args.log_backups
        log = LogFile(path, max_bytes=max_bytes, backups=backups)
        if log.failing:
            print(f"pyprocserv-manage: {instance.name}: unable to open log file {path}: {log.failing}",
                  file=sys.stderr)
        return log

    def pv_prefix(self, instance: Instance) -> str | None:
        if instance.pv_prefix:
            return instance.pv_prefix
        if self.args.pv_prefix:
            return f"{self.args.pv_prefix}{instance.name}:"
        return None

    # -- instances ------------------------------------------------------------------------

    def start(self, instance: Instance) -> None:
        managed = Managed(instance)
        self.managed[instance.name] = managed
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, managed)

    async def _serve(self, managed: Managed) -> None:
        instance = managed.instance
        try:
            with managed.scope:
                while True:
                    log = None
                    try:
                        config = self.config_for(instance)
                        log = self.log_for(instance, config.logfile)
                        server = managed.server = ProcessServer(config, log=log, extras=wiring.server_extras(config))
                        async with trio.open_nursery() as nursery:

                            async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
                                await server.run(task_status=task_status)
                                nursery.cancel_scope.cancel()

                            await nursery.start(run)
                            self._add_pvs(managed)
                            self.changed.unpark_all()
                            nursery.start_soon(self._watch, server)
                        return  # ^Q or oneshot: the instance has ended
                    except CliStop as exc:
                        print(f"pyprocserv-manage: {instance.name}: {exc.message.strip()}; retrying in "
                              f"{RETRY_AFTER:g} s", file=sys.stderr)
                    except Exception as exc:
                        expected = all(isinstance(e, OSError) for e in _leaves(exc))
                        print(f"pyprocserv-manage: {instance.name}: {explain(exc)}; retrying in "
                              f"{RETRY_AFTER:g} s", file=sys.stderr)
                        if not expected:  # a bug of ours: show where
                            traceback.print_exc()
                    finally:
                        if log is not None:
                            log.close()  # the server closes it, unless it failed before opening its outputs
                        self._remove_pvs(managed)
                        managed.server = None
                        self.changed.unpark_all()
                    await trio.sleep(RETRY_AFTER)
        finally:
            managed.done.set()
            if self.managed.get(instance.name) is managed:
                del self.managed[instance.name]
            self.changed.unpark_all()

    async def _watch(self, server: ProcessServer) -> None:
        generation = None
        while True:
            generation = await server.wait_status_change(generation)
            self.changed.unpark_all()

    async def stop(self, name: str) -> None:
        managed = self.managed.get(name)
        if managed is None:
            return
        if managed.server is not None:
            managed.server.shutdown()
            with trio.move_on_after(15):
                await managed.done.wait()
        managed.scope.cancel()
        await managed.done.wait()

    async def apply(self, wanted: dict[str, Instance]) -> None:
        """Make the running instances match the configuration; leave the unchanged alone."""
        for name in list(self.managed):
            if name not in wanted or wanted[name] != self.managed[name].instance:
                await self.stop(name)
        for name, instance in wanted.items():
            if name not in self.managed:
                self.start(instance)

    # -- PVs --------------------------------------------------------------------------------

    def _add_pvs(self, managed: Managed) -> None:
        self._add_manager_pvs(managed)
        prefix = self.pv_prefix(managed.instance)
        if self.pvs is None or prefix is None or managed.server is None or managed.group is not None:
            return
        managed.group = wiring.process_pvs(managed.server, prefix, self.write_hosts)
        self.pvs.add(managed.group)

    def _add_manager_pvs(self, managed: Managed) -> None:
        prefix = self.args.manager_pvs
        if self.pvs is None or not prefix or managed.server is None or managed.manager is not None:
            return
        managed.manager = wiring.manager_pvs(managed.server, prefix, managed.instance.name, self.write_hosts,
                                             managed.instance.time_pv)
        self.pvs.add(managed.manager)

    def _remove_pvs(self, managed: Managed) -> None:
        if managed.manager is not None:
            managed.manager.close()
            if self.pvs is not None:
                self.pvs.remove(managed.manager)
            managed.manager = None
        if managed.group is not None:
            managed.group.close()
            if self.pvs is not None:
                self.pvs.remove(managed.group)
            managed.group = None

    @property
    def write_hosts(self) -> tuple[str, ...]:
        return tuple(w for w in self.args.pv_write_hosts.replace(",", " ").split() if w)

    # -- running --------------------------------------------------------------------------

    async def _serve_pvs(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One CA server for the host's PVs and every instance's (a supervised extra)."""
        pvs = wiring.pv_server(self.args.pv_interface)
        groups = wiring.host_groups(self, self.args.pv_prefix, self.args.manager_pvs, self.write_hosts)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(pvs.run, groups)
                self.pvs = pvs
                for managed in list(self.managed.values()):
                    self._add_pvs(managed)
                task_status.started()
        finally:
            self.pvs = None
            for managed in self.managed.values():
                if managed.group is not None:
                    managed.group.close()
                    managed.group = None  # it went with that server; a new one makes its own
                if managed.manager is not None:
                    managed.manager.close()
                    managed.manager = None

    async def _reload(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the configuration now and after each SIGHUP (a supervised extra)."""
        task_status.started()
        while True:
            try:
                wanted = self.wanted()
            except ConfigError as exc:
                self.config_problem = f"configuration not applied: {exc}"
                print(f"pyprocserv-manage: {self.config_problem}; every instance goes on as it was",
                      file=sys.stderr, flush=True)
            else:
                self.config_problem = None
                await self.apply(wanted)
                for managed in list(self.managed.values()):
                    if managed.server is not None:
                        managed.server.reopen_log()
            self.changed.unpark_all()
            await self._reload_requests.receive()

    async def main(self) -> int:
        # A configuration that cannot be read at start is a ConfigError here, before anything runs.
        serve_pvs = self.args.pv_prefix or self.args.manager_pvs or any(i.pv_prefix for i in self.wanted().values())
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if serve_pvs:
                    await nursery.start(self.extras.run, "PV server", self._serve_pvs)
                if self.web is not None:
                    await nursery.start(self.extras.run, "web console", self._serve_web)
                await nursery.start(self.extras.run, "configuration reload", self._reload)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        try:
                            self._reloads.send_nowait(None)
                        except trio.WouldBlock:
                            pass  # one is pending already: it will read the newest files
                    else:
                        break
                for name in list(self.managed):
                    nursery.start_soon(self.stop, name)
                while self.managed:
                    await self.changed.park()
                nursery.cancel_scope.cancel()
        return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def run_host(layout: Layout, args: argparse.Namespace) -> int:
    prog = "pyprocserv-manage"
    try:
        web = wiring.host_web(args, prog)
    except CliError as exc:  # rule 8: pyprocserv --web's rules and words
        print(exc.message, end="", file=sys.stderr)
        return 1
    problem = wiring.check_web_support(web) if web is not None else None
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)
        return 1
    return trio.run(Host(layout, args, web).main)  # a ConfigError at start: manage.main says it
