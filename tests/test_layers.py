"""The package's layers, as the folders show them (docs/architecture.md, "Layers").

Every import counts, at module level, inside a function or under ``TYPE_CHECKING``: a lazy
import is still a dependency a reader has to keep in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyprocserv"
LAYERS = ["_core", "_shell", "_ca", "_apps"]  # each may import only the ones before it
# The pure core does no I/O of its own: no event loop, no sockets, no processes, no terminals.
NOT_IN_CORE = {"trio", "anyio", "asyncio", "socket", "selectors", "select", "subprocess", "caproto",
               "fcntl", "termios", "pty", "tty", "threading", "ctypes"}


def modules() -> dict[str, Path]:
    """``_core.telnet`` -> its file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level outside packages) that ``name`` imports anywhere."""
    inside, outside = set(), set()
    package_parts = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "pyprocserv":
                    inside.add(alias.name.removeprefix("pyprocserv.") or "__init__")
                else:
                    outside.add(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")[0]
                if top != "pyprocserv":
                    outside.add(top)
                    continue
                base = (node.module or "").split(".")[1:]
            else:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                base = base + (node.module.split(".") if node.module else [])
            target = ".".join(base)
            for alias in node.names:
                candidate = ".".join([*base, alias.name])
                inside.add(candidate if candidate in modules() or candidate + ".__init__" in modules()
                           else target or "__init__")
    return inside, outside


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in LAYERS else None


ALL = modules()


@pytest.mark.parametrize("name", [m for m in ALL if layer_of(m) == "_core"])
def test_the_pure_core_imports_no_event_loop_socket_process_or_caproto(name):
    inside, outside = imports(name, ALL[name])
    assert not outside & NOT_IN_CORE, f"{name} imports {sorted(outside & NOT_IN_CORE)}"
    assert {layer_of(m) for m in inside} <= {"_core", None}, f"{name} imports {sorted(inside)}"
    assert not {m for m in inside if layer_of(m) is None} - {"_version"}, sorted(inside)


def test_the_layer_check_sees_every_kind_of_import(tmp_path):
    """The check above can fail: lazy and TYPE_CHECKING imports count as much as top-level ones."""
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n"
                      "def f():\n    from .._shell import server\n    import caproto.server\n")
    inside, outside = imports("_core.sample", sample)
    assert {"trio", "caproto", "typing"} <= outside
    assert "_shell.server" in inside
