"""The procServ command line (pyprocserv._core.cli), parsed without starting anything.

These tests prove that :func:`parse_args` reads procServ's command lines as procServ 2.7.0
does (behaviour §1.1-§1.2): both synopsis forms; glibc getopt_long with a leading ``+``
(stop at the first non-option, ``--``, unambiguous long prefixes, clusters and attached
values, ``--logstamp`` taking its format only attached); the ``-e`` argv quirk; glibc's error
texts and exit codes; ``-h``/``-V``; ``PROCSERV_PID``/``PROCSERV_DEBUG``; restart modes and
command characters. Where procServ silently turns bad numbers into 0, pyprocserv stops with a
message that names the option (Rule 4 of the module). Finally, that any argv whatsoever either
parses or ends in a :class:`CliExit` with a message and code 0 or 1.

:func:`parse_args` raises :class:`CliError` or :class:`CliAnswer`; the program's wrapper
(``read_command_line``) turns them into the exit code and the texts, which is what most of
these tests check, as the user sees them.
"""

from __future__ import annotations

import os
import resource
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._apps.main import CliExit, read_command_line
from pyprocserv._core.cli import OPTIONS, VERSION_LINE, Arity, CliAnswer, CliError, CliOptions, parse_args, usage
from pyprocserv._core.errors import PyprocservError
from pyprocserv._core.endpoints import TcpEndpoint, UnixEndpoint
from pyprocserv._core.keys import KeyMap
from pyprocserv._core.policy import RestartMode

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
PROG = "/usr/bin/procServ"


def parse(*args: str, environ: dict[str, str] | None = None) -> CliOptions:
    return parse_args([PROG, *args], environ={} if environ is None else environ, cwd="/srv/ioc")


def fails(*args: str, environ: dict[str, str] | None = None) -> CliExit:
    with pytest.raises(CliExit) as exit_:
        read_command_line([PROG, *args], environ={} if environ is None else environ, cwd="/srv/ioc")
    return exit_.value


# -- the two synopsis forms --------------------------------------------------------------------


def test_compat_form_takes_the_first_non_option_as_the_endpoint():
    options = parse("20000", "/bin/cat", "-v", "file")
    config = options.config
    assert config.control == (TcpEndpoint(20000),)
    assert config.command == ("/bin/cat", "-v", "file")
    assert config.command_word == "/bin/cat"
    assert config.executable is None
    assert config.child_name == "/bin/cat"


def test_port_form_makes_every_non_option_the_command():
    config = parse("-P", "20000", "-P", "unix:/tmp/ctl.sock", "/bin/cat", "x").config
    assert config.control == (TcpEndpoint(20000), UnixEndpoint("/tmp/ctl.sock"))
    assert config.command == ("/bin/cat", "x")
    assert config.command_word == "/bin/cat"


def test_port_form_command_may_be_a_number():
    config = parse("-P", "20000", "1234", "5678").config
    assert config.control == (TcpEndpoint(20000),)
    assert config.command == ("1234", "5678")


def test_compat_form_needs_an_endpoint_and_a_command():
    error = fails("20000")
    assert error.code == 1
    assert error.stderr == f"{PROG}: missing argument\n"
    assert error.stdout == usage(PROG)


def test_port_form_needs_a_command():
    error = fails("-P", "20000")
    assert error.code == 1
    assert error.stderr == f"{PROG}: missing argument\n"


def test_no_arguments_at_all_is_a_missing_argument():
    error = fails()
    assert (error.code, error.stderr) == (1, f"{PROG}: missing argument\n")


def test_usage_names_argv0_in_both_synopsis_lines():
    assert usage(PROG) == (
        f"Usage: {PROG} [options] -P <endpoint>... <command args ...>    (-h for help)\n"
        f"       {PROG} [options] <endpoint> <command args ...>\n"
    )


# -- getopt semantics ----------------------------------------------------------------------------


def test_options_stop_at_the_first_non_option_so_child_args_may_start_with_a_dash():
    config = parse("20000", "/bin/ls", "-l", "-P", "30000", "--holdoff", "1").config
    assert config.control == (TcpEndpoint(20000),)
    assert config.command == ("/bin/ls", "-l", "-P", "30000", "--holdoff", "1")
    assert config.holdoff == 15.0


def test_double_dash_ends_the_options():
    config = parse("-P", "20000", "--", "-weird", "--name", "x").config
    assert config.command == ("-weird", "--name", "x")
    assert config.name is None


def test_lone_dash_is_a_non_option():
    assert parse("-P", "1", "-", "x").config.command == ("-", "x")


def test_unambiguous_long_prefix_selects_the_option():
    assert parse("--hold", "5", "20000", "cmd").config.holdoff == 5.0
    assert parse("--noauto", "20000", "cmd").config.restart_mode is RestartMode.OFF
    assert parse("--logf", "/tmp/x.log", "20000", "cmd").config.logfile == "/tmp/x.log"


def test_long_option_value_may_be_attached_with_equals():
    assert parse("--holdoff=7", "20000", "cmd").config.holdoff == 7.0
    assert parse("--port=20000", "cmd").config.control == (TcpEndpoint(20000),)


def test_ambiguous_long_prefix_lists_the_possibilities_like_glibc():
    error = fails("--log", "x", "20000", "cmd")
    assert error.code == 1
    assert error.stderr == (
        f"{PROG}: option '--log' is ambiguous; possibilities:"
        " '--logport' '--logfile' '--logstamp' '--logoutcmd'\n"
    )
    assert error.stdout == usage(PROG)


def test_ambiguous_long_prefix_with_attached_value_quotes_the_whole_word_like_glibc():
    # glibc prints prefix + d->__nextchar (2.26+) or argv[optind] (older): both keep "=x".
    error = fails("--log=x", "20000", "cmd")
    assert error.stderr == (
        f"{PROG}: option '--log=x' is ambiguous; possibilities:"
        " '--logport' '--logfile' '--logstamp' '--logoutcmd'\n"
    )


def test_logstamp_with_attached_format_uses_it():
    assert parse("--logstamp=<%H:%M:%S> ", "20000", "cmd").config.logstamp == "<%H:%M:%S> "


def test_logstamp_without_format_stamps_with_bracketed_timefmt():
    config = parse("--logstamp", "--timefmt", "%H:%M:%S", "20000", "cmd").config
    assert config.logstamp == "[%H:%M:%S] "
    assert config.timefmt == "%H:%M:%S"


def test_logstamp_followed_by_a_separate_word_makes_that_word_the_endpoint():
    config = parse("--logstamp", "20000", "cmd").config
    assert config.control == (TcpEndpoint(20000),)
    assert config.command == ("cmd",)
    assert config.logstamp == "[%c] "


def test_logstamp_separate_format_is_read_as_an_invalid_endpoint():
    error = fails("--logstamp", "%H:%M", "20000", "cmd")
    assert error.code == 1
    assert error.stderr == "Invalid socket spec '%H:%M'\n"


def test_no_logstamp_means_no_stamps_and_timefmt_defaults_to_c():
    config = parse("20000", "cmd").config
    assert config.logstamp is None
    assert config.timefmt == "%c"


def test_short_options_cluster():
    options = parse("-fq", "20000", "cmd")
    assert options.foreground and options.quiet
    assert not options.debug


def test_short_option_value_may_be_attached():
    assert parse("-P20000", "cmd").config.control == (TcpEndpoint(20000),)
    assert parse("-n", "ioc", "-P20000", "cmd").config.name == "ioc"


def test_cluster_ending_in_an_option_with_a_value_takes_the_rest_or_the_next_word():
    options = parse("-fP20000", "cmd")
    assert options.foreground and options.config.control == (TcpEndpoint(20000),)
    options = parse("-qP", "20000", "cmd")
    assert options.quiet and options.config.control == (TcpEndpoint(20000),)


def test_repeated_option_keeps_the_last_value():
    assert parse("-n", "a", "-n", "b", "20000", "cmd").config.name == "b"


# -- the -e quirk -----------------------------------------------------------------------------


def test_exec_argv_starts_at_the_token_before_the_command_in_compat_form():
    config = parse("-e", "/bin/cat", "38495", "mycat", "X").config
    assert config.executable == "/bin/cat"
    assert config.command == ("38495", "mycat", "X")
    assert config.command_word == "mycat"
    assert config.child_name == "mycat"
    assert config.control == (TcpEndpoint(38495),)


def test_exec_argv_starts_at_the_last_option_value_in_port_form():
    config = parse("-P", "20000", "-e", "/usr/bin/python3", "ioc.py").config
    assert config.executable == "/usr/bin/python3"
    assert config.command == ("/usr/bin/python3", "ioc.py")
    assert config.command_word == "ioc.py"


def test_without_exec_the_child_argv_is_the_command():
    config = parse("-P", "20000", "/bin/cat", "a").config
    assert config.executable is None
    assert config.command == ("/bin/cat", "a")


# -- help, version, errors in glibc's words ----------------------------------------------------


@pytest.mark.parametrize("flag", ["-h", "--help", "--he"])
def test_help_exits_0_with_usage_and_help_on_stdout(flag):
    error = fails(flag)
    assert error.code == 0
    assert error.stdout.startswith(usage(PROG))
    assert len(error.stdout) > len(usage(PROG))
    assert error.stderr == ""


@pytest.mark.parametrize("flag", ["-V", "--version", "--vers"])
def test_version_exits_0_with_one_line_on_stdout(flag):
    error = fails(flag)
    assert error.code == 0
    assert error.stdout == VERSION_LINE + "\n"


def test_help_ends_parsing_even_with_missing_arguments():
    assert fails("-q", "-h").code == 0


def test_unknown_short_option_is_glibcs_invalid_option():
    error = fails("-r", "20000", "cmd")
    assert error.code == 1
    assert error.stderr == f"{PROG}: invalid option -- 'r'\n"
    assert error.stdout == usage(PROG)


def test_unknown_long_option_is_glibcs_unrecognized_option():
    error = fails("--frobnicate", "20000", "cmd")
    assert error.code == 1
    assert error.stderr == f"{PROG}: unrecognized option '--frobnicate'\n"


def test_unrecognized_long_option_message_keeps_the_attached_value():
    assert fails("--frob=1", "20000", "cmd").stderr == f"{PROG}: unrecognized option '--frob=1'\n"


def test_every_option_error_is_reported_before_exiting():
    error = fails("-r", "--bogus", "-Z", "20000", "cmd")
    assert error.code == 1
    assert error.stderr == (
        f"{PROG}: invalid option -- 'r'\n"
        f"{PROG}: unrecognized option '--bogus'\n"
        f"{PROG}: invalid option -- 'Z'\n"
    )


def test_short_option_missing_its_argument():
    error = fails("-P")
    assert error.code == 1
    assert error.stderr == f"{PROG}: option requires an argument -- 'P'\n{PROG}: missing argument\n"


def test_long_option_missing_its_argument():
    error = fails("--name")
    assert error.code == 1
    assert error.stderr == f"{PROG}: option '--name' requires an argument\n{PROG}: missing argument\n"


def test_long_option_without_argument_rejects_an_attached_value():
    error = fails("--foreground=yes", "20000", "cmd")
    assert error.code == 1
    assert error.stderr == f"{PROG}: option '--foreground' doesn't allow an argument\n"


def test_option_error_and_missing_argument_are_both_reported():
    error = fails("-r", "20000")
    assert error.stderr == f"{PROG}: invalid option -- 'r'\n{PROG}: missing argument\n"


def test_there_is_no_short_r_option_only_long_restrict():
    assert fails("-r", "20000", "cmd").code == 1
    assert parse("--restrict", "20000", "cmd").config.restrict_log


def test_invalid_endpoint_exits_1_with_procservs_message():
    error = fails("bogus", "cmd")
    assert (error.code, error.stderr) == (1, "Invalid socket spec 'bogus'\n")


def test_invalid_control_port_message_is_prefixed_with_argv0():
    error = fails("70000", "cmd")
    assert (error.code, error.stderr) == (1, f"{PROG}: invalid control port 70000 (must be <65536)\n")


def test_unparsable_unix_spec_exits_1_with_procservs_message():
    error = fails("-P", "unix:a:b", "cmd")
    assert (error.code, error.stderr) == (1, "Unix path+permissions spec unparsable 'a:b'\n")


def test_log_endpoint_is_parsed():
    config = parse("-l", "20001", "-P", "20000", "cmd").config
    assert config.log_endpoint == TcpEndpoint(20001)
    assert parse("-P", "20000", "cmd").config.log_endpoint is None


def test_invalid_log_endpoint_exits_1():
    error = fails("-l", "nope", "20000", "cmd")
    assert (error.code, error.stderr) == (1, "Invalid socket spec 'nope'\n")


# -- numbers -----------------------------------------------------------------------------------


def test_holdoff_defaults_to_15_seconds():
    assert parse("20000", "cmd").config.holdoff == 15.0


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("3", 3.0), ("2.5", 2.5), (" 4 ", 4.0)])
def test_holdoff_accepts_non_negative_seconds(text, value):
    assert parse("--holdoff", text, "20000", "cmd").config.holdoff == value


@pytest.mark.parametrize("text", ["abc", "", "-1", "nan", "inf", "5s"])
def test_bad_holdoff_stops_with_a_message_naming_the_option(text):
    error = fails("--holdoff", text, "20000", "cmd")
    assert error.code == 1
    assert "--holdoff" in error.stderr and error.stderr.endswith("\n")


@pytest.mark.parametrize(
    ("text", "number"),
    [("TERM", 15), ("SIGTERM", 15), ("term", 15), ("15", 15), ("-15", 15), ("9", 9), ("KILL", 9), ("INT", 2), ("0", 0)],
)
def test_killsig_accepts_names_and_numbers(text, number):
    assert parse("--killsig", text, "20000", "cmd").config.kill_signal == number


def test_killsig_defaults_to_sigkill():
    assert parse("20000", "cmd").config.kill_signal == signal.SIGKILL


@pytest.mark.parametrize("text", ["FOO", "SIGFOO", "", "99", "1.5", "TERM15"])
def test_bad_killsig_stops_with_a_message_naming_the_option(text):
    error = fails("--killsig", text, "20000", "cmd")
    assert error.code == 1
    assert "--killsig" in error.stderr


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("1000000", 1000000), ("5000000000", 5000000000)])
def test_coresize_accepts_whole_numbers_beyond_int(text, value):
    assert parse("--coresize", text, "20000", "cmd").config.coresize == value


def test_coresize_unlimited_is_rlim_infinity():
    assert parse("--coresize", "unlimited", "20000", "cmd").config.coresize == resource.RLIM_INFINITY


def test_coresize_is_unset_by_default():
    assert parse("20000", "cmd").config.coresize is None


@pytest.mark.parametrize("text", ["abc", "-1", "1.5", ""])
def test_bad_coresize_stops_with_a_message_naming_the_option(text):
    error = fails("--coresize", text, "20000", "cmd")
    assert error.code == 1 and "--coresize" in error.stderr


def test_history_takes_a_line_count():
    assert parse("--history", "25", "20000", "cmd").config.history == 25
    assert parse("20000", "cmd").config.history == 0


@pytest.mark.parametrize("text", ["x", "-3", "2.5"])
def test_bad_history_stops_with_a_message_naming_the_option(text):
    error = fails("--history", text, "20000", "cmd")
    assert error.code == 1 and "--history" in error.stderr


def test_client_budget_takes_bytes_or_k_m_g_and_defaults_to_64_mib():
    assert parse("20000", "cmd").config.client_budget == 64 << 20
    assert parse("--client-budget", "65536", "20000", "cmd").config.client_budget == 65536
    assert parse("--client-budget", "512K", "20000", "cmd").config.client_budget == 512 << 10
    assert parse("--client-budget=16m", "20000", "cmd").config.client_budget == 16 << 20
    assert parse("--client-budget", "2G", "20000", "cmd").config.client_budget == 2 << 30
    assert "--client-budget <n>" in fails("--help").stdout


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5M", "M", "12X", "64 M", "\u0661\u0662", "\u00b2"])
def test_bad_client_budget_stops_with_a_message_naming_the_option(text):
    error = fails("--client-budget", text, "20000", "cmd")
    assert error.code == 1 and "--client-budget" in error.stderr


def test_grace_period_takes_seconds():
    assert parse("-G", "5", "20000", "cmd").config.grace_period == 5.0
    assert parse("--grace-period=1.5", "20000", "cmd").config.grace_period == 1.5
    assert parse("20000", "cmd").config.grace_period == 0.0


@pytest.mark.parametrize("text", ["abc", "-2"])
def test_bad_grace_period_stops_with_a_message_naming_the_option(text):
    error = fails("-G", text, "20000", "cmd")
    assert error.code == 1 and "--grace-period" in error.stderr


# -- environment ----------------------------------------------------------------------------------


def test_procserv_pid_names_the_pid_file():
    assert parse("20000", "cmd", environ={"PROCSERV_PID": "/run/x.pid"}).pidfile == "/run/x.pid"


def test_pidfile_option_overrides_procserv_pid():
    options = parse("-p", "/tmp/mine.pid", "20000", "cmd", environ={"PROCSERV_PID": "/run/x.pid"})
    assert options.pidfile == "/tmp/mine.pid"


def test_no_pid_file_by_default_and_with_an_empty_procserv_pid():
    assert parse("20000", "cmd").pidfile is None
    assert parse("20000", "cmd", environ={"PROCSERV_PID": ""}).pidfile is None


@pytest.mark.parametrize("value", ["1", "", "no"])
def test_procserv_debug_with_any_value_is_debug_mode(value):
    options = parse("20000", "cmd", environ={"PROCSERV_DEBUG": value})
    assert options.debug
    assert options.config.echo_to_stdout


def test_debug_copies_the_log_to_stdout_unless_foreground():
    assert parse("-d", "20000", "cmd").config.echo_to_stdout
    assert not parse("-d", "-f", "20000", "cmd").config.echo_to_stdout
    assert not parse("20000", "cmd").debug


def test_environ_parameter_is_used_instead_of_the_process_environment(monkeypatch):
    monkeypatch.setenv("PROCSERV_DEBUG", "1")
    monkeypatch.setenv("PROCSERV_PID", "/from/os.pid")
    options = parse("20000", "cmd", environ={})
    assert not options.debug and options.pidfile is None


# -- modes, keys, the rest ------------------------------------------------------------------------


def test_restart_mode_defaults_to_on():
    config = parse("20000", "cmd").config
    assert config.restart_mode is RestartMode.ON
    assert not config.wait


def test_noautorestart_is_off_mode():
    assert parse("--noautorestart", "20000", "cmd").config.restart_mode is RestartMode.OFF


@pytest.mark.parametrize("flag", ["-o", "--oneshot"])
def test_oneshot_is_oneshot_mode(flag):
    assert parse(flag, "20000", "cmd").config.restart_mode is RestartMode.ONESHOT


def test_wait_holds_the_first_start():
    assert parse("-w", "20000", "cmd").config.wait


def test_default_keys_are_ctrl_x_and_ctrl_t_without_logout_or_ignore():
    assert parse("20000", "cmd").config.keys == KeyMap()


def test_empty_killcmd_disables_kill():
    keys = parse("-k", "", "20000", "cmd").config.keys
    assert keys.kill == 0
    assert keys.toggle == 0x14


def test_empty_autorestartcmd_disables_toggle():
    assert parse("--autorestartcmd", "", "20000", "cmd").config.keys.toggle == 0


def test_command_chars_use_getoptionchar_specs():
    keys = parse("-k", "^K", "--autorestartcmd", "q", "-x", "^D", "20000", "cmd").config.keys
    assert (keys.kill, keys.toggle, keys.logout) == (0x0B, ord("q"), 0x04)


def test_ignore_uses_procservs_scan():
    keys = parse("-i", "^D^C^]", "20000", "cmd").config.keys
    assert keys.ignore == b"\x04\x03^]"


def test_procservutils_launcher_command_line_parses():
    options = parse(
        "--foreground", "--logfile", "-", "--name", "ioc", "--ignore", "^D^C^]", "--logoutcmd", "^D",
        "--chdir", "/epics/ioc", "--info-file", "/run/procserv-ioc/info",
        "--port", "unix:/run/procserv-ioc/control", "./st.cmd", "--verbose",
    )
    config = options.config
    assert options.foreground
    assert config.logfile == "-"
    assert config.name == "ioc" and config.child_name == "ioc"
    assert config.keys.logout == 0x04
    assert config.chdir == "/epics/ioc"
    assert config.info_file == "/run/procserv-ioc/info"
    assert config.control == (UnixEndpoint("/run/procserv-ioc/control"),)
    assert config.command == ("./st.cmd", "--verbose")


def test_chdir_defaults_to_the_given_cwd():
    assert parse("20000", "cmd").config.chdir == "/srv/ioc"


def test_allow_enables_remote_control_with_a_warning():
    options = parse("--allow", "20000", "cmd")
    assert options.config.allow_remote_control
    assert options.warnings and all(w.endswith("\n") for w in options.warnings)
    assert not parse("20000", "cmd").config.allow_remote_control


def test_program_name_is_argv0():
    assert parse("20000", "cmd").config.program_name == PROG


def test_non_utf8_argument_from_argv_reaches_the_child_unchanged():
    weird = os.fsdecode(b"caf\xe9")
    assert parse("20000", "cmd", weird).config.command == ("cmd", weird)


def test_non_utf8_unix_socket_path_from_argv_is_accepted():
    path = os.fsdecode(b"/tmp/caf\xe9.sock")
    assert parse("-P", "unix:" + path, "cmd").config.control == (UnixEndpoint(path),)


# -- property ---------------------------------------------------------------------------------

_option_words = st.sampled_from(
    [
        "-P", "-P20000", "-e", "-k", "-k^X", "-x", "-i", "-l", "-L", "-n", "-c", "-G", "-p", "-I",
        "-f", "-d", "-q", "-w", "-o", "-fq", "-h", "-V", "-r", "-", "--", "--port", "--hold",
        "--holdoff", "--killsig", "--coresize", "--history", "--logstamp", "--logstamp=%H",
        "--log", "--noautorestart", "--allow", "--restrict", "--timefmt", "--grace-period",
        "--foreground=1", "--bogus", "--=", "---", "--help=x",
    ]
)
_value_words = st.one_of(
    st.sampled_from(["20000", "0", "70000", "-1", "unix:/tmp/x", "unix:@a", "unix:a:b", "[::1]:1",
                     "1.2.3.4:5", "TERM", "15", "99", "abc", "", "^", "^X", "unlimited", "2.5"]),
    st.text(max_size=12),
    st.binary(max_size=12).map(os.fsdecode),
    st.binary(max_size=12).map(lambda raw: "unix:/" + os.fsdecode(raw)),
)
_argvs = st.lists(st.one_of(_option_words, _value_words), max_size=10)


@SETTINGS
@given(_argvs, st.dictionaries(st.sampled_from(["PROCSERV_PID", "PROCSERV_DEBUG", "HOME"]), st.text(max_size=5)))
def test_any_argv_parses_or_exits_with_a_message_and_code_0_or_1(args, environ):
    try:
        options = read_command_line([PROG, *args], environ=environ, cwd="/")
    except CliExit as error:
        assert error.code in (0, 1)
        assert str(error)
        assert error.stdout or error.stderr
    else:
        assert isinstance(options, CliOptions)
        assert options.config.command


@SETTINGS
@given(st.lists(st.text(max_size=10), max_size=6))
def test_any_argv_even_with_an_odd_argv0_parses_or_exits_cleanly(argv):
    try:
        read_command_line(argv, environ={}, cwd="/")
    except CliExit as error:
        assert error.code in (0, 1) and str(error)


# -- the procServ dialect ----------------------------------------------------------------------


def test_procserv_version_defaults_to_2_7_and_takes_2_8():
    assert parse("-P", "20000", "cat").config.procserv_version == "2.7"
    assert parse("--procserv-version", "2.8", "-P", "20000", "cat").config.procserv_version == "2.8"
    assert parse("--procserv-version=2.7", "-P", "20000", "cat").config.procserv_version == "2.7"


def test_an_unknown_procserv_version_is_refused_with_the_choices():
    exit_ = fails("--procserv-version", "2.9", "-P", "20000", "cat")
    assert exit_.code == 1
    assert exit_.stderr == f"{PROG}: invalid --procserv-version '2.9': expected 2.7 or 2.8\n"


def test_help_documents_the_procserv_version_option():
    assert "--procserv-version <v>" in fails("-h").stdout


# -- the parser's errors, before the program turns them into texts and exit codes -------------


def test_the_parser_raises_the_message_and_leaves_printing_to_the_program():
    with pytest.raises(CliError) as error:
        parse_args([PROG, "-r", "20000", "cmd"], environ={}, cwd="/")
    assert error.value.message == f"{PROG}: invalid option -- 'r'\n"
    assert error.value.show_usage
    assert isinstance(error.value, PyprocservError) and isinstance(error.value, ValueError)
    with pytest.raises(CliError) as error:
        parse_args([PROG, "--holdoff", "abc", "20000", "cmd"], environ={}, cwd="/")
    assert not error.value.show_usage and "--holdoff" in error.value.message
    with pytest.raises(CliAnswer) as answer:
        parse_args([PROG, "-r", "-V"], environ={}, cwd="/")
    assert answer.value.text == VERSION_LINE + "\n"
    assert answer.value.message == f"{PROG}: invalid option -- 'r'\n"


def test_the_option_table_names_each_option_and_letter_once():
    names = [option.name for option in OPTIONS]
    letters = [option.short for option in OPTIONS if option.short]
    assert len(names) == len(set(names)) and len(letters) == len(set(letters))
    assert all(option.arity is Arity.NONE for option in OPTIONS if option.answer is not None)
    assert {option.needs for option in OPTIONS if option.needs} <= set(names)
