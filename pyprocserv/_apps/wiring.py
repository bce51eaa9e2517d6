"""The one place the programs meet the optional layers: Channel Access (``_ca``) and the web (``_web``).

Rules:
1. The programs choose a server's extras here, from its configuration, and hand them to the
   server (``ProcessServer(config, extras=server_extras(config))``): the single server
   (``main``) and every host-mode instance (``host``) alike. The server only runs what it is
   given, in the order given, each under its supervisor; it never imports ``_ca``.
2. Host mode's own CA server and the PV groups it adds per instance are made here too, so a
   PV group is built in one place whichever program serves it.
3. ``_ca`` (and so caproto) is imported only when a configuration asks for PVs or the
   watchdog: a server without them never imports caproto. Likewise ``_web``'s ASGI stack
   (starlette, anycorn) only for ``--web``.
4. Host mode's browser console (``pyprocserv-manage run --web ...``) takes the options of
   ``pyprocserv --web``, converted and checked by the same code with the same messages
   (``_core.cli.web_options``), and serves the whole host as one fleet (``_web.fleet``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .._core.cli import web_options
from .._shell.extras import ExtraSpec, Root

if TYPE_CHECKING:
    from .._ca.hostpvs import HostView, ManagerPVs
    from .._ca.pvs import ProcessPVs, PVServer
    from .._core.config import Config
    from .._web.extra import WebOptions
    from .._web.fleet import Fleet


def check_pv_support(config: Config) -> str | None:
    """What stops the PV channel or the watchdog from working (caproto, the write hosts), or None."""
    if config.pv_prefix is None and config.watch is None:
        return None
    try:
        from .._ca import pvs
    except ImportError as exc:
        return f"the PV channel needs caproto ({exc}): pip install 'pyprocserv[pv]'"
    try:
        pvs.WritePolicy(config.pv_write_hosts)
    except ValueError as exc:
        return str(exc)
    return None


def check_web_support(config: WebOptions) -> str | None:
    """What stops the browser console (``--web``) from working, or None (a ``Config`` or host
    mode's :class:`WebSettings`)."""
    if config.web is None:
        return None
    from .._web import extra

    return extra.problem(config)


def server_extras(config: Config) -> list[ExtraSpec]:
    """The extras ``config`` asks for, in start order: the PV server (the server reports itself
    started once its port is bound), then the watchdog (started beside it), then the browser
    console (started once its port is bound)."""
    extras = []
    if config.pv_prefix is not None:
        extras.append(_pv_server(config))
    if config.watch is not None:
        extras.append(_watchdog())
    if config.web is not None:
        extras.append(_web_console())
    return extras


def _web_console() -> ExtraSpec:
    async def serve(root: Root, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from .._web import extra

        await extra.run(root, task_status=task_status)

    return ExtraSpec("web console", serve, awaited=True)


def _pv_server(config: Config) -> ExtraSpec:
    from .._ca import pvs

    policy = pvs.WritePolicy(config.pv_write_hosts)

    async def serve(root: Root, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        assert root.config.pv_prefix is not None
        group = pvs.ProcessPVs(root, root.config.pv_prefix, policy, root.config.pv_description)
        try:
            await pvs.serve([group], root.config.pv_interfaces, task_status=task_status)
        finally:
            group.close()

    return ExtraSpec("PV server", serve, awaited=True)


def _watchdog() -> ExtraSpec:
    from .._ca import camonitor

    async def watch(root: Root, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert root.config.watch is not None
        task_status.started()
        await camonitor.run_watchdog(root, root.config.watch)

    return ExtraSpec("watchdog", watch)


# -- host mode ------------------------------------------------------------------------------------


def pv_server(interface: str) -> PVServer:
    """Host mode's one CA server, for the host's PVs and every instance's."""
    from .._ca.pvs import PVServer

    return PVServer((interface,))


def host_groups(host: HostView, pv_prefix: str | None, manager_prefix: str | None,
                write_hosts: tuple[str, ...]) -> list:
    """The host's own PV groups: ``HOST:`` (``--pv-prefix``) and ``PREFIX:MAN:all`` (``--manager-pvs``)."""
    from .._ca.hostpvs import HostPVs, ManagerAllPVs
    from .._ca.pvs import WritePolicy

    groups: list = [HostPVs(host, pv_prefix, WritePolicy(write_hosts))] if pv_prefix else []
    if manager_prefix:
        groups.append(ManagerAllPVs(host, manager_prefix, WritePolicy(write_hosts)))
    return groups


def process_pvs(server: Root, prefix: str, write_hosts: tuple[str, ...]) -> ProcessPVs:
    """One instance's procServControl PVs, for host mode's CA server."""
    from .._ca.pvs import ProcessPVs, WritePolicy

    return ProcessPVs(server, prefix, WritePolicy(write_hosts))


def manager_pvs(server: Root, prefix: str, name: str, write_hosts: tuple[str, ...],
                time_pv: str | None) -> ManagerPVs:
    """One instance's ``PREFIX:MAN:{name}_control`` and ``_hb`` (``--manager-pvs``)."""
    from .._ca.hostpvs import ManagerPVs
    from .._ca.pvs import WritePolicy

    return ManagerPVs(server, prefix, name, WritePolicy(write_hosts), time_pv=time_pv)


@dataclass(frozen=True)
class WebSettings:
    """``pyprocserv-manage run``'s browser console options, as a ``Config`` holds pyprocserv's."""

    web: tuple[str, int] | None = None
    web_users: str | None = None
    web_cert: str | None = None
    web_key: str | None = None
    web_base: str = "/"
    web_proxies: tuple[str, ...] = ()
    web_proxy_user: str | None = None
    web_origin: str | None = None


WEB_OPTIONS = ("web", "web-users", "web-cert", "web-key", "web-base", "web-proxy", "web-proxy-user", "web-origin")


def host_web(args: argparse.Namespace, prog: str) -> WebSettings | None:
    """``run``'s ``--web*`` options, checked as ``pyprocserv``'s (rule 4); None without them.
    Raises ``CliError`` with pyprocserv's message for a combination it would refuse."""
    given = {name: getattr(args, name.replace("-", "_")) for name in WEB_OPTIONS}
    given = {name: text for name, text in given.items() if text is not None}
    if not given:
        return None
    return WebSettings(**web_options(given, prog))  # type: ignore[arg-type]


async def serve_host_web(fleet: Fleet, settings: WebSettings, title: str, *,
                         task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """The browser console of every instance of a host (rule 4), until cancelled."""
    from .._web import extra

    await extra.serve(fleet, settings, title=title, task_status=task_status)
