"""systemd units for configured instances, and the conserver configuration.

Differences from procServUtils' generator, each a fix of a known defect:
* ``Type=notify``: systemd knows the IOC is up once the endpoints are bound and the child runs;
  ``ExecReload`` reopens the log; ``WatchdogSec=`` when the instance asks for it.
* A ``.socket`` unit per instance (unless ``socket_activation = 0``): systemd holds the
  control endpoint, so a restart never fails on a busy port (procServ #35).
* ``ExecStart`` never says ``None``: without a ``pyprocserv-launcher`` on PATH it runs the
  launcher module with this Python (procServ #46).
* The conserver file lists instances only (``instance = 0`` is skipped) and uses the real
  control endpoint, a TCP port as well as a UNIX socket.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

from .._core.endpoints import TcpEndpoint, parse_endpoint
from .instances import Instance, Layout


def launcher_command(layout: Layout) -> str:
    found = shutil.which("pyprocserv-launcher")
    base = found if found else f"{sys.executable} -m pyprocserv._apps.launch"
    return " ".join([base, *layout.mode_flag()])


def _socket_listen(instance: Instance, layout: Layout) -> str:
    """ListenStream= for the control endpoint: what pyprocserv itself would bind (loopback
    unless the instance's options say --allow, as procServ)."""
    endpoint = parse_endpoint(instance.control_endpoint(layout))
    if isinstance(endpoint, TcpEndpoint):
        allow = "--allow" in shlex.split(instance.options)
        if endpoint.ipv6:
            return f"[{endpoint.host if allow else '::1'}]:{endpoint.port}"
        if allow:
            return f"{endpoint.host}:{endpoint.port}" if endpoint.host else str(endpoint.port)
        return f"127.0.0.1:{endpoint.port}"
    path = endpoint.path
    if layout.user and not layout.conf_dir:
        runtime = layout.rundir.rstrip("/") + "/"
        if path.startswith(runtime):
            path = "%t/" + path[len(runtime):]
    return "@" + path[1:] if endpoint.abstract else path


def service_unit(instance: Instance, layout: Layout) -> str:
    name = instance.name
    lines = [
        "[Unit]",
        f"Description=pyprocserv for {name}",
        "After=network.target remote-fs.target",
        f"ConditionPathIsDirectory={instance.chdir}",
    ]
    if instance.host:
        lines.append(f"ConditionHost={instance.host}")
    if instance.socket_activation:
        lines += [f"Requires=procserv-{name}.socket", f"After=procserv-{name}.socket"]
    lines += ["", "[Service]", "Type=notify", "NotifyAccess=main"]
    if instance.env_file:
        lines.append(f"EnvironmentFile={instance.env_file}")
    if instance.environment:
        lines.append(f"Environment={instance.environment}")
    lines += [
        f"ExecStart={launcher_command(layout)} {name}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"RuntimeDirectory=procserv-{name}",
        "RuntimeDirectoryPreserve=yes",
        "StandardOutput=journal",
        "StandardError=inherit",
        f"SyslogIdentifier=procserv-{name}",
    ]
    if instance.watchdog_sec:
        lines.append(f"WatchdogSec={instance.watchdog_sec}")
    if not layout.user:
        lines += ["", f"User={instance.user}", f"Group={instance.group}"]
    lines += ["", "[Install]", "WantedBy=default.target" if layout.user else "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def socket_unit(instance: Instance, layout: Layout) -> str:
    name = instance.name
    lines = [
        "[Unit]",
        f"Description=pyprocserv control endpoint for {name}",
        "",
        "[Socket]",
        f"ListenStream={_socket_listen(instance, layout)}",
        "FileDescriptorName=control",
        f"Service=procserv-{name}.service",
        "SocketMode=0666",  # procServ's mode for its UNIX sockets
    ]
    if not layout.user:
        lines += [f"SocketUser={instance.user}", f"SocketGroup={instance.group}"]
    lines += ["", "[Install]", "WantedBy=sockets.target", ""]
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_units(outdir: str, instances: list[Instance], layout: Layout) -> list[str]:
    """Write ``procserv-NAME.service`` (and ``.socket``) for each instance; return the paths."""
    os.makedirs(outdir, exist_ok=True)
    written = []
    for instance in instances:
        path = os.path.join(outdir, f"procserv-{instance.name}.service")
        _write(path, service_unit(instance, layout))
        written.append(path)
        if instance.socket_activation:
            path = os.path.join(outdir, f"procserv-{instance.name}.socket")
            _write(path, socket_unit(instance, layout))
            written.append(path)
    return written


def conserver_config(instances: list[Instance], layout: Layout, master: str = "localhost") -> str:
    """``console NAME { ... }`` blocks, one per instance, for conserver's ``#include``."""
    blocks = []
    for instance in instances:
        endpoint = parse_endpoint(instance.control_endpoint(layout))
        if isinstance(endpoint, TcpEndpoint):
            # The address we bind, not 'localhost': that may resolve to ::1 first, and conserver
            # then gives up on the console instead of trying 127.0.0.1.
            where = f"    type host;\n    host {endpoint.host or '127.0.0.1'};\n    port {endpoint.port};\n"
        else:
            where = f"    type uds;\n    uds {endpoint.path};\n"
        blocks.append(f"\nconsole {instance.name} {{\n    master {master};\n{where}}}\n")
    return "".join(blocks)


def write_file(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write(path, text)
