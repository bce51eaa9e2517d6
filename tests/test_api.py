"""The public surface, in h11's manner: ``__all__`` names every public name and only those,
each resolves, and every public error derives from the one base while keeping the standard
base that callers already catch."""

from __future__ import annotations

import errno
import importlib.resources
import inspect
import logging

import pytest

import pyprocserv
from pyprocserv._apps.logs import log_to_stderr

PUBLIC = {
    "BindError", "Config", "EndpointError", "KeyMap", "ProcessServer", "PyprocservError", "RestartMode",
    "Status", "TcpEndpoint", "UnixEndpoint", "WatchConfig", "parse_endpoint", "__version__",
}
ERRORS = {"BindError": OSError, "EndpointError": ValueError}  # and the standard base each keeps


def test_all_names_exactly_the_public_names():
    assert set(pyprocserv.__all__) == PUBLIC
    assert len(pyprocserv.__all__) == len(PUBLIC)  # none twice


def test_every_name_the_package_shows_is_in_all_or_private():
    shown = {name for name in vars(pyprocserv) if not name.startswith("_")}
    assert shown == PUBLIC - {"__version__"}


def test_every_public_name_resolves():
    for name in pyprocserv.__all__:
        assert getattr(pyprocserv, name) is not None, name
    assert isinstance(pyprocserv.__version__, str) and pyprocserv.__version__


def test_every_public_error_derives_from_the_base_and_keeps_its_standard_base():
    errors = {name for name in pyprocserv.__all__
              if inspect.isclass(getattr(pyprocserv, name)) and issubclass(getattr(pyprocserv, name), BaseException)}
    assert errors == set(ERRORS) | {"PyprocservError"}
    for name, standard in ERRORS.items():
        error = getattr(pyprocserv, name)
        assert issubclass(error, pyprocserv.PyprocservError) and issubclass(error, standard), name


def test_the_errors_are_what_the_library_raises():
    with pytest.raises(pyprocserv.PyprocservError) as error:
        pyprocserv.parse_endpoint("bogus")
    assert isinstance(error.value, pyprocserv.EndpointError) and str(error.value) == "Invalid socket spec 'bogus'"
    bind = pyprocserv.BindError(errno.EADDRINUSE, "cannot listen on 127.0.0.1:1: Address already in use")
    assert (bind.errno, bind.strerror) == (errno.EADDRINUSE, "cannot listen on 127.0.0.1:1: Address already in use")


def test_run_says_what_it_raises():
    doc = inspect.getdoc(pyprocserv.ProcessServer.run) or ""
    assert "BindError" in doc and "Raises" in doc


def test_the_package_says_it_is_typed():
    assert importlib.resources.files("pyprocserv").joinpath("py.typed").is_file()


@pytest.fixture
def restored_logger():
    logger = logging.getLogger("pyprocserv")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_the_programs_show_the_librarys_warnings_on_stderr_as_bare_lines(restored_logger, capsys):
    log_to_stderr()
    log_to_stderr()  # again: still one handler, one line per message
    logging.getLogger("pyprocserv._shell.server").error("ioc: unable to write info file /x: Permission denied")
    logging.getLogger("pyprocserv._shell.server").info("not shown at the default level")
    assert capsys.readouterr().err == "ioc: unable to write info file /x: Permission denied\n"
    log_to_stderr(logging.INFO)  # manage -v
    logging.getLogger("pyprocserv.manage").info("wrote /etc/x")
    assert capsys.readouterr().err == "wrote /etc/x\n"


# The server's API as the README's Embedding section documents it; its parts are private.
SERVER_API = {
    "config", "status", "status_generation", "wait_status_change", "endpoints", "run", "serve_stream", "serve_console",
    "start", "stop", "restart", "kill", "respawn", "shutdown", "toggle_autorestart", "set_restart_mode",
    "set_watch_state", "reopen_log", "announce", "add_output_listener", "remove_output_listener",
}


def test_a_process_server_shows_its_api_and_none_of_its_parts():
    server = pyprocserv.ProcessServer(pyprocserv.Config(command=("/bin/true",)))
    shown = {name for name in dir(server) if not name.startswith("_")}
    assert shown == SERVER_API  # no console, policy, supervisor or greeting to reach into
