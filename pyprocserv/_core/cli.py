"""The procServ command line, parsed into a :class:`Config` (no I/O but the environment).

Every option is described once, in :data:`OPTIONS`: its long and short name, its
:class:`Arity`, how its value is converted and checked, and where it is stored.
:func:`parse_args` reads the options with :func:`getopt_long`, converts them in the table's
order and adds the checks that span options. A command line that cannot be run is a
:class:`CliError` carrying the message; ``-h`` and ``-V`` are a :class:`CliAnswer`. Printing
them and the exit code are the program's business (``_apps/main.py``).

Rules (procServ 2.7.0, behaviour §1):
1. getopt_long semantics: parsing stops at the first non-option, long options may be shortened
   to any unambiguous prefix, ``--logstamp`` takes its format only attached (``--logstamp=FMT``).
   Every option is read before errors end the run, and glibc's messages are reproduced.
2. Compat style (``[options] ENDPOINT COMMAND...``) until a ``-P`` is seen; then every
   non-option is the command.
3. ``-e EXE`` runs EXE with the child's argv starting one word *before* the command (the
   endpoint, or the last option's value), as procServ does: ``-P 20000 -e /usr/bin/python3
   ioc.py`` runs python3 with argv ``[/usr/bin/python3, ioc.py]``.
4. Where procServ silently turns bad numbers into 0, we stop with a message that names the
   option (an EPICS unit file with ``--holdoff abc`` is a mistake, not a wish for 0).
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import resource
import signal
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .._version import __version__
from .config import BROWSER_HISTORY, Config
from .endpoints import Endpoint, EndpointError, parse_endpoint
from .errors import PyprocservError
from .keys import KeyMap, parse_char, parse_ignore
from .policy import DEFAULT_PROCSERV_VERSION, PROCSERV_VERSIONS, RestartMode
from .watchdog import WatchConfig
from .weborigin import OriginError, allowed_origins
from .webproxy import ProxyConfigError, check_header_name, trusted_proxies
from .websession import cookie_rules

VERSION_LINE = f"pyprocserv {__version__} (a drop-in for procServ Process Server 2.7.0)"


class CliStop(Exception):
    """The command line ends the run before a server starts; ``message`` is for stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CliError(CliStop, PyprocservError, ValueError):
    """The command line cannot be run: ``message`` says why (glibc's words, or ours naming the
    option), one or more lines; ``show_usage``: the synopsis belongs with it (getopt's errors)."""

    def __init__(self, message: str, *, show_usage: bool = False) -> None:
        super().__init__(message)
        self.show_usage = show_usage


class CliAnswer(CliStop):
    """``-h`` or ``-V``: the answer is ``text``; ``message`` holds getopt's complaints about
    options read before it (as procServ, they are printed and the answer still given)."""

    def __init__(self, text: str, message: str = "") -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class CliOptions:
    """A parsed command line: the server's config plus how this process should run it."""

    config: Config
    foreground: bool
    debug: bool
    quiet: bool
    pidfile: str | None
    warnings: tuple[str, ...] = ()


def usage(prog: str) -> str:
    return (
        f"Usage: {prog} [options] -P <endpoint>... <command args ...>    (-h for help)\n"
        f"       {prog} [options] <endpoint> <command args ...>\n"
    )


def help_text(prog: str) -> str:
    return usage(prog) + """\
<endpoint>:          endpoint to use for control connections
    <port>           TCP <port> on localhost (all interfaces with --allow)
    <ipv4>:<port>    TCP <port> on a numeric IPv4 address (localhost unless --allow)
    [<ipv6>]:<port>  TCP <port> on a numeric IPv6 address (::1 unless --allow)
    unix:<path>      UNIX domain socket at <path> (@<name> for an abstract socket)
    unix:<user>:<group>:<perm>:<path>   same, with owner, group and octal mode
<command args ...>   command line to start the child process
Options:
    --allow               allow control connections from anywhere (prints a warning)
    --autorestartcmd <c>  key that toggles auto restart (default ^T; ^ for ctrl)
    --coresize <n>        set the child's core size limit to <n> bytes (or 'unlimited')
 -c --chdir <dir>         change to <dir> before every start of the child
 -d --debug               debug mode: stay in the foreground, copy the log to stdout
 -e --exec <file>         child executable (default: the command's first word)
 -f --foreground          stay in the foreground, with a console on the terminal
 -G --grace-period <n>    on SIGTERM wait up to <n> s for the child to leave on --killsig
 -h --help                print this message
    --client-budget <n>   memory for output queued to all clients together, in bytes
                          or with K, M or G (default 64M); the furthest behind skip first
    --history <n>         replay the last <n> lines of output to each new client
    --holdoff <n>         minimum time [s] between child starts (default 15)
 -i --ignore <str>        never pass the characters in <str> to the child (^ for ctrl)
 -I --info-file <file>    write instance information (pid, endpoints) to <file>
    --status-file <file>  keep a JSON snapshot of the status (pid, starts, clients) in <file>
 -k --killcmd <c>         key that kills (restarts) the child (default ^X)
    --killsig <sig>       signal that kills the child: number or name (default KILL)
 -l --logport <endpoint>  read-only log connections on <endpoint> (public unless --restrict)
 -L --logfile <file>      append the console log to <file>; '-' is standard output
    --logstamp[=<fmt>]    prefix log lines with a time stamp (strftime <fmt>)
 -n --name <str>          the child's name in messages (default: the command's first word)
    --noautorestart       do not restart the child when it exits
 -o --oneshot             exit when the child exits, with its exit code
 -p --pidfile <file>      write the server's PID to <file> (default: $PROCSERV_PID)
 -P --port <endpoint>     control connections on <endpoint> (may be repeated)
    --procserv-version <v> speak procServ <v>'s console: 2.7 (default) or 2.8 (^T cycles
                          ON/OFF/ONESHOT, "auto restart mode", "Child log file:" line,
                          exit code of the child's last normal exit)
 -q --quiet               no informational output from the starting server
    --restrict            log connections from localhost only
    --timefmt <fmt>       strftime format of the times in messages (default %c)
 -V --version             print the program version
 -w --wait                wait for ^R or ^X on a control connection to start the child
 -x --logoutcmd <c>       key that closes the control connection (default: none)
PV status channel (Channel Access; needs caproto: pip install 'pyprocserv[pv]'):
    --pv-prefix <prefix>  serve procServControl's PVs as <prefix>STATUS, <prefix>START, ...
    --pv-interface <addr> CA server address (default all; port from EPICS_CA_SERVER_PORT)
    --pv-description <s>  value of <prefix>DESCRIPTION
    --pv-write-hosts <l>  hosts allowed to write, comma separated (default localhost; * all)
    --watch-pv <name>     restart the child when this PV stays INVALID or disconnected
    --watch-values <a|b>  ... or when its value is one of these
    --watch-for <n>       ... for <n> seconds (default 30)
    --watch-max <n>       at most <n> watchdog restarts an hour (default 3), with backoff
Browser console (needs starlette and anycorn: pip install 'pyprocserv[web]'):
    --web [<addr>:]<port> serve the console, status and buttons to browsers on <port>
                          (address default 127.0.0.1; [<ipv6>]:<port> for IPv6). Without
                          --web-users only loopback is allowed, and every local browser is an
                          operator, as a telnet client on a loopback port is. A browser
                          console replays the last 500 lines (or --history, if more)
    --web-users <file>    log in with the users in <file> (add them with
                          pyprocserv-manage web-user add); viewers read and spy,
                          operators also type and press the buttons
    --web-cert <file>     serve https with this certificate chain (PEM; needs --web-key)
    --web-key <file>      ... and this private key (PEM)
    --web-base <path>     serve the pages under <path> (default /), e.g. behind a proxy
                          (which needs --web-users: without them, proxied requests are refused)
                          Any other address than loopback needs --web-cert, --web-key and
                          --web-users.
    --web-proxy <a,b,..>  trust the reverse proxies at these addresses or networks
                          (10.0.0.5, 10.0.0.0/24, ::1; needs --web-users): from them only,
                          X-Forwarded-Proto, -Host and -For say what the browser used
    --web-proxy-user <h>  ... and header <h> (e.g. X-Remote-User) names the user the proxy
                          logged in, who must be in --web-users for a role
    --web-origin <url>    the origin browsers open the console at, such as
                          https://iocs.example.org: accepted by the Origin check, and an https
                          one makes the session cookie Secure
Environment: PROCSERV_PID (PID file name), PROCSERV_DEBUG (any value: -d).
"""


class Arity(enum.Enum):
    """What an option takes after it (glibc's ``has_arg``)."""

    NONE = "none"  # --wait, -w
    REQUIRED = "required"  # --name X, --name=X, -n X, -nX
    ATTACHED_OPTIONAL = "attached optional"  # --logstamp, or --logstamp=FMT (never the next word)


class _Verbatim(ValueError):
    """procServ's own message: printed as it is, without the program's name before it."""


def _text(text: str, option: str) -> str:
    return text


def _number(text: str, option: str, *, integer: bool = False) -> float:
    try:
        value = int(text, 10) if integer else float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0 or math.isinf(value):
        kind = "a whole number" if integer else "a number of seconds"
        raise ValueError(f"invalid {option} value '{text}': expected {kind}, 0 or more")
    return value


def _count(text: str, option: str) -> int:
    return int(_number(text, option, integer=True))


def _size(text: str, option: str) -> int:
    """Bytes: a whole number, or one with K, M or G (powers of 1024); more than 0."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    digits, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    if digits.isascii() and digits.isdigit() and int(digits) > 0:
        return int(digits) * unit
    raise ValueError(f"invalid {option} value '{text}': expected a size in bytes such as 65536, 512K or 64M")


def parse_signal(text: str) -> int:
    """A signal by number (``15``) or name (``TERM``, ``SIGTERM``, ``term``); ValueError if unknown."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        number = abs(int(text))  # procServ takes abs(atoi())
        if number == 0:
            return 0
        return int(signal.Signals(number))
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    return int(signal.Signals[name])


def _signal(text: str, option: str) -> int:
    try:
        return parse_signal(text)
    except (ValueError, KeyError):
        raise ValueError(f"invalid {option} '{text}': expected a signal number or name such as 15 or TERM") from None


def _coresize(text: str, option: str) -> int:
    if text.strip().lower() in ("unlimited", "infinity"):
        return resource.RLIM_INFINITY
    size = _count(text, option)
    if size > 2**63 - 1:
        raise ValueError(f"invalid {option} value '{text}': too large; give a size in bytes or 'unlimited'")
    return size


def _procserv_version(text: str, option: str) -> str:
    version = text or DEFAULT_PROCSERV_VERSION
    if version not in PROCSERV_VERSIONS:
        raise ValueError(f"invalid {option} '{version}': expected {' or '.join(PROCSERV_VERSIONS)}")
    return version


def _endpoint(role: str) -> Callable[[str, str], Endpoint]:
    def convert(text: str, option: str) -> Endpoint:
        try:
            return parse_endpoint(text, role)
        except EndpointError as exc:
            message = str(exc)  # ours name the option's problem; procServ's are printed bare
            raise (ValueError if message.startswith("invalid") else _Verbatim)(message) from None

    return convert


def _words(default: tuple[str, ...]) -> Callable[[str, str], tuple[str, ...]]:
    """Comma or space separated words; none: ``default``."""
    return lambda text, option: tuple(w for w in text.replace(",", " ").split() if w) or default


def _web_address(text: str, option: str) -> tuple[str, int]:
    """``PORT``, ``ADDR:PORT`` or ``[IPV6]:PORT``; the address numeric or ``localhost``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or (address.version == 6 and not sep) or ":" in host and not text.startswith("["):
        raise ValueError(f"invalid {option} '{text}': expected [ADDRESS:]PORT, such as 8080, "
                         "0.0.0.0:8080 or [::1]:8080, with a numeric address")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"invalid {option} '{text}': the port must be a number from 1 to 65535")
    return str(address), int(port)


def _web_base(text: str, option: str) -> str:
    """A path starting and ending with ``/`` that a cookie can carry (``/ioc1`` becomes ``/ioc1/``)."""
    base = text if text.endswith("/") else text + "/"
    try:
        cookie_rules(base, client_scheme="http", loopback=True)
    except ValueError as exc:
        raise ValueError(f"invalid {option}: {exc}") from None
    if "//" in base or "/./" in base or "/../" in base:
        raise ValueError(f"invalid {option} '{text}': use a plain path such as /ioc1/, without empty, "
                         "'.' or '..' parts")
    return base


def _web_proxies(text: str, option: str) -> tuple[str, ...]:
    """Comma-separated proxy addresses or networks, each checked (``_core.webproxy`` rule 4)."""
    try:
        return tuple(str(network) for network in trusted_proxies(w for w in text.split(",") if w.strip()))
    except ProxyConfigError as exc:
        raise ValueError(f"invalid {option}: {exc}") from None


def _web_proxy_user(text: str, option: str) -> str:
    """The name of a trusted proxy's user header (``_core.webproxy`` rule 7)."""
    try:
        return check_header_name(text)
    except ProxyConfigError as exc:
        raise ValueError(f"invalid {option}: {exc}") from None


def _web_origin(text: str, option: str) -> str:
    """``http[s]://HOST[:PORT]``, as a browser sends it in ``Origin`` (``_core.weborigin`` rule 4)."""
    try:
        allowed_origins([text])
    except OriginError as exc:
        raise ValueError(f"invalid {option}: {exc}") from None
    return text


@dataclass(frozen=True)
class Option:
    """One option of the command line: its spellings, what it takes, what becomes of its value.

    ``field`` names where the value is stored: a :class:`Config` field (``"holdoff"``) or a field
    of one of its parts (``"keys.kill"``, ``"watch.hold"``); None: :func:`parse_args` reads it
    itself. ``convert(text, "--name")`` turns the text into the value or raises ValueError
    with the message. ``needs``: the option this one means nothing without. ``answer``: the
    option asks a question instead of naming a server (``-h``, ``-V``); getopt stops there.
    Given twice, the last value counts (``repeat``: every value, in order).
    """

    name: str
    short: str | None = None
    arity: Arity = Arity.REQUIRED
    field: str | None = None
    convert: Callable[[str, str], object] = _text
    needs: str | None = None
    repeat: bool = False
    answer: Callable[[str], str] | None = None


def _char(text: str, option: str) -> int:
    return parse_char(text)


# Values are converted in this order, so the first bad one is the one reported.
OPTIONS: tuple[Option, ...] = (
    Option("help", "h", Arity.NONE, answer=help_text),
    Option("version", "V", Arity.NONE, answer=lambda prog: VERSION_LINE + "\n"),
    Option("port", "P", field="control", convert=_endpoint("control"), repeat=True),
    Option("logport", "l", field="log_endpoint", convert=_endpoint("log")),
    Option("holdoff", field="holdoff", convert=_number),
    Option("grace-period", "G", field="grace_period", convert=_number),
    Option("history", field="history", convert=_count),
    Option("client-budget", field="client_budget", convert=_size),
    Option("killsig", field="kill_signal", convert=_signal),
    Option("coresize", field="coresize", convert=_coresize),
    Option("killcmd", "k", field="keys.kill", convert=_char),
    Option("autorestartcmd", field="keys.toggle", convert=_char),
    Option("logoutcmd", "x", field="keys.logout", convert=_char),
    Option("ignore", "i", field="keys.ignore", convert=lambda text, option: parse_ignore(text)),
    Option("procserv-version", field="procserv_version", convert=_procserv_version),
    Option("pv-prefix", field="pv_prefix"),
    Option("pv-interface", field="pv_interfaces", convert=_words(("0.0.0.0",)), needs="pv-prefix"),
    Option("pv-description", field="pv_description", needs="pv-prefix"),
    Option("pv-write-hosts", field="pv_write_hosts", convert=_words(("localhost",)), needs="pv-prefix"),
    Option("watch-pv", field="watch.pv"),
    Option("watch-values", field="watch.bad_values", needs="watch-pv",
           convert=lambda text, option: tuple(v for v in text.split("|") if v)),
    Option("watch-for", field="watch.hold", convert=_number, needs="watch-pv"),
    Option("watch-max", field="watch.max_per_hour", convert=_count, needs="watch-pv"),
    Option("web", field="web", convert=_web_address),
    Option("web-users", field="web_users", needs="web"),
    Option("web-cert", field="web_cert", needs="web"),
    Option("web-key", field="web_key", needs="web"),
    Option("web-base", field="web_base", convert=_web_base, needs="web"),
    Option("web-proxy", field="web_proxies", convert=_web_proxies, needs="web"),
    Option("web-proxy-user", field="web_proxy_user", convert=_web_proxy_user, needs="web-proxy"),
    Option("web-origin", field="web_origin", convert=_web_origin, needs="web"),
    Option("allow", arity=Arity.NONE, field="allow_remote_control"),
    Option("chdir", "c"),
    Option("debug", "d", Arity.NONE),
    Option("exec", "e", field="executable"),
    Option("foreground", "f", Arity.NONE),
    Option("info-file", "I", field="info_file"),
    Option("logfile", "L", field="logfile"),
    Option("logstamp", arity=Arity.ATTACHED_OPTIONAL),
    Option("name", "n", field="name"),
    Option("noautorestart", arity=Arity.NONE),
    Option("oneshot", "o", Arity.NONE),
    Option("pidfile", "p"),
    Option("quiet", "q", Arity.NONE),
    Option("restrict", arity=Arity.NONE, field="restrict_log"),
    Option("status-file", field="status_file"),
    Option("timefmt", field="timefmt"),
    Option("wait", "w", Arity.NONE, field="wait"),
)
_BY_NAME = {option.name: option for option in OPTIONS}
_BY_SHORT = {option.short: option for option in OPTIONS if option.short}
# procServ 2.7.0's own long options, in the order of its table (glibc lists ambiguous matches
# in that order). A prefix that was unambiguous among these keeps its meaning (``--wa`` is
# --wait), whatever options pyprocserv adds.
PROCSERV_LONG_OPTIONS = (
    "allow autorestartcmd coresize chdir debug exec foreground help holdoff ignore info-file "
    "killcmd killsig logport logfile logstamp name noautorestart pidfile port quiet restrict "
    "timefmt version wait logoutcmd"
).split()


def program_name(argv: Sequence[str]) -> str:
    """The name messages start with: ``argv[0]`` as given (procServ prints it as is)."""
    return argv[0] if argv else "pyprocserv"


def _long_matches(name: str) -> list[Option]:
    """The options ``--name`` may mean: itself, else every one it is a prefix of, procServ's first."""
    if name in _BY_NAME:
        return [_BY_NAME[name]]
    own = [n for n in PROCSERV_LONG_OPTIONS if n.startswith(name)]
    if own:
        return [_BY_NAME[n] for n in own]
    return [option for option in OPTIONS if option.name.startswith(name)]


def getopt_long(
    argv: Sequence[str], errors: list[str], prog: str
) -> tuple[list[tuple[Option, str | None]], int]:
    """glibc getopt_long with a leading ``+``: options up to the first non-option.

    Returns ``(option, value)`` pairs and the index of the first non-option. Errors are
    appended to ``errors`` in glibc's words; parsing goes on after them.
    """
    found: list[tuple[Option, str | None]] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return found, i + 1
        if not arg.startswith("-") or arg == "-":
            return found, i
        i += 1
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            matches = _long_matches(name)
            if not matches:
                errors.append(f"{prog}: unrecognized option '{arg}'\n")
                continue
            if len(matches) > 1:
                choices = "".join(f" '--{m.name}'" for m in matches)
                errors.append(f"{prog}: option '{arg}' is ambiguous; possibilities:{choices}\n")
                continue
            option = matches[0]
            if option.arity is Arity.NONE:
                if eq:
                    errors.append(f"{prog}: option '--{option.name}' doesn't allow an argument\n")
                    continue
                found.append((option, None))
            elif option.arity is Arity.ATTACHED_OPTIONAL:
                found.append((option, value if eq else None))
            elif eq:
                found.append((option, value))
            elif i < len(argv):
                found.append((option, argv[i]))
                i += 1
            else:
                errors.append(f"{prog}: option '--{option.name}' requires an argument\n")
                continue
            if option.answer is not None:
                return found, i
            continue
        # a cluster of short options: -fd, -P20000, -P 20000
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            pos += 1
            option = _BY_SHORT.get(letter)
            if option is None:
                errors.append(f"{prog}: invalid option -- '{letter}'\n")
                continue
            if option.arity is Arity.REQUIRED:
                if pos < len(arg):
                    found.append((option, arg[pos:]))
                elif i < len(argv):
                    found.append((option, argv[i]))
                    i += 1
                else:
                    errors.append(f"{prog}: option requires an argument -- '{letter}'\n")
                break
            found.append((option, None))
            if option.answer is not None:
                return found, i
    return found, i


def _convert(given: dict[str, list[str | None]], prog: str) -> dict[str, object]:
    """Each given option's value, converted, by option name; the first bad one is a CliError."""
    values: dict[str, object] = {}
    for option in OPTIONS:
        if option.name not in given:
            continue
        if option.needs is not None and option.needs not in given:
            raise CliError(f"{prog}: --{option.name} needs --{option.needs}\n")
        texts = given[option.name]
        try:
            if option.arity is Arity.NONE:
                values[option.name] = True
            elif option.repeat:
                values[option.name] = tuple(option.convert(text or "", f"--{option.name}") for text in texts)
            elif texts[-1] is None:  # an optional value, not given
                values[option.name] = None
            else:
                values[option.name] = option.convert(texts[-1], f"--{option.name}")
        except _Verbatim as exc:
            raise CliError(f"{exc}\n") from None
        except ValueError as exc:
            raise CliError(f"{prog}: {exc}\n") from None
    return values


def _fields(values: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """The values by where they are stored: ``{"": Config fields, "keys": ..., "watch": ...}``."""
    out: dict[str, dict[str, object]] = {"": {}, "keys": {}, "watch": {}}
    for option in OPTIONS:
        if option.field is not None and option.name in values:
            part, _, name = option.field.rpartition(".")
            out[part][name] = values[option.name]
    return out


def parse_args(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> CliOptions:
    """Turn ``argv`` (with ``argv[0]``) into :class:`CliOptions`.

    Raises :class:`CliAnswer` for ``-h``/``-V`` and :class:`CliError` for a command line that
    cannot be run; what the program prints and how it exits is its wrapper's business.
    """
    environ = os.environ if environ is None else environ
    prog = program_name(argv)
    errors: list[str] = []
    found, optind = getopt_long(argv, errors, prog)
    given: dict[str, list[str | None]] = {}
    for option, value in found:
        if option.answer is not None:
            raise CliAnswer(option.answer(prog), "".join(errors))
        given.setdefault(option.name, []).append(value)

    compat = "port" not in given  # rule 2
    if len(argv) - optind < (2 if compat else 1):
        errors.append(f"{prog}: missing argument\n")
    if errors:
        raise CliError("".join(errors), show_usage=True)
    if compat:
        given["port"] = [argv[optind]]
        optind += 1
    values = _convert(given, prog)
    if "watch-pv" in values and not values["watch-pv"]:
        raise CliError(f"{prog}: --watch-pv needs a PV name\n")
    _check_web(values, prog)
    debug = "debug" in values or "PROCSERV_DEBUG" in environ
    config = _config(values, argv, optind, cwd, prog, debug=debug)
    warnings = []
    if config.allow_remote_control:
        warnings.append(
            f"{prog}: --allow: control endpoints accept connections from any host that can "
            "reach them, and whoever connects can type into the child\n"
        )
    return CliOptions(
        config=config,
        foreground="foreground" in values,
        debug=debug,
        quiet="quiet" in values,
        pidfile=str(values.get("pidfile") or environ.get("PROCSERV_PID") or "") or None,
        warnings=tuple(warnings),
    )


def _check_web(values: Mapping[str, object], prog: str) -> None:
    """The browser console's options that only make sense together."""
    if ("web-cert" in values) != ("web-key" in values):
        raise CliError(f"{prog}: --web-cert and --web-key go together: give both files for https, or neither\n")
    if "web-proxy" in values and "web-users" not in values:
        raise CliError(f"{prog}: --web-proxy needs --web-users: without users a request through a proxy is "
                       "refused (it would make everyone behind the proxy an operator)\n")
    web = values.get("web")
    if web is None:
        return
    host, port = web  # type: ignore[misc]
    if ipaddress.ip_address(host).is_loopback:
        return
    missing = [name for name in ("web-cert", "web-key", "web-users") if name not in values]
    if missing:
        shown = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        raise CliError(
            f"{prog}: --web {shown} needs --web-cert/--web-key and --web-users: a browser console "
            f"beyond loopback must use https and log its users in (missing: "
            f"{', '.join('--' + name for name in missing)}); or serve on loopback: --web {port}\n")


def web_options(given: Mapping[str, str], prog: str) -> dict[str, object]:
    """The browser console's options of another program (host mode's ``run --web ...``): ``given``
    maps option names without dashes (``"web"``, ``"web-users"``, ...) to their texts. Converted
    and checked as pyprocserv's own, with the same messages (a CliError); returns the values by
    their ``Config`` field names (``web``, ``web_users``, ...)."""
    values = _convert({name: [text] for name, text in given.items()}, prog)
    _check_web(values, prog)
    return _fields(values)[""]


def _config(
    values: Mapping[str, object], argv: Sequence[str], optind: int, cwd: str | None, prog: str, *, debug: bool
) -> Config:
    """The :class:`Config` of converted ``values``; the command starts at ``argv[optind]``."""
    fields = _fields(values)
    timefmt = str(values.get("timefmt", Config.timefmt))
    if "logstamp" in values:
        # procServ 2.8's default stamp; 2.7.0's logic bug (the bare time, no brackets) is fixed.
        fields[""]["logstamp"] = values["logstamp"] if values["logstamp"] is not None else f"[{timefmt}] "
    if "web" in values:  # a browser console opens on the recent screen, telnet clients as procServ's
        fields[""]["browser_history"] = BROWSER_HISTORY
    mode = RestartMode.ON
    if "noautorestart" in values:
        mode = RestartMode.OFF
    if "oneshot" in values:
        mode = RestartMode.ONESHOT
    return Config(
        **fields[""],  # type: ignore[arg-type]
        command=tuple(argv[optind - 1 :]) if "exec" in values else tuple(argv[optind:]),  # rule 3
        command_word=argv[optind],
        chdir=str(values.get("chdir") or cwd or os.getcwd()),
        restart_mode=mode,
        keys=KeyMap(**fields["keys"]),  # type: ignore[arg-type]
        watch=WatchConfig(**fields["watch"]) if "watch-pv" in values else None,  # type: ignore[arg-type]
        echo_to_stdout=debug and "foreground" not in values,
        program_name=prog,
    )
