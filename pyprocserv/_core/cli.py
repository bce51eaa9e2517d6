"""The procServ command line, parsed into a :class:`Config` (no I/O but the environment).

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

import math
import os
import resource
import signal
from dataclasses import dataclass
from typing import Mapping, NoReturn, Sequence

from .._version import __version__
from .config import Config
from .endpoints import Endpoint, EndpointError, parse_endpoint
from .keys import KeyMap, parse_char, parse_ignore
from .policy import PROCSERV_VERSIONS, RestartMode
from .watchdog import WatchConfig

SHORT_OPTIONS = "c:de:fG:hi:I:k:l:L:n:op:P:qVwx:"
# name -> (takes an argument: 0 no, 1 yes, 2 optional and attached, short letter or None)
LONG_OPTIONS: dict[str, tuple[int, str | None]] = {
    "allow": (0, None),
    "autorestartcmd": (1, None),
    "coresize": (1, None),
    "chdir": (1, "c"),
    "debug": (0, "d"),
    "exec": (1, "e"),
    "foreground": (0, "f"),
    "grace-period": (1, "G"),
    "help": (0, "h"),
    "history": (1, None),
    "holdoff": (1, None),
    "ignore": (1, "i"),
    "info-file": (1, "I"),
    "killcmd": (1, "k"),
    "killsig": (1, None),
    "logport": (1, "l"),
    "logfile": (1, "L"),
    "logstamp": (2, None),
    "name": (1, "n"),
    "noautorestart": (0, None),
    "oneshot": (0, "o"),
    "pidfile": (1, "p"),
    "port": (1, "P"),
    "quiet": (0, "q"),
    "restrict": (0, None),
    "timefmt": (1, None),
    "version": (0, "V"),
    "wait": (0, "w"),
    "logoutcmd": (1, "x"),
    "status-file": (1, None),
    "pv-prefix": (1, None),
    "pv-interface": (1, None),
    "pv-description": (1, None),
    "pv-write-hosts": (1, None),
    "watch-pv": (1, None),
    "watch-values": (1, None),
    "watch-for": (1, None),
    "watch-max": (1, None),
    "client-budget": (1, None),
    "procserv-version": (1, None),
}
# procServ 2.7.0's own long options: a prefix that was unambiguous among these keeps its
# meaning (``--wa`` is --wait), whatever options pyprocserv adds.
PROCSERV_LONG_OPTIONS = frozenset(
    "allow autorestartcmd coresize chdir debug exec foreground help holdoff ignore info-file "
    "killcmd killsig logport logfile logstamp name noautorestart pidfile port quiet restrict "
    "timefmt version wait logoutcmd".split()
)
_SHORT_TO_LONG = {short: name for name, (_, short) in LONG_OPTIONS.items() if short}

VERSION_LINE = f"pyprocserv {__version__} (a drop-in for procServ Process Server 2.7.0)"


class CliExit(Exception):
    """The command line asks to stop: print ``stdout``/``stderr`` and exit with ``code``."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stderr or stdout)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


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
Environment: PROCSERV_PID (PID file name), PROCSERV_DEBUG (any value: -d).
"""


def _fail(prog: str, errors: list[str]) -> NoReturn:
    raise CliExit(1, stdout=usage(prog), stderr="".join(errors))


def getopt_long(
    argv: Sequence[str], errors: list[str], prog: str
) -> tuple[list[tuple[str, str | None]], int]:
    """glibc getopt_long with a leading ``+``: options up to the first non-option.

    Returns ``(name, value)`` pairs (long names) and the index of the first non-option.
    Errors are appended to ``errors`` in glibc's words; parsing goes on after them.
    """
    found: list[tuple[str, str | None]] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return found, i + 1
        if not arg.startswith("-") or arg == "-":
            return found, i
        i += 1
        if arg.startswith("--"):
            body = arg[2:]
            name, eq, value = body.partition("=")
            if name in LONG_OPTIONS:
                matches = [name]
            else:
                matches = [n for n in LONG_OPTIONS if n.startswith(name)]
            if not matches:
                errors.append(f"{prog}: unrecognized option '{arg}'\n")
                continue
            own = [m for m in matches if m in PROCSERV_LONG_OPTIONS]
            if len(matches) > 1 and own:
                matches = own
            if len(matches) > 1:
                choices = "".join(f" '--{m}'" for m in matches)
                errors.append(f"{prog}: option '{arg}' is ambiguous; possibilities:{choices}\n")
                continue
            full = matches[0]
            takes, _ = LONG_OPTIONS[full]
            if takes == 0:
                if eq:
                    errors.append(f"{prog}: option '--{full}' doesn't allow an argument\n")
                    continue
                found.append((full, None))
            elif takes == 2:
                found.append((full, value if eq else None))
            elif eq:
                found.append((full, value))
            elif i < len(argv):
                found.append((full, argv[i]))
                i += 1
            else:
                errors.append(f"{prog}: option '--{full}' requires an argument\n")
            if full in ("help", "version") and found and found[-1][0] == full:
                return found, i
            continue
        # a cluster of short options: -fd, -P20000, -P 20000
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            pos += 1
            index = SHORT_OPTIONS.find(letter)
            if index < 0 or letter == ":":
                errors.append(f"{prog}: invalid option -- '{letter}'\n")
                continue
            full = _SHORT_TO_LONG[letter]
            if SHORT_OPTIONS[index + 1 : index + 2] == ":":
                if pos < len(arg):
                    found.append((full, arg[pos:]))
                elif i < len(argv):
                    found.append((full, argv[i]))
                    i += 1
                else:
                    errors.append(f"{prog}: option requires an argument -- '{letter}'\n")
                break
            found.append((full, None))
            if full in ("help", "version"):
                return found, i
    return found, i


def _number(prog: str, option: str, text: str, *, integer: bool = False) -> float:
    try:
        value = int(text, 10) if integer else float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0 or math.isinf(value):
        kind = "a whole number" if integer else "a number of seconds"
        raise CliExit(1, stderr=f"{prog}: invalid {option} value '{text}': expected {kind}, 0 or more\n")
    return value


def _size(prog: str, option: str, text: str) -> int:
    """Bytes: a whole number, or one with K, M or G (powers of 1024); more than 0."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    digits, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    if digits.isascii() and digits.isdigit() and int(digits) > 0:
        return int(digits) * unit
    raise CliExit(1, stderr=f"{prog}: invalid {option} value '{text}': expected a size in bytes "
                  "such as 65536, 512K or 64M\n")


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


def parse_args(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> CliOptions:
    """Turn ``argv`` (with ``argv[0]``) into :class:`CliOptions`, or raise :class:`CliExit`."""
    environ = os.environ if environ is None else environ
    prog = argv[0] if argv else "pyprocserv"
    errors: list[str] = []
    found, optind = getopt_long(argv, errors, prog)

    values: dict[str, str | None] = {}
    control_specs: list[str] = []
    for name, value in found:
        if name == "help":
            raise CliExit(0, stdout=help_text(prog), stderr="".join(errors))
        if name == "version":
            raise CliExit(0, stdout=VERSION_LINE + "\n", stderr="".join(errors))
        if name == "port":
            control_specs.append(value or "")
        else:
            values[name] = value
    compat = not control_specs
    rest = list(argv[optind:])
    if len(rest) < (2 if compat else 1):
        errors.append(f"{prog}: missing argument\n")
    if errors:
        _fail(prog, errors)

    if compat:
        control_specs.append(rest.pop(0))
        optind += 1
    command_word = argv[optind]
    executable = values.get("exec")
    child_argv = tuple(argv[optind - 1 :]) if executable is not None else tuple(argv[optind:])

    def endpoint(spec: str, role: str) -> Endpoint:
        try:
            return parse_endpoint(spec, role)
        except EndpointError as exc:
            message = str(exc)
            prefix = f"{prog}: " if message.startswith("invalid") else ""
            raise CliExit(1, stderr=f"{prefix}{message}\n") from None

    control = tuple(endpoint(spec, "control") for spec in control_specs)
    log_endpoint = endpoint(values["logport"] or "", "log") if "logport" in values else None

    holdoff = 15.0
    if "holdoff" in values:
        holdoff = _number(prog, "--holdoff", values["holdoff"] or "")
    grace = _number(prog, "--grace-period", values["grace-period"] or "") if "grace-period" in values else 0.0
    history = int(_number(prog, "--history", values["history"] or "", integer=True)) if "history" in values else 0

    client_budget = Config.client_budget
    if "client-budget" in values:
        client_budget = _size(prog, "--client-budget", values["client-budget"] or "")

    kill_signal = signal.SIGKILL
    if "killsig" in values:
        try:
            kill_signal = parse_signal(values["killsig"] or "")
        except (ValueError, KeyError):
            raise CliExit(
                1,
                stderr=f"{prog}: invalid --killsig '{values['killsig']}': "
                "expected a signal number or name such as 15 or TERM\n",
            ) from None

    coresize: int | None = None
    if "coresize" in values:
        text = values["coresize"] or ""
        if text.strip().lower() in ("unlimited", "infinity"):
            coresize = resource.RLIM_INFINITY
        else:
            coresize = int(_number(prog, "--coresize", text, integer=True))
            if coresize > 2**63 - 1:
                raise CliExit(1, stderr=f"{prog}: invalid --coresize value '{text}': too large; "
                              "give a size in bytes or 'unlimited'\n")

    keys = KeyMap(
        kill=parse_char(values["killcmd"]) if "killcmd" in values else KeyMap.kill,
        toggle=parse_char(values["autorestartcmd"]) if "autorestartcmd" in values else KeyMap.toggle,
        logout=parse_char(values["logoutcmd"]) if "logoutcmd" in values else 0,
        ignore=parse_ignore(values["ignore"] or "") if "ignore" in values else None,
    )

    mode = RestartMode.ON
    if "noautorestart" in values:
        mode = RestartMode.OFF
    if "oneshot" in values:
        mode = RestartMode.ONESHOT

    procserv_version = values.get("procserv-version") or "2.7"
    if procserv_version not in PROCSERV_VERSIONS:
        raise CliExit(1, stderr=f"{prog}: invalid --procserv-version '{procserv_version}': "
                      f"expected {' or '.join(PROCSERV_VERSIONS)}\n")

    logstamp: str | None = None
    timefmt = values["timefmt"] or "" if "timefmt" in values else "%c"
    if "logstamp" in values:
        # procServ 2.8's default stamp; 2.7.0's logic bug (the bare time, no brackets) is fixed.
        logstamp = values["logstamp"] if values["logstamp"] is not None else f"[{timefmt}] "

    warnings: list[str] = []
    allow = "allow" in values
    if allow:
        warnings.append(
            f"{prog}: --allow: control endpoints accept connections from any host that can "
            "reach them, and whoever connects can type into the child\n"
        )

    pv_options = [name for name in ("pv-interface", "pv-description", "pv-write-hosts") if name in values]
    if pv_options and "pv-prefix" not in values:
        raise CliExit(1, stderr=f"{prog}: --{pv_options[0]} needs --pv-prefix\n")
    watch_options = [name for name in ("watch-values", "watch-for", "watch-max") if name in values]
    if watch_options and "watch-pv" not in values:
        raise CliExit(1, stderr=f"{prog}: --{watch_options[0]} needs --watch-pv\n")
    watch = None
    if "watch-pv" in values:
        hold = _number(prog, "--watch-for", values["watch-for"] or "") if "watch-for" in values else 30.0
        budget = int(_number(prog, "--watch-max", values["watch-max"] or "", integer=True)) if "watch-max" in values else 3
        bad = tuple(v for v in (values.get("watch-values") or "").split("|") if v)
        if not values["watch-pv"]:
            raise CliExit(1, stderr=f"{prog}: --watch-pv needs a PV name\n")
        watch = WatchConfig(pv=values["watch-pv"] or "", bad_values=bad, hold=hold, max_per_hour=budget)

    def words(text: str | None) -> tuple[str, ...]:
        return tuple(w for w in (text or "").replace(",", " ").split() if w)

    pidfile = values.get("pidfile") or environ.get("PROCSERV_PID") or None
    debug = "debug" in values or "PROCSERV_DEBUG" in environ
    config = Config(
        command=child_argv,
        control=control,
        log_endpoint=log_endpoint,
        name=values.get("name"),
        executable=executable,
        command_word=command_word,
        chdir=values.get("chdir") or cwd or os.getcwd(),
        restart_mode=mode,
        holdoff=holdoff,
        wait="wait" in values,
        keys=keys,
        kill_signal=kill_signal,
        grace_period=grace,
        coresize=coresize,
        allow_remote_control=allow,
        restrict_log="restrict" in values,
        logfile=values.get("logfile"),
        logstamp=logstamp,
        timefmt=timefmt,
        info_file=values.get("info-file"),
        status_file=values.get("status-file"),
        history=history,
        client_budget=client_budget,
        echo_to_stdout=debug and "foreground" not in values,
        pv_prefix=values.get("pv-prefix"),
        pv_interfaces=words(values.get("pv-interface")) or ("0.0.0.0",),
        pv_description=values.get("pv-description") or "",
        pv_write_hosts=words(values.get("pv-write-hosts")) or ("localhost",),
        watch=watch,
        program_name=prog,
        procserv_version=procserv_version,
    )
    return CliOptions(
        config=config,
        foreground="foreground" in values,
        debug=debug,
        quiet="quiet" in values,
        pidfile=pidfile,
        warnings=tuple(warnings),
    )
