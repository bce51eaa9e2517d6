"""Many IOCs: procServUtils' configuration files, read the way procServUtils reads them.

Rules:
1. The files and format are procServUtils': ``/etc/procServ.conf`` and ``/etc/procServ.d/*.conf``
   (``~/.config/...`` for ``--user``; any directory with ``--conf-dir``), INI with one section
   per instance and the defaults ``user=nobody, group=nogroup, chdir=/, port=0, instance=1``.
   Sections with ``instance = 0`` are not instances.
2. One instance becomes one pyprocserv command line (:meth:`Instance.argv`), the launcher's
   (procServ-launcher's options, plus pyprocserv's own keys). Host mode parses that same command
   line into a Config, so a unit and host mode can never disagree about an instance.
3. pyprocserv's own keys (all optional): ``logfile``, ``pv_prefix``, ``holdoff``, ``autostart``,
   ``options`` (more pyprocserv options, shell words), ``watchdog_sec``, ``socket_activation``,
   ``procserv_version`` (``2.8`` for sites whose tools expect procServ 2.8.0's console), and
   for host mode ``log_max_bytes`` / ``log_backups`` (size-based rotation, ``_shell.logfile``) and
   ``time_pv`` (the child's liveness PV, epoch seconds, for ``MAN:{name}_hb``; ``_ca.hostpvs``).
"""

from __future__ import annotations

import configparser
import glob
import os
import shlex
from dataclasses import dataclass, field

from .._core.errors import PyprocservError
from .._core.log import parse_size

DEFAULTS = {"user": "nobody", "group": "nogroup", "chdir": "/", "port": "0", "instance": "1"}
IGNORE = "^D^C^]"  # procServ-launcher's --ignore, kept byte for byte
LOGOUT = "^D"


@dataclass(frozen=True)
class Layout:
    """Where the configuration, the generated files and the runtime files live."""

    user: bool = False
    conf_dir: str | None = None  # tests and unusual sites: everything under one directory

    @property
    def config_root(self) -> str:
        if self.conf_dir:
            return self.conf_dir
        return os.path.expanduser("~/.config") if self.user else "/etc"

    @property
    def gendir(self) -> str:
        return os.path.join(self.config_root, "procServ.d")

    @property
    def rundir(self) -> str:
        if self.conf_dir:
            return os.path.join(self.conf_dir, "run")
        if self.user:
            return os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return "/run"

    @property
    def logdir(self) -> str:
        if self.conf_dir:
            return os.path.join(self.conf_dir, "log")
        if self.user:
            return os.path.expanduser("~/.local/state/procserv")
        return "/var/log/procserv"

    def config_files(self) -> list[str]:
        root = self.config_root
        files = [os.path.join(root, "procServ.conf")] if os.path.exists(os.path.join(root, "procServ.conf")) else []
        return files + sorted(glob.glob(os.path.join(root, "procServ.d", "*.conf")))

    def instance_dir(self, name: str) -> str:
        return os.path.join(self.rundir, f"procserv-{name}")

    def mode_flag(self) -> list[str]:
        flags = ["--user" if self.user else "--system"]
        if self.conf_dir:
            flags += ["--conf-dir", self.conf_dir]
        return flags


class ConfigError(PyprocservError, ValueError):
    """The configuration cannot be read; the text names the file or section and the problem.

    The programs' own error (manage, the launcher, host mode), not the library's: it shares
    the base so that every error pyprocserv raises does, but it is not exported.
    """


def read_config(layout: Layout) -> configparser.ConfigParser:
    """Every configuration file, in order; a file that cannot be parsed is a :class:`ConfigError`."""
    parser = configparser.ConfigParser(DEFAULTS)
    for path in layout.config_files():
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f, path)
        except FileNotFoundError:
            continue  # removed since it was listed: as if it had never been there
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except (configparser.Error, OSError) as exc:
            raise ConfigError(f"{path}: {_one_line(exc)}") from None
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "strerror", None) or exc).split())


@dataclass(frozen=True)
class Instance:
    """One section of the configuration."""

    name: str
    command: str
    chdir: str = "/"
    user: str = "nobody"
    group: str = "nogroup"
    port: str = "0"
    host: str | None = None
    environment: str | None = None
    env_file: str | None = None
    logfile: str | None = None
    pv_prefix: str | None = None
    holdoff: str | None = None
    procserv_version: str | None = None
    autostart: bool = True
    options: str = ""
    watchdog_sec: str | None = None
    socket_activation: bool = True
    log_max_bytes: str | None = None  # host mode: rotate the log past this size (10M, 0 = never)
    log_backups: str | None = None  # host mode: old log files kept
    time_pv: str | None = None  # host mode: the child's liveness PV (epoch seconds of its last good work)
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_section(cls, parser: configparser.ConfigParser, name: str) -> Instance:
        section = parser[name]

        def opt(key: str) -> str | None:
            return section.get(key) if parser.has_option(name, key) else None

        log_max_bytes, log_backups = opt("log_max_bytes"), opt("log_backups")
        if log_max_bytes is not None:
            parse_size(log_max_bytes)  # a bad size is a configuration error, at start or reload
        if log_backups is not None and not log_backups.strip().isdigit():
            raise ValueError(f"log_backups: not a number: {log_backups!r}")
        return cls(
            name=name,
            command=section.get("command", ""),
            chdir=section.get("chdir"),
            user=section.get("user"),
            group=section.get("group"),
            port=section.get("port"),
            host=opt("host"),
            environment=opt("environment"),
            env_file=opt("env_file"),
            logfile=opt("logfile"),
            pv_prefix=opt("pv_prefix"),
            holdoff=opt("holdoff"),
            procserv_version=opt("procserv_version"),
            autostart=section.getboolean("autostart", True),
            options=section.get("options", ""),
            watchdog_sec=opt("watchdog_sec"),
            socket_activation=section.getboolean("socket_activation", True),
            log_max_bytes=log_max_bytes,
            log_backups=log_backups,
            time_pv=opt("time_pv"),
        )

    def control_endpoint(self, layout: Layout) -> str:
        """``port`` as given, or procServUtils' UNIX socket in the instance's runtime directory."""
        if self.port != "0":
            return self.port
        return "unix:" + os.path.join(layout.instance_dir(self.name), "control")

    def argv(self, layout: Layout, program: str = "pyprocserv", *, logfile: str | None = None,
             debug: bool = False) -> list[str]:
        """The command line procServ-launcher would build (``-L -`` unless a log file is set)."""
        run = layout.instance_dir(self.name)
        argv = [
            program,
            "--foreground",
            "--logfile", logfile or self.logfile or "-",
            "--name", self.name,
            "--ignore", IGNORE,
            "--logoutcmd", LOGOUT,
            "--chdir", self.chdir,
            "--info-file", os.path.join(run, "info"),
            "--status-file", os.path.join(run, "status"),
            "--port", self.control_endpoint(layout),
        ]
        if self.holdoff is not None:
            argv += ["--holdoff", self.holdoff]
        if self.procserv_version is not None:
            argv += ["--procserv-version", self.procserv_version]
        if self.pv_prefix:
            argv += ["--pv-prefix", self.pv_prefix]
        if debug:
            argv.append("--debug")
        argv += shlex.split(self.options)
        argv.append("--")  # the command may start with '-' (procServ's getopt stops here too)
        argv += shlex.split(self.command)
        return argv

    def child_environment(self) -> dict[str, str]:
        """``environment = "A=1" "B=2 3"`` as variables (the unit's Environment= syntax)."""
        out = {"PROCSERV_NAME": self.name, "IOCNAME": self.name}
        for item in shlex.split(self.environment or ""):
            key, sep, value = item.partition("=")
            if sep:
                out[key] = value
        return out


def instances(layout: Layout, parser: configparser.ConfigParser | None = None) -> list[Instance]:
    """Every section that is an instance (``instance = 1``), in file order."""
    parser = parser or read_config(layout)
    found = []
    for name in parser.sections():
        try:
            if parser.getboolean(name, "instance", fallback=True):
                found.append(Instance.from_section(parser, name))
        except (ValueError, configparser.Error) as exc:
            raise ConfigError(f"[{name}]: {_one_line(exc)}") from None
    return found
