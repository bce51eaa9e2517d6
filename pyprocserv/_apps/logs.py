"""The programs' stderr: what the library logs, shown as bare lines, as it printed them before.

The library (``_shell``, ``_ca``) reports through ``logging.getLogger(__name__)``, under the
``"pyprocserv"`` logger, and never prints. Each program (``pyprocserv``, ``pyprocserv-manage``
and its host mode) calls :func:`log_to_stderr` once at its start, so that its stderr stays
byte for byte what it was: the message and a line end, nothing else.
"""

from __future__ import annotations

import logging
import sys


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a daemon's /dev/null, a test's capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def log_to_stderr(level: int = logging.WARNING) -> None:
    """Show the ``"pyprocserv"`` logger's messages of ``level`` or above on stderr, as ``%(message)s``.

    WARNING by default: every message the library printed before is a warning or an error; a
    program's ``-v`` may ask for INFO or DEBUG. Calling it again replaces the handler.
    """
    logger = logging.getLogger("pyprocserv")
    for handler in [h for h in logger.handlers if isinstance(h, _Stderr)]:
        logger.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
