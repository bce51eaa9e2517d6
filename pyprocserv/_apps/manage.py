"""``pyprocserv-manage``: a drop-in for procServUtils' ``manage-procs``, and host mode.

Same configuration files, subcommands and outputs as manage-procs, without its known defects
(behaviour §8, §9): ``add``'s own options may also follow NAME COMMAND (everything after
``--`` is the command's), a bare command stays a PATH lookup instead of becoming CHDIR/cmd,
generated units never say ``ExecStart=None``, ``write-procs-cf`` lists instances only, and
``remove`` works on Python 3.12. ``status --table`` adds pid, uptime, starts and clients;
``run`` serves every instance from one process (host mode); ``logs`` lists and shows the
instances' (rotated) logs; ``restart`` restarts one through systemd or its control endpoint.

Rules:
1. ``--conf-dir DIR`` touches nothing outside DIR: no systemctl unless ``--systemd`` asks for
   it (its units would be enabled into /etc/systemd/system, pointing into DIR).
2. A systemctl that fails or is missing is one line on stderr and exit 1, never a traceback.
3. Before its COMMAND, ``add`` takes only its own options: anything else starting with ``-`` is
   an error, so a typo never becomes an instance named ``-p``. After COMMAND, such words are the
   command's (``add ioc /bin/sh -c ...``, as with manage-procs).
"""

from __future__ import annotations

import argparse
import configparser
import errno
import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Sequence

from .._shell.files import replace_file
from .instances import ConfigError, Layout, instances
from .logs import log_to_stderr
from .units import conserver_config, write_file, write_units

log = logging.getLogger("pyprocserv.manage")
SYSTEMCTL = os.environ.get("PYPROCSERV_SYSTEMCTL", "/bin/systemctl")
TELNET = "/usr/bin/telnet"
SOCAT = "/usr/bin/socat"


class SystemctlFailed(Exception):
    """systemctl could not be run or failed; the text is the one line for stderr (rule 2)."""


def _systemctl(layout: Layout, *args: str, check: bool = True) -> int:
    """Run systemctl (stdout passes through); with ``check``, a failure is :class:`SystemctlFailed`."""
    command = [SYSTEMCTL, "--user" if layout.user else "--system", *args]
    shown = " ".join(["systemctl", *command[1:]])
    log.info("%s", shown)
    try:
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError as exc:
        raise SystemctlFailed(f"cannot run {SYSTEMCTL}: {exc.strerror}") from None
    if done.returncode and check:
        said = done.stderr.strip().splitlines()  # the last line says why (e.g. no bus)
        raise SystemctlFailed(f"{shown} failed (exit {done.returncode})" + (f": {said[-1]}" if said else ""))
    sys.stderr.write(done.stderr)
    return done.returncode


def _without_systemctl(args: argparse.Namespace) -> str:
    """Why no systemctl runs (rule 1), for messages."""
    return "with --no-systemd" if args.explicit_no_systemd else "with --conf-dir (add --systemd)"


def _read_info(layout: Layout, name: str) -> tuple[int | None, list[str]]:
    pid = None
    endpoints = []
    try:
        with open(os.path.join(layout.instance_dir(name), "info")) as f:
            for line in map(str.strip, f):
                if line.startswith("pid:"):
                    pid = int(line[4:])
                elif line.startswith("tcp:"):
                    endpoints.append(line[4:])
                elif line.startswith("unix:"):
                    endpoints.append(line[5:])
    except (OSError, ValueError):
        pass
    return pid, endpoints


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, we may not signal it
    return True


def _age(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


def cmd_status(layout: Layout, args: argparse.Namespace) -> int:
    rows = []
    for instance in instances(layout):
        pid, endpoints = _read_info(layout, instance.name)
        if pid is None:
            state = "Stopped"
        else:
            state = "Running" if _alive(pid) else "Dead"
        if not args.table:
            line = f"{instance.name} {state}"
            if state == "Running":
                line += "\t" + " ".join(endpoints)
            print(line)
            continue
        status: dict = {}
        if state == "Running":
            try:
                with open(os.path.join(layout.instance_dir(instance.name), "status")) as f:
                    status = json.load(f)
            except (OSError, ValueError):
                status = {}
        child = status.get("pid")
        started = status.get("child_started_at")
        rows.append([
            instance.name,
            state if state != "Running" or status.get("running", True) else "Running (child shut down)",
            str(child) if child else "-",
            _age(time.time() - started) if child and started else "-",
            str(max(0, status.get("start_count", 1) - 1)) if status else "-",
            str(status.get("users", "-")) if status else "-",
            " ".join(endpoints) or "-",
        ])
    if args.table:
        header = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CLIENTS", "ENDPOINTS"]
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        for row in [header] + rows:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_list(layout: Layout, args: argparse.Namespace) -> int:
    if args.no_systemd:  # the configured instances, as their units would be named
        for instance in instances(layout):
            print(f"procserv-{instance.name}.service {instance.name} {instance.command}")
        return 0
    extra = ["--all"] if args.all else []  # manage-procs passes an empty argument here
    return _systemctl(layout, "list-units", *extra, "procserv-*")


def cmd_start(layout: Layout, args: argparse.Namespace) -> int:
    if args.no_systemd:
        log.error("pyprocserv-manage: start needs systemctl, none runs %s", _without_systemctl(args))
        return 1
    return _systemctl(layout, "start", f"procserv-{args.name}.service")


def cmd_stop(layout: Layout, args: argparse.Namespace) -> int:
    if args.no_systemd:
        log.error("pyprocserv-manage: stop needs systemctl, none runs %s", _without_systemctl(args))
        return 1
    return _systemctl(layout, "stop", f"procserv-{args.name}.service")


ADD_FLAGS = [  # (short, long, attribute, metavar or None for a flag, help)
    ("-C", "--chdir", "chdir", "DIR", "the instance's working directory (default: the current one)"),
    ("-P", "--port", "port", "ENDPOINT", "control endpoint (default: a UNIX socket in the runtime directory)"),
    ("-U", "--user", "username", "USER", "run as USER (system units)"),
    ("-G", "--group", "group", "GROUP", "run as GROUP (system units)"),
    ("-e", "--environment", "environment", "VAR=value", "set a variable (repeat for more)"),
    ("-E", "--env-file", "env_file", "FILE", "read variables from FILE"),
    ("-f", "--force", "force", None, "replace an existing instance"),
    ("-A", "--autostart", "autostart", None, "start the instance's unit now"),
]
ADD_OPTIONS = {  # option -> (attribute, takes a value)
    option: (attribute, metavar is not None)
    for short, long, attribute, metavar, _ in ADD_FLAGS
    for option in (short, long)
}


class AddUsageError(Exception):
    """A word ``add`` cannot take; main() prints it with add's usage, exit 2."""


class AddHelpRequested(Exception):
    """``add -h``/``--help`` before COMMAND: main() has argparse print add's options."""


def parse_add(words: Sequence[str]) -> argparse.Namespace:
    """``add``'s options anywhere before ``--``; NAME, COMMAND, then the command's arguments.

    A word before COMMAND that starts with ``-`` and is not one of add's options is an error
    (rule 3); after COMMAND it is one of the command's arguments (``-h`` too).
    """
    args = argparse.Namespace(chdir=os.getcwd(), port=None, username=None, group=None, environment=[],
                              env_file=None, force=False, autostart=False, name=None, command=None, args=[])
    words = list(words)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            rest = words[i:]
            if args.name is None and rest:
                args.name, rest = rest[0], rest[1:]
            if args.command is None and rest:
                args.command, rest = rest[0], rest[1:]
            args.args += rest
            break
        option, eq, value = word.partition("=")
        if word in ("-h", "--help") and args.command is None:
            raise AddHelpRequested
        if option in ADD_OPTIONS:
            attribute, takes_value = ADD_OPTIONS[option]
            if takes_value:
                if not eq:
                    if i >= len(words):
                        raise AddUsageError(f"option {option} needs a value")
                    value = words[i]
                    i += 1
                if attribute == "environment":
                    args.environment.append(value)
                else:
                    setattr(args, attribute, value)
            else:
                setattr(args, attribute, True)
        elif word.startswith("-") and word != "-" and args.command is None:
            raise AddUsageError(f"unknown option {option} (add --help lists add's options; "
                                "a name or command starting with - goes after --)")
        elif args.name is None:
            args.name = word
        elif args.command is None:
            args.command = word
        else:
            args.args.append(word)
    if args.name is None or args.command is None:
        raise AddUsageError("NAME and COMMAND are required")
    return args


def cmd_add(layout: Layout, args: argparse.Namespace) -> int:
    add = parse_add(args.words)
    gendir = layout.gendir
    path = os.path.join(gendir, f"{add.name}.conf")
    if os.path.exists(path) and not add.force:
        log.error("Instance already exists @ %s", path)
        return 1
    chdir = os.path.abspath(add.chdir)
    command = add.command
    if "/" in command:  # a path: relative to the instance's directory; a bare name stays a PATH lookup
        command = os.path.abspath(os.path.join(chdir, command))
    text = f"\n[{add.name}]\ncommand = {' '.join(shlex.quote(w) for w in [command, *add.args])}\nchdir = {chdir}\n"
    if add.username:
        text += f"user = {add.username}\n"
    if add.group:
        text += f"group = {add.group}\n"
    if add.port:
        text += f"port = {add.port}\n"
    if add.environment:
        text += "environment = " + " ".join(f'"{e}"' for e in add.environment) + "\n"
    if add.env_file:
        env_file = os.path.abspath(add.env_file)
        if not os.path.exists(env_file):
            log.error('File not found: "%s"', env_file)
            return 1
        text += f"env_file = {env_file}\n"
    write_file(path, text)
    instance = next(i for i in instances(layout) if i.name == add.name)
    units = write_units(gendir, [instance], layout)
    if not args.no_systemd:
        _systemctl(layout, "enable", *units)
        _systemctl(layout, "daemon-reload")
        if add.autostart:
            return cmd_start(layout, argparse.Namespace(**{**vars(args), "name": add.name}))
    flags = " ".join(layout.mode_flag())
    if layout.conf_dir and args.no_systemd:  # no unit enabled: host mode is what serves it
        print(f"# pyprocserv-manage {flags} run")
    else:  # a hint that works as printed: under --conf-dir, start needs --systemd again
        print(f"# pyprocserv-manage {flags}{' --systemd' if layout.conf_dir else ''} start {add.name}")
    return 0


def cmd_remove(layout: Layout, args: argparse.Namespace) -> int:
    for path in layout.config_files():
        parser = configparser.ConfigParser({"instance": "1"})
        with open(path) as f:
            parser.read_file(f)  # readfp() is gone in Python 3.12
        if not parser.has_section(args.name) or not parser.getboolean(args.name, "instance"):
            continue
        if not args.force and sys.stdin.isatty():
            while True:
                answer = input(f"Remove section '{args.name}' from {path} ? [yN]").strip().upper()
                if answer == "Y":
                    break
                if answer in ("N", ""):
                    return 1
        if len(parser.sections()) == 1:
            os.remove(path)
        else:
            parser.remove_section(args.name)
            parser.remove_option("DEFAULT", "instance")
            text = io.StringIO()
            parser.write(text)
            replace_file(path, text.getvalue())
    if not args.no_systemd:  # stop and disable fail for a unit never enabled: that is fine
        _systemctl(layout, "stop", f"procserv-{args.name}.service", check=False)
        _systemctl(layout, "disable", f"procserv-{args.name}.service", f"procserv-{args.name}.socket",
                   check=False)
        _systemctl(layout, "daemon-reload")
    for suffix in ("service", "socket"):
        try:
            os.remove(os.path.join(layout.gendir, f"procserv-{args.name}.{suffix}"))
        except OSError:
            pass
    return 0


def cmd_write_procs_cf(layout: Layout, args: argparse.Namespace) -> int:
    if args.reload and args.no_systemd:  # refused before writing: all or nothing
        log.error("pyprocserv-manage: write-procs-cf -R: no systemctl %s", _without_systemctl(args))
        return 1
    out = args.out or os.path.join(layout.conf_dir or "/etc", "conserver", "procs.cf")  # rule 1
    write_file(out, conserver_config(instances(layout), layout, master=args.master))
    if args.reload:
        return _systemctl(layout, "reload", "conserver-server.service")
    print(f"# systemctl {'--user' if layout.user else '--system'} reload conserver-server.service")
    return 0


def cmd_generate(layout: Layout, args: argparse.Namespace) -> int:
    for path in write_units(args.outdir, instances(layout), layout):
        log.info("wrote %s", path)
    return 0


def cmd_attach(layout: Layout, args: argparse.Namespace) -> int:
    pid, endpoints = _read_info(layout, args.name)
    if pid is None:
        log.error("%s is not an active %s procServ", args.name, "user" if layout.user else "system")
        return 1
    for endpoint in endpoints:
        if not endpoint.startswith("/") and not endpoint.startswith("@"):
            host, _, port = endpoint.rpartition(":")
            if os.path.isfile(TELNET):
                os.execv(TELNET, [TELNET, host.strip("[]"), port, *args.extra])
        elif os.path.isfile(SOCAT) and not endpoint.startswith("@"):
            os.execv(SOCAT, [SOCAT, "-,raw,echo=0", "unix-connect:" + endpoint])
    if endpoints:  # no telnet or socat: our own client
        from .attach import attach

        return attach(endpoints[0])
    sys.exit(f"No tool to connect to {args.name} (attach command needs telnet and/or socat)")


def cmd_run(layout: Layout, args: argparse.Namespace) -> int:
    from .host import run_host

    return run_host(layout, args)


# -- logs and restart (host mode's instances as much as units) ------------------------------------


def _log_path(layout: Layout, name: str, log_dir: str | None) -> str:
    """Where host mode writes the instance's log (its ``logfile`` key, else LOG_DIR/NAME.log)."""
    for instance in instances(layout):
        if instance.name == name and instance.logfile:
            return instance.logfile
    return os.path.join(log_dir or layout.logdir, f"{name}.log")


def cmd_logs(layout: Layout, args: argparse.Namespace) -> int:
    from .._shell.logfile import follow, log_files, tail

    if args.name is None:  # every instance's log files, newest first, with their sizes
        for instance in instances(layout):
            files = log_files(_log_path(layout, instance.name, args.log_dir))
            sizes = " ".join(f"{os.path.basename(f)} {_human_size(os.path.getsize(f))}" for f in files)
            print(f"{instance.name}\t{sizes or 'no log'}\t{os.path.dirname(files[0]) if files else ''}".rstrip())
        return 0
    if args.name not in {i.name for i in instances(layout)}:
        print(f"pyprocserv-manage logs: no instance named '{args.name}'", file=sys.stderr)
        return 1
    path = _log_path(layout, args.name, args.log_dir)
    files = log_files(path)
    if not files and not args.follow:
        print(f"pyprocserv-manage logs: {args.name} has no log at {path}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    start = os.path.getsize(path) if os.path.exists(path) else 0
    out.write(tail(files, args.lines))
    out.flush()
    if not args.follow:
        return 0
    while not os.path.exists(path):
        time.sleep(0.2)  # not written yet: follow from its start
    try:
        for data in follow(path, lambda: time.sleep(0.2), start=start):
            out.write(data)
            out.flush()
    except KeyboardInterrupt:
        pass
    return 0


def _human_size(size: int) -> str:
    for unit in ("B", "K", "M"):
        if size < 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}G"


def cmd_restart(layout: Layout, args: argparse.Namespace) -> int:
    """systemd: ``systemctl restart``. ``--no-systemd`` (host mode): over the control endpoint."""
    if not args.no_systemd:
        return _systemctl(layout, "restart", f"procserv-{args.name}.service")
    pid, endpoints = _read_info(layout, args.name)
    if pid is None or not _alive(pid) or not endpoints:
        print(f"pyprocserv-manage restart: {args.name} is not running (no info file with a live server)",
              file=sys.stderr)
        return 1
    try:
        child = _console_restart(endpoints[-1], args.timeout)  # the first bound, the control endpoint
    except OSError as exc:  # TimeoutError and ConnectionError too
        print(f"pyprocserv-manage restart: {args.name}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: restarted, child PID {child}")
    return 0


KILL, START = b"\x18", b"\x12"  # ^X kills (or starts while no child runs); ^R starts while no child runs


class _Console:
    """A control connection read for ``@@@`` lines, with one deadline for the whole talk."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        import socket

        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        if endpoint.startswith(("/", "@")):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect("\0" + endpoint[1:] if endpoint.startswith("@") else endpoint)
        else:
            host, _, port = endpoint.rpartition(":")
            self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        self.seen = b""

    def _receive(self, wait: float) -> bool:
        """More bytes within ``wait`` seconds? (False: none came.)"""
        self.sock.settimeout(max(0.001, wait))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError("the server closed the connection")
        self.seen += data
        return True

    def expect(self, pattern: bytes) -> re.Match[bytes]:
        """Wait for ``pattern``; what follows its match is kept for the next one."""
        while True:
            match = re.search(pattern, self.seen)
            if match:
                self.seen = self.seen[match.end():]
                return match
            left = self.deadline - time.monotonic()
            if left <= 0 or not self._receive(left):
                raise TimeoutError(f"no {pattern.decode(errors='replace')!r} within {self.timeout:g} s")

    def settle(self, quiet: float = 0.5) -> None:
        """Read until the server is quiet (the greeting is over) before typing."""
        while time.monotonic() < self.deadline and self._receive(quiet):
            pass

    def type(self, key: bytes) -> None:
        self.sock.sendall(key)


def _console_restart(endpoint: str, timeout: float) -> int:
    """What a console user does: ^X, and ^R once the child is down if auto restart will not start it."""
    console = _Console(endpoint, timeout)
    with console.sock:
        greeting = console.expect(rb'@@@ Child "[^"]*" (PID: \d+|is SHUT DOWN)')
        console.settle()
        if greeting.group(1).startswith(b"PID"):
            console.type(KILL)
            down = console.expect(rb"@@@ Child process is shutting down, ([^\r\n]*)")
            if b"restarted shortly" not in down.group(1):  # auto restart OFF: the server will not start one
                console.type(START)
        else:
            console.type(START)
        return int(console.expect(rb'@@@ The PID of new child "[^"]*" is: (\d+)').group(1))


def _add_log_commands(sub) -> None:  # type: ignore[no-untyped-def]
    """``logs`` and ``restart``: kept apart so the parser's other subcommands merge easily."""
    s = sub.add_parser("logs", help="list the instances' log files, or show one instance's log",
                       description="Without NAME: each instance's log file and its rotated backups, "
                       "with sizes. With NAME: its last N lines (across rotated files); -f follows "
                       "what is written next, across rotations. The log is the instance's logfile "
                       "key, else LOG_DIR/NAME.log as host mode writes it.")
    s.add_argument("name", nargs="?")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing what is written")
    s.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="last N lines (default 10)")
    s.add_argument("--log-dir", help="as given to run (default by mode)")
    s.set_defaults(func=cmd_logs)
    s = sub.add_parser("restart", help="restart an instance (systemctl; with --no-systemd: its control endpoint)",
                       description="systemd: systemctl restart procserv-NAME.service. With --no-systemd "
                       "(host mode, or a server run by hand): over the instance's control endpoint "
                       "as a console user would: ^X kills the child, then ^R starts it at once if auto "
                       "restart is OFF (with auto restart ON the server starts it, after its holdoff "
                       "if the child ran shorter than that). Prints the new child's PID.")
    s.add_argument("name")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the new child (30)")
    s.set_defaults(func=cmd_restart)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyprocserv-manage",
                                description=__doc__.splitlines()[0].replace("``", ""))  # plain text
    p.add_argument("--user", action="store_true", default=os.geteuid() != 0, help="user configuration (~/.config)")
    p.add_argument("--system", dest="user", action="store_false", help="system configuration (/etc)")
    p.add_argument("--conf-dir", help="configuration, runtime and log files under this directory "
                   "(and no systemctl unless --systemd)")
    systemd = p.add_mutually_exclusive_group()
    systemd.add_argument("--no-systemd", action="store_true", help="write files but call no systemctl")
    systemd.add_argument("--systemd", action="store_true",
                         help="call systemctl even with --conf-dir (its units then point into that directory)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers()

    s = sub.add_parser("status", help="report the state of the instances")
    s.add_argument("-t", "--table", action="store_true", help="a table with pid, uptime, restarts, clients")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("list", help="list the procserv-* systemd units (without systemd: the configured ones)")
    s.add_argument("--all", action="store_true")
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("add", help="create an instance: [options] NAME COMMAND [ARGS...]",
                       usage="%(prog)s [options] NAME [--] COMMAND [ARGS...]",
                       description="Write NAME's configuration and units, and enable them. The options "
                       "may also follow NAME COMMAND; everything after -- belongs to the command.")
    for short, long, _, metavar, text in ADD_FLAGS:  # for --help: parse_add reads the words (see main)
        if metavar is None:
            s.add_argument(short, long, action="store_true", help=text)
        else:
            s.add_argument(short, long, metavar=metavar, help=text)
    s.add_argument("NAME", nargs="?", help="the instance's name")
    s.add_argument("COMMAND", nargs="?", help="the command and its arguments")
    s.set_defaults(func=cmd_add)
    s = sub.add_parser("remove", help="remove an instance")
    s.add_argument("-f", "--force", action="store_true")
    s.add_argument("name")
    s.set_defaults(func=cmd_remove)
    s = sub.add_parser("start", help="start an instance's unit")
    s.add_argument("name")
    s.set_defaults(func=cmd_start)
    s = sub.add_parser("stop", help="stop an instance's unit")
    s.add_argument("name")
    s.set_defaults(func=cmd_stop)
    s = sub.add_parser("attach", help="attach to an instance's console")
    s.add_argument("name")
    s.add_argument("extra", nargs=argparse.REMAINDER, help="extra arguments for telnet")
    s.set_defaults(func=cmd_attach)
    s = sub.add_parser("write-procs-cf", help="write conserver's configuration")
    s.add_argument("-f", "--out", help="the file to write (default /etc/conserver/procs.cf; "
                   "with --conf-dir, DIR/conserver/procs.cf)")
    s.add_argument("-R", "--reload", action="store_true", help="reload conserver-server.service after")
    s.add_argument("--master", default="localhost", help="conserver master of these consoles")
    s.set_defaults(func=cmd_write_procs_cf)
    s = sub.add_parser("generate", help="write the systemd units of every instance into OUTDIR")
    s.add_argument("outdir")
    s.set_defaults(func=cmd_generate)
    s = sub.add_parser("run", help="host mode: serve every instance from this one process")
    s.add_argument("--pv-prefix", help="host PVs (PREFIX HEARTBEAT, NRUNNING, ALL, ...); instances "
                   "without pv_prefix get PREFIX + NAME + ':'")
    s.add_argument("--pv-interface", default="0.0.0.0")
    s.add_argument("--pv-write-hosts", default="localhost")
    s.add_argument("--log-dir", help="each instance logs to LOG_DIR/NAME.log (default by mode)")
    s.add_argument("--only", nargs="*", help="serve only these instances")
    _host_options(s)
    _web_options(s)
    s.set_defaults(func=cmd_run)
    _add_log_commands(sub)
    return p


def _size_option(text: str) -> int:
    from .._core.log import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_options(s: argparse.ArgumentParser) -> None:
    """``run``'s options for log rotation and the supervisor IOC manager's names."""
    s.add_argument("--log-max-bytes", default="10M", type=_size_option, metavar="SIZE",
                   help="rotate an instance's log before it grows past SIZE (bytes, or with K, M, G; "
                   "0 = never; default 10M; an instance's log_max_bytes key wins)")
    s.add_argument("--log-backups", default=5, type=int, metavar="N",
                   help="old log files kept, NAME.log.1 (newest) to NAME.log.N (default 5; an "
                   "instance's log_backups key wins)")
    s.add_argument("--manager-pvs", metavar="PREFIX",
                   help="also serve the supervisor IOC manager's PVs: PREFIX:MAN:NAME_control "
                   "(Stop/Run/Reset), PREFIX:MAN:NAME_hb (seconds since the child's time_pv, else its "
                   "last output; 999 = not running) and PREFIX:MAN:all")


def _web_options(s: argparse.ArgumentParser) -> None:
    """``run``'s browser console: pyprocserv's ``--web*`` options, checked by the same code."""
    g = s.add_argument_group("browser console (needs starlette and anycorn: pip install 'pyprocserv[web]')")
    g.add_argument("--web", metavar="[ADDR:]PORT",
                   help="serve one page for every instance (status, buttons, consoles, logs) on PORT; "
                   "loopback unless ADDR is given, and any other address needs --web-cert, --web-key "
                   "and --web-users")
    g.add_argument("--web-users", metavar="FILE", help="log in with the users in FILE (add them with "
                   "pyprocserv-manage web-user add); without it only loopback, every local browser an operator")
    g.add_argument("--web-cert", metavar="FILE", help="serve https with this certificate chain (PEM; needs --web-key)")
    g.add_argument("--web-key", metavar="FILE", help="... and this private key (PEM)")
    g.add_argument("--web-base", metavar="PATH", help="serve the pages under PATH (default /), e.g. behind a proxy")
    g.add_argument("--web-proxy", metavar="ADDR[,ADDR...]", help="reverse proxies (addresses, networks) whose "
                   "X-Forwarded-Proto/-Host/-For are believed (needs --web-users)")
    g.add_argument("--web-proxy-user", metavar="HEADER", help="the header in which a --web-proxy names the user "
                   "it logged in (who must be in --web-users)")
    g.add_argument("--web-origin", metavar="URL", help="the address browsers use, e.g. https://iocs.example.org "
                   "(accepted by the Origin check; https makes the cookie Secure)")


def _split_add(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """argparse cannot take options after positionals in a remainder: ``add`` parses its own."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--conf-dir":
            i += 2
            continue
        if not word.startswith("-"):
            return (argv[: i + 1], argv[i + 1 :]) if word == "add" else (argv, None)
        i += 1
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["web-user"]:  # the browser console's users: a program of its own (_apps/webusers.py)
        from . import webusers

        return webusers.main(argv[1:])
    head, words = _split_add(argv)
    args = parser().parse_args(head)
    if words is not None:
        args.words = words
    args.explicit_no_systemd = args.no_systemd
    args.no_systemd = args.no_systemd or (args.conf_dir is not None and not args.systemd)  # rule 1
    log_to_stderr([logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)])
    if not hasattr(args, "func"):
        parser().print_help()
        return 1
    try:
        return args.func(Layout(user=args.user, conf_dir=args.conf_dir), args)
    except ConfigError as exc:
        print(f"pyprocserv-manage: cannot read the configuration: {exc}", file=sys.stderr)
    except SystemctlFailed as exc:
        print(f"pyprocserv-manage: {exc}", file=sys.stderr)
    except AddUsageError as exc:
        print(f"usage: pyprocserv-manage add [options] NAME [--] COMMAND [ARGS...]\n"
              f"pyprocserv-manage add: {exc}", file=sys.stderr)
        return 2
    except AddHelpRequested:
        parser().parse_args([*head, "--help"])  # prints add's options, exits 0
    except OSError as exc:  # a file we cannot write: its name and why, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pyprocserv-manage: {where}{exc.strerror or exc}", file=sys.stderr)
    return 1


def entrypoint() -> None:
    sys.exit(main())


def generator_entrypoint() -> None:
    """``pyprocserv-systemd-generator NORMAL_DIR [EARLY_DIR LATE_DIR]`` (systemd.generator(7))."""
    if len(sys.argv) < 2:
        sys.exit("usage: pyprocserv-systemd-generator NORMAL_DIR [EARLY_DIR LATE_DIR]")
    log_to_stderr()
    user = "user-generators" in sys.argv[0]
    layout = Layout(user=user)
    write_units(sys.argv[1], instances(layout), layout)




if __name__ == "__main__":
    entrypoint()
