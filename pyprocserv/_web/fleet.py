"""The IOCs one browser console serves: a fleet, whether of one server or of a whole host.

Rules:
1. A :class:`Fleet` names its instances (:meth:`Fleet.names`, sorted), gives the ``Root`` of one
   by name (None while it has no server: unknown, or host mode retrying one that failed), and
   wakes :meth:`Fleet.wait_change` at the next change of any instance's status or of the set of
   instances. The web app knows nothing else of where the instances come from.
2. ``pyprocserv --web`` is a fleet of one (:class:`OneServer`, named by its ``-n``); host mode's
   ``Host`` is a fleet of all its instances, which come and go on a reload.
3. :func:`snapshot` is what the status table, ``api/status`` and ``ws/status`` show of the
   instances a user may see: one dict a name, the server's :class:`Status` as plain values
   and ``"serving"``; an instance without a server is its name and ``"serving": false``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, final

if TYPE_CHECKING:
    from .._shell.extras import Root


class Fleet(Protocol):
    """The instances a browser console serves (rule 1)."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Root | None: ...

    async def wait_change(self) -> None: ...


@final
class OneServer:
    """One server as a fleet (rule 2): ``pyprocserv --web``."""

    def __init__(self, root: Root) -> None:
        self._root = root
        self._name = root.config.child_name

    def names(self) -> list[str]:
        return [self._name]

    def get(self, name: str) -> Root | None:
        return self._root if name == self._name else None

    async def wait_change(self) -> None:
        await self._root.wait_status_change()


def entry(fleet: Fleet, name: str) -> dict[str, object]:
    """One instance as ``api/ioc/NAME`` shows it (rule 3)."""
    root = fleet.get(name)
    if root is None:
        return {"name": name, "serving": False}
    return {**root.status.as_dict(), "name": name, "serving": True}


def snapshot(fleet: Fleet, visible: Callable[[str], bool]) -> list[dict[str, object]]:
    """Every instance ``visible`` lets through, by name (rule 3)."""
    return [entry(fleet, name) for name in fleet.names() if visible(name)]
