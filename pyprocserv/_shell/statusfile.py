"""The info file (``-I``) and the status file (``--status-file``) of one server.

Rules:
1. The info file is written once, when the server serves, in procServ's format; tools may take
   its appearance as "ready".
2. The status file is the :class:`~pyprocserv._shell.server.Status` snapshot as JSON, replaced
   atomically on every change, at most 5 times a second; it runs as an extra, so a failure to
   write ends it and never the server.
3. A file that cannot be written is said once on the log (procServ's wording), not raised.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio

from .files import replace_file, write_owned_file
from .listeners import BoundEndpoint, info_lines

if TYPE_CHECKING:
    from .extras import Root

logger = logging.getLogger(__name__)
STATUS_FILE_PERIOD = 0.2


def write_info_file(path: str, program_name: str, server_pid: int, bound: list[BoundEndpoint]) -> None:
    try:
        text = "".join(line + "\n" for line in info_lines(server_pid, bound))
        write_owned_file(path, text, "info file")
    except OSError as exc:
        logger.error(f"{program_name}: unable to write info file {path}: {exc.strerror}")


async def keep_status_file(root: Root, path: str) -> None:
    """Rewrite the status file on every change of ``root``'s status until cancelled."""
    generation = None
    while True:
        snapshot = json.dumps(root.status.as_dict(), sort_keys=True)
        try:
            replace_file(path, snapshot + "\n")
        except OSError as exc:
            logger.error(f"{root.config.program_name}: unable to write status file {path}: {exc.strerror}")
            return
        generation = await root.wait_status_change(generation)
        await trio.sleep(STATUS_FILE_PERIOD)
