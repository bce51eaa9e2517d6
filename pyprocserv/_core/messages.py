"""Every text pyprocserv writes on a console, byte for byte as procServ 2.7.0 writes it.

Rules:
1. All ``@@@`` texts live here and nowhere else. procServControl (DLS, ISIS) and site scripts
   scrape them with ``sscanf``, so a changed space breaks someone's screen: change nothing here
   without a conformance test against procServ.
2. Everything is bytes and ends in ``\\r\\n`` unless procServ does otherwise (the quirks are
   reproduced on purpose and named in a comment).
3. This module does no I/O and knows no state: callers pass in what the message shows.
4. Where procServ 2.8.0 words a line differently (``--procserv-version 2.8``), the function
   takes ``procserv_version``; the default is 2.7.0's bytes. 2.8.0 says "auto restart *mode*"
   in the greeting and the ^T notice, and adds ``Child log file:`` to the server info.
"""

from __future__ import annotations

import os
import time

from .policy import RestartMode

NL = b"\r\n"
SEPARATOR = b"@@@ @@@ @@@ @@@ @@@" + NL
# The telnet negotiation procServ sends after the greeting: IAC WILL ECHO, IAC DO LINEMODE.
TELNET_OFFER = b"\xff\xfb\x01\xff\xfd\x22"

# procServ formats greeting times with strftime(buf, 31): 30 characters and the NUL fit.
_GREETING_TIME_MAX = 30
# "@@@ Current time: " starts a 128-byte buffer, and the line end is added only while more than
# two bytes are left: 107 characters of time at most, else procServ prints "N/A".
_CURRENT_TIME_MAX = 128 - len("@@@ Current time: ") - 3


def _b(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else os.fsencode(text)


def ctl(char: int) -> bytes:
    """How procServ shows a command character: ``^X`` for a control character, else itself.

    A disabled character (0) comes out as a NUL byte, as procServ's ``%c`` of 0 does; the
    callers cut the message there, which is what C's string handling does to it.
    """
    if 0 < char < 32:
        return b"^" + bytes([char + 64])
    return bytes([char])


def _cut_at_nul(text: bytes) -> bytes:
    nul = text.find(b"\0")
    return text if nul < 0 else text[:nul]


def format_time(fmt: str, when: float) -> str:
    """strftime in local time, the C locale way procServ does it ('' when it yields nothing)."""
    try:
        return time.strftime(fmt, time.localtime(when))
    except (ValueError, OverflowError):
        return ""


def mode_word(mode: RestartMode) -> bytes:
    return mode.value.encode()


# -- the greeting (written only to the connecting client, never logged) ----------------------


def welcome(version: str) -> bytes:
    return b"@@@ Welcome to procServ (" + _b(version) + b")" + NL


def _auto_restart(procserv_version: str) -> bytes:
    return b"auto restart" if procserv_version == "2.7" else b"auto restart mode"


def usage(
    kill_char: int, mode: RestartMode, toggle_char: int, logout_char: int, procserv_version: str = "2.7"
) -> bytes:
    """Greeting line 2 (and 3 with a logout character): the keys a control client may use."""
    if kill_char:
        line = b"@@@ Use " + ctl(kill_char) + b" to kill the child, "
    else:
        line = b"@@@ Kill command disabled, "
    line += _auto_restart(procserv_version) + b" is " + mode_word(mode) + b", "
    if toggle_char:
        line += b"use " + ctl(toggle_char) + b" to toggle auto restart" + NL
    else:
        line += b"auto restart toggle disabled" + NL
    if logout_char:
        line += b"@@@ Use " + ctl(logout_char) + b" to logout from procServ server" + NL
    return line


def server_info(server_pid: int, server_dir: str, child_dir: str, name: str, command: str) -> bytes:
    """procServ's infoMessage1: server pid, directories and the command word."""
    text = (
        b"@@@ procServ server PID: %d" % server_pid + NL
        + b"@@@ Server startup directory: " + _b(server_dir) + NL
        + b"@@@ Child startup directory: " + _b(child_dir) + NL
    )
    if name != command:
        text += b'@@@ Child "' + _b(name) + b'" started as: ' + _b(command) + NL
    else:
        text += b"@@@ Child started as: " + _b(command) + NL
    return text


def child_log_file(path: str, opened: bool) -> bytes:
    """procServ 2.8.0's last server info line, shown when there is a ``-L`` log file."""
    if not opened:
        return b"@@@ Child log file: unable to open log file " + _b(path) + NL
    return b"@@@ Child log file: " + _b(path) + NL


def child_pid(name: str, pid: int) -> bytes:
    return b'@@@ Child "' + _b(name) + b'" PID: %d' % pid + NL


def child_shut_down(name: str) -> bytes:
    return b'@@@ Child "' + _b(name) + b'" is SHUT DOWN' + NL


def greeting_time(fmt: str, when: float) -> bytes:
    text = format_time(fmt, when)
    return b"" if len(_b(text)) > _GREETING_TIME_MAX else _b(text)


def started_at(fmt: str, server_started: float, name: str, child_started: float | None) -> bytes:
    text = b"@@@ procServ server started at: " + greeting_time(fmt, server_started) + NL
    if child_started is not None:
        text += (
            b'@@@ Child "' + _b(name) + b'" started at: ' + greeting_time(fmt, child_started) + NL
        )
    return text


def connected(users: int, loggers: int) -> bytes:
    return b"@@@ %d user(s) and %d logger(s) connected (plus you)" % (users, loggers) + NL


def commands(restart_char: int, kill_char: int, quit_char: int, logout_char: int) -> bytes:
    """procServ's infoMessage3, shown while no child runs and when one shuts down."""
    text = (
        b"@@@ " + ctl(restart_char) + b" or " + ctl(kill_char) + b" restarts the child, "
        + ctl(quit_char) + b" quits the server"
    )
    text = _cut_at_nul(text)  # a disabled kill char (-k "") cuts the line here, as in procServ
    if logout_char:
        text += b", " + ctl(logout_char) + b" closes this connection"
    return text + NL


# -- child lifecycle (broadcast: log file, every client, stdout in -d) ------------------------


def restarting(name: str, argv0: str) -> bytes:
    text = b'@@@ Restarting child "' + _b(name) + b'"' + NL
    if name != argv0:
        text += b"@@@    (as " + _b(argv0) + b")" + NL
    return text


def new_child(name: str, pid: int) -> bytes:
    return b'@@@ The PID of new child "' + _b(name) + b'" is: %d' % pid + NL + SEPARATOR


def child_exited(pid: int, returncode: int) -> bytes:
    """The block procServ writes when it reaps the child (returncode as subprocess gives it)."""
    text = b"@@@ Received a sigChild for process %d." % pid
    if returncode >= 0:
        text += b" Normal exit status = %d" % returncode
    else:
        text += b" The process was killed by signal %d" % -returncode
    return NL + SEPARATOR + text + NL


def current_time(fmt: str, when: float) -> bytes:
    text = _b(format_time(fmt, when))
    if not text or len(text) > _CURRENT_TIME_MAX:
        return b"@@@ Current time: N/A"  # no line end: procServ's fallback has none
    return b"@@@ Current time: " + text + NL


def shutting_down(mode: RestartMode) -> bytes:
    reason = {
        RestartMode.ON: b"a new one will be restarted shortly",
        RestartMode.OFF: b"auto restart is disabled",
        RestartMode.ONESHOT: b"oneshot mode: server will exit",
    }[mode]
    return b"@@@ Child process is shutting down, " + reason + NL


def toggled(mode: RestartMode, procserv_version: str = "2.7") -> bytes:
    return NL + b"@@@ Toggled " + _auto_restart(procserv_version) + b" to " + mode_word(mode) + NL


# -- pyprocserv's own notices (procServ has no such situations) ------------------------------


def output_skipped(nbytes: int) -> bytes:
    return NL + b"@@@ pyprocserv: %d bytes of output skipped: this client could not keep up" % nbytes + NL


def input_dropped(nbytes: int) -> bytes:
    return NL + b"@@@ pyprocserv: %d bytes of input dropped: the child is not reading" % nbytes + NL


def log_error(path: str, reason: str) -> bytes:
    return b"@@@ pyprocserv: cannot write log file " + _b(path) + b": " + _b(reason) + NL


def spawn_failed(reason: str) -> bytes:
    return b"@@@ pyprocserv: could not start the child: " + _b(reason) + NL


def announcement(text: str, who: str = "pyprocserv") -> bytes:
    """A line an extra (PVs, watchdog, host) says on the console and in the log."""
    return b"@@@ " + _b(who) + b": " + _b(text) + NL


def extra_failed(name: str, reason: str, delay: float) -> str:
    """The announcement (text) of a supervised extra that failed."""
    return f"{name} failed ({reason}); the IOC is not affected; restarting {name} in {delay:g} s"


def spawn_retry(reason: str, delay: float) -> bytes:
    return spawn_failed(reason)[: -len(NL)] + b"; next try in %s s" % _b(f"{delay:g}") + NL


def log_resumed(path: str) -> bytes:
    return b"@@@ pyprocserv: log file " + _b(path) + b" is written again" + NL


# -- what the PV channel says (announcements: the text after ``@@@ pyprocserv: ``) ------------

# What each procServControl command PV does, as its put's announcement says it.
CA_COMMANDS = {
    "START": "start",
    "STOP": "auto restart OFF, then kill",
    "RESTART": "auto restart ON, then kill or start",
    "KILL": "kill",
    "TOGGLE": "toggle auto restart",
}


def ca_command(pvname: str, peer: str | None, command: str) -> str:
    """A put to one of procServControl's command PVs (``command``: a key of :data:`CA_COMMANDS`)."""
    return f"CA put {pvname}=1 from {peer or 'this host'}: {CA_COMMANDS[command]}"


def ca_put(pvname: str, value: object) -> str:
    """A put to a host-mode control PV (``MAN:{ioc}_control``)."""
    return f"CA put {pvname}={value}"


def ca_put_all(pvname: str, value: object, instances: int) -> str:
    """A put to a PV that commands every autostart instance (``ALL``, ``MAN:all``)."""
    return f"{ca_put(pvname, value)}: {instances} autostart instance(s)"


def ca_put_refused(pvname: str, peer: str) -> str:
    """The first put refused from a peer in its minute."""
    return f"refused CA put to {pvname} from {peer}: not an allowed host"


def ca_puts_refused(count: int, peer: str, pvname: str) -> str:
    """A refused put that ends a peer's quiet minute: the count since the last report, this one's PV."""
    return (f"refused {count} CA puts from {peer} since the last report, the latest to "
            f"{pvname}: not an allowed host")


def ca_puts_refused_since(count: int, peer: str) -> str:
    """The refused puts counted but not yet reported, once their minute is over."""
    return f"refused {count} more CA put{'s' if count > 1 else ''} from {peer}: not an allowed host"


# -- what the PV watchdog says (announcements: the text after ``@@@ Watchdog: ``) ----------------

WATCHDOG = "Watchdog"  # who says it


def watch_good_again(pv: str) -> str:
    return f"{pv} is good again"


def watch_bad(pv: str, reason: str, hold: float) -> str:
    return f"{pv} is {reason}: restarting the child if it stays so for {hold:g} s"


def watch_budget_spent(max_per_hour: int, pv: str, reason: str) -> str:
    return f"restart budget spent ({max_per_hour} per hour): not restarting the child while {pv} is {reason}"


def watch_backoff(pv: str, reason: str, backoff: float) -> str:
    return f"{pv} is still {reason}: next restart {backoff:g} s after the last one (backoff)"


def watch_restarting(pv: str, reason: str, hold: float, restarts: int, max_per_hour: int) -> str:
    return (f"{pv} has been {reason} for {hold:g} s: restarting the child "
            f"({restarts} of {max_per_hour} per hour)")


# -- the browser console (issue #12): said as ``@@@ web: TEXT`` through Root.announce -------------

WEB_WHO = "web"


def web_action(action: str, user: str, address: str) -> str:
    """What a browser's button did, and who pressed it from where."""
    return f"{action} by {user} from {address}"


def web_attached(user: str, address: str) -> str:
    """A read-write browser console opened: everyone on the console sees who can type now."""
    return f"{user} from {address} attached read-write in a browser"
