"""The package's layers, as the folders show them (docs/architecture.md, "Layers").

Every import counts, at module level, inside a function or under ``TYPE_CHECKING``: a lazy
import is still a dependency a reader has to keep in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyprocserv"
LAYERS = ["_core", "_shell", "_ca", "_web", "_apps"]  # each may import only the ones before it
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


# -- every layer imports only itself and the layers before it ------------------------------------

# Outside the order: the package's __init__ gathers the public names of every layer, __main__
# runs a program, and _version imports nothing.
ANY_LAYER = {"__init__", "__main__"}


def layer_violations(name: str, inside: set[str]) -> list[str]:
    """The modules ``name`` imports that its layer may not: a later layer, or the package's top."""
    if name in ANY_LAYER:
        return []
    if name == "_version":
        return sorted(inside)
    layer = layer_of(name)
    assert layer is not None, f"{name} is in no layer: put it in one of {LAYERS}"
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    return sorted(m for m in inside if layer_of(m) not in allowed and m != "_version")


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_layer_imports_only_itself_and_the_layers_before_it(name):
    inside, _ = imports(name, ALL[name])
    assert not layer_violations(name, inside), (
        f"{name} ({layer_of(name)}) imports {layer_violations(name, inside)}; the order is {' < '.join(LAYERS)}")


def test_the_layer_order_check_can_fail(tmp_path):
    """A shell module that reaches up into the CA layer (lazily), or back to the package's top, is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("from .extras import Root\n"
                      "def f():\n    from .._ca import pvs\n    from .. import _version, ProcessServer\n")
    inside, _ = imports("_shell.sample", sample)
    assert layer_violations("_shell.sample", inside) == ["__init__", "_ca.pvs"]
    assert layer_violations("_apps.sample", inside) == ["__init__"]
    assert layer_violations("__init__", inside) == []
    assert layer_violations("_version", {"_core.log"}) == ["_core.log"]


# -- no import cycle, lazy or not ------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of this package it imports (anywhere in it: lazily, under TYPE_CHECKING)."""
    return {name: imports(name, path)[0] - {name} for name, path in ALL.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the path that closes it (``[a, b, a]``), or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_can_fail(tmp_path):
    """A cycle through a TYPE_CHECKING import is found and named; a graph without one passes."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    sample = tmp_path / "extras.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .server import Status\n")
    graph = {"_shell.extras": imports("_shell.extras", sample)[0], "_shell.server": {"_shell.extras"}}
    assert find_cycle(graph) == ["_shell.extras", "_shell.server", "_shell.extras"]
