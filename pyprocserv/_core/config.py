"""The configuration of one process server: everything the command line can say, as data."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from .endpoints import Endpoint, TcpEndpoint, UnixEndpoint, parse_endpoint
from .keys import KeyMap
from .policy import DEFAULT_PROCSERV_VERSION, PROCSERV_VERSIONS, RestartMode
from .watchdog import WatchConfig

DEFAULT_HOLDOFF = 15.0
DEFAULT_CLIENT_BUDGET = 64 << 20  # bytes of console output queued for all clients together
BROWSER_HISTORY = 500  # lines a browser console replays with --web: the screen an operator expects to see
DEFAULT_INPUT_LIMIT = 1 << 16  # bytes of client input queued for a child that does not read


def _endpoint(value: Endpoint | str | int, role: str) -> Endpoint:
    if isinstance(value, (TcpEndpoint, UnixEndpoint)):
        return value
    return parse_endpoint(str(value), role)


@dataclass(frozen=True)
class Config:
    """What to run and how to serve its console.

    Only ``command`` is required. Endpoints may be given as specs (``20000``,
    ``"unix:/run/ioc.sock"``) or as :class:`TcpEndpoint`/:class:`UnixEndpoint` objects.
    """

    command: tuple[str, ...]
    control: tuple[Endpoint, ...] = ()
    log_endpoint: Endpoint | None = None
    name: str | None = None  # -n; default: the command word
    executable: str | None = None  # -e; default: command[0], looked up in PATH
    command_word: str | None = None  # what "Child started as:" shows; default: command[0]
    chdir: str | None = None  # -c; default: the server's working directory at start
    environment: dict[str, str] | None = None  # extra variables for the child
    restart_mode: RestartMode = RestartMode.ON
    holdoff: float = DEFAULT_HOLDOFF
    wait: bool = False  # -w
    keys: KeyMap = field(default_factory=KeyMap)
    kill_signal: int = signal.SIGKILL
    grace_period: float = 0.0
    coresize: int | None = None
    allow_remote_control: bool = False  # --allow
    restrict_log: bool = False  # --restrict
    logfile: str | None = None  # -L; "-" is standard output
    logstamp: str | None = None  # --logstamp format; None: no stamps
    timefmt: str = "%c"
    info_file: str | None = None  # -I
    status_file: str | None = None  # --status-file: a JSON snapshot of Status, kept current
    history: int = 0  # lines replayed to a new client
    browser_history: int = 0  # lines replayed to a browser console, when more than history (--web: 500)
    echo_to_stdout: bool = False  # -d: every logged byte also goes to standard output
    client_budget: int = DEFAULT_CLIENT_BUDGET  # --client-budget; the furthest behind skip first
    client_queue_limit: int | None = None  # a second bound for each client; None: the budget
    input_queue_limit: int = DEFAULT_INPUT_LIMIT
    pv_prefix: str | None = None  # serve the PV status channel (needs caproto)
    pv_interfaces: tuple[str, ...] = ("0.0.0.0",)
    pv_description: str = ""
    pv_write_hosts: tuple[str, ...] = ("localhost",)
    watch: WatchConfig | None = None  # the PV watchdog (needs caproto)
    web: tuple[str, int] | None = None  # --web: the browser console's (address, port); needs [web]
    web_users: str | None = None  # --web-users: credentials file; None: loopback only, all operators
    web_cert: str | None = None  # --web-cert: TLS certificate chain (PEM)
    web_key: str | None = None  # --web-key: its private key (PEM)
    web_base: str = "/"  # --web-base: the path the console's pages live under, ending in "/"
    web_proxies: tuple[str, ...] = ()  # --web-proxy: trusted reverse proxies' addresses or networks
    web_proxy_user: str | None = None  # --web-proxy-user: the header a trusted proxy names its user in
    web_origin: str | None = None  # --web-origin: the origin browsers use, e.g. https://iocs.example.org
    program_name: str = "pyprocserv"  # prefixes the child's "could not execute" lines
    version_text: str = ""  # inside "Welcome to procServ (...)"; default: pyprocserv's version
    procserv_version: str = DEFAULT_PROCSERV_VERSION  # whose console bytes: "2.7" or "2.8"

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("Config.command needs at least the program to run")
        object.__setattr__(self, "command", tuple(os.fspath(c) for c in self.command))
        object.__setattr__(
            self, "control", tuple(_endpoint(e, "control") for e in self.control)
        )
        if self.log_endpoint is not None:
            object.__setattr__(self, "log_endpoint", _endpoint(self.log_endpoint, "log"))
        if self.procserv_version not in PROCSERV_VERSIONS:
            raise ValueError(f"Config.procserv_version must be one of {', '.join(PROCSERV_VERSIONS)}")
        if not isinstance(self.restart_mode, RestartMode):
            object.__setattr__(self, "restart_mode", RestartMode(self.restart_mode))

    @property
    def child_name(self) -> str:
        return self.name if self.name is not None else self.started_as

    @property
    def started_as(self) -> str:
        return self.command_word if self.command_word is not None else self.command[0]
