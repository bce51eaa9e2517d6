"""pyprocserv: a drop-in procServ in pure Python (trio).

Run a program under a pseudo-terminal, restart it when it dies, and serve its console to
telnet clients, log clients and a log file, byte for byte as procServ 2.7.0 does.

Embedding::

    config = pyprocserv.Config(command=("./st.cmd",), control=("20000",))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(pyprocserv.ProcessServer(config).run)

The public names are those in ``__all__``; everything else lives in the private
subpackages and may change. pyprocserv's own exceptions derive from
:class:`PyprocservError` and keep the standard base callers already catch:
:class:`BindError` is an ``OSError`` (an endpoint cannot be bound, from
:meth:`ProcessServer.run`), :class:`EndpointError` a ``ValueError`` (a spec that
:func:`parse_endpoint` or :class:`Config` cannot read). The library's messages go to the
``logging`` logger ``"pyprocserv"``; the programs show them on stderr.
"""

from ._core.config import Config as Config
from ._core.endpoints import EndpointError as EndpointError
from ._core.endpoints import TcpEndpoint as TcpEndpoint
from ._core.endpoints import UnixEndpoint as UnixEndpoint
from ._core.endpoints import parse_endpoint as parse_endpoint
from ._core.errors import PyprocservError as PyprocservError
from ._core.keys import KeyMap as KeyMap
from ._core.policy import RestartMode as RestartMode
from ._core.watchdog import WatchConfig as WatchConfig
from ._shell.listeners import BindError as BindError
from ._shell.server import ProcessServer as ProcessServer
from ._shell.status import Status as Status
from ._version import __version__ as __version__

__all__ = [
    "BindError",
    "Config",
    "EndpointError",
    "KeyMap",
    "ProcessServer",
    "PyprocservError",
    "RestartMode",
    "Status",
    "TcpEndpoint",
    "UnixEndpoint",
    "WatchConfig",
    "parse_endpoint",
    "__version__",
]
