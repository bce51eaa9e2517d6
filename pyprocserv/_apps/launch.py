"""``pyprocserv-launcher [--user|--system] [--conf-dir DIR] [-d] NAME``: run one configured instance.

A drop-in for procServUtils' procServ-launcher: it checks the instance, changes to its
directory and execs ``pyprocserv`` with the launcher's options (the process stays the one
systemd started, so ``Type=notify`` and ``MAINPID`` are right). The messages are
procServ-launcher's, with a line end.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from typing import Sequence

from .instances import ConfigError, Instance, Layout, read_config
from .logs import log_to_stderr


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pyprocserv-launcher",
                                     description=__doc__.splitlines()[0].replace("``", ""))  # plain text
    parser.add_argument("name", help="instance name")
    parser.add_argument("--user", action="store_true", default=os.geteuid() != 0, help="user configuration")
    parser.add_argument("--system", dest="user", action="store_false", help="system configuration")
    parser.add_argument("--conf-dir", help="read the configuration from this directory instead")
    parser.add_argument("-d", "--debug", action="count", default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    layout = Layout(user=args.user, conf_dir=args.conf_dir)
    try:
        config = read_config(layout)
    except ConfigError as exc:
        sys.stderr.write(f"pyprocserv-launcher: cannot read the configuration: {exc}\n")
        return 1
    name = args.name
    if not config.has_section(name):
        sys.stderr.write(f"Instance '{name}' not found\n")
        return 1
    if not config.getboolean(name, "instance"):
        sys.stderr.write(f"'{name}' not an instance\n")
        return 1
    if not config.has_option(name, "command"):
        sys.stderr.write(f"instance '{name}' missing command=\n")
        return 1
    instance = Instance.from_section(config, name)
    os.makedirs(layout.instance_dir(name), exist_ok=True)  # systemd's RuntimeDirectory=, by hand
    env = instance.child_environment()
    env.update(os.environ)  # the caller's variables win, as in procServ-launcher
    argv_out = instance.argv(layout, debug=args.debug > 1)
    program = shutil.which("pyprocserv", path=env.get("PATH"))
    exe = program or sys.executable
    full = argv_out if program else [sys.executable, "-m", "pyprocserv", *argv_out[1:]]
    if args.debug:
        sys.stderr.write(f"in {instance.chdir} exec: {' '.join(map(shlex.quote, full))}\n")
    os.chdir(instance.chdir)
    os.execve(exe, full, env)
    return 2  # not reached


def entrypoint() -> None:
    log_to_stderr()
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
