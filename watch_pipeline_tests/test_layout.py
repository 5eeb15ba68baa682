"""The package's layout rules, checked by reading every module's source (nothing is imported).

1. Only ``definitions.py``, ``defs/**`` and ``*/resource.py`` import dagster.
2. Only ``defs/resources.py`` and the CLI's entry (``cli/main.py``) read the environment
   (``os.environ``, ``os.getenv``, ...): configuration enters once, at launch.
3. No import circle between modules of the package.
4. Data flows one way: a room never imports a room above it. From the bottom up: ``catalog``;
   ``media``; ``sources``, ``store``, ``transcribe``, ``mail`` (side by side); ``pipeline``;
   ``ops``; ``defs`` and ``definitions.py``; ``cli``.

``KNOWN_EXCEPTIONS`` lists what still breaks a rule while its owner's work is in flight. It can
only shrink: an entry that no longer breaks its rule fails :func:`test_known_exceptions_are_current`
until it is removed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "watch_pipeline"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

ROOM_RANK = {
    "__init__": -1,  # the package's own (empty) __init__.py
    "catalog": 0,
    "media": 1,
    "sources": 2, "store": 2, "transcribe": 2, "mail": 2,
    "pipeline": 3,
    "ops": 4,
    "defs": 5, "definitions": 5,
    "cli": 6,
}
DAGSTER_ALLOWED = ("definitions.py", "defs/", "*/resource.py")
ENVIRONMENT_READERS = {"defs/resources.py", "cli/main.py"}
_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}

# (rule, module path relative to the package, what it imports or reads) -> who is fixing it.
# The lead empties this list at the end of the restructure; never add to it.
KNOWN_EXCEPTIONS: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement of a module."""

    target: str  # the dotted module (or package) named
    line: int
    type_only: bool  # inside ``if TYPE_CHECKING:``


@dataclass(frozen=True)
class Module:
    """One source file of the package."""

    path: str  # relative to the package, e.g. "catalog/db.py"
    name: str  # dotted, e.g. "watch_pipeline.catalog.db"
    tree: ast.Module

    @property
    def room(self) -> str:
        """The first folder below the package, or the file's stem for a top-level module."""
        first = self.path.split("/", 1)[0]
        return first.removesuffix(".py")


def _modules() -> list[Module]:
    modules = []
    for file in sorted(ROOT.rglob("*.py")):
        rel = file.relative_to(ROOT).as_posix()
        parts = [PACKAGE, *rel.removesuffix(".py").split("/")]
        if parts[-1] == "__init__":
            parts.pop()
        modules.append(Module(rel, ".".join(parts), ast.parse(file.read_text(), filename=rel)))
    return modules


MODULES = _modules()
NAMES = {m.name for m in MODULES}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: Module) -> Iterator[Import]:
    """Every import of ``module``, at any depth (imports inside functions count too)."""

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.name.split(".")
        if not module.path.endswith("__init__.py"):
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def walk(node: ast.AST, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, child.lineno, type_only)
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child)
                for alias in child.names:
                    # ``from pkg import mod`` imports the module pkg.mod when there is one.
                    sub = f"{target}.{alias.name}"
                    yield Import(sub if sub in NAMES else target, child.lineno, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                yield from walk(child, True)
            else:
                yield from walk(child, type_only)

    yield from walk(module.tree, False)


def _environment_reads(module: Module) -> Iterator[tuple[str, int]]:
    for node in ast.walk(module.tree):
        if (isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            yield f"os.{node.attr}", node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in _ENV_NAMES:
                    yield f"os.{alias.name}", node.lineno


def _dagster_allowed(path: str) -> bool:
    return (path == "definitions.py" or path.startswith("defs/")
            or path.endswith("/resource.py"))


def _internal(target: str) -> str | None:
    """The package module ``target`` names, or ``None`` (third party, or an empty package)."""
    return target if target in NAMES and target != PACKAGE else None


def _room_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


Violation = tuple[str, str, str]


def _dagster_violations() -> dict[Violation, str]:
    found = {}
    for module in MODULES:
        if _dagster_allowed(module.path):
            continue
        for imp in _imports(module):
            top = imp.target.split(".")[0]
            if top == "dagster" or top.startswith("dagster_"):
                found[("dagster", module.path, top)] = f"{module.path}:{imp.line} imports {top}"
    return found


def _environment_violations() -> dict[Violation, str]:
    found = {}
    for module in MODULES:
        if module.path in ENVIRONMENT_READERS:
            continue
        for what, line in _environment_reads(module):
            found[("environment", module.path, what)] = f"{module.path}:{line} reads {what}"
    return found


def _room_violations() -> dict[Violation, str]:
    found = {}
    for module in MODULES:
        rank = ROOM_RANK[module.room]
        for imp in _imports(module):
            target = _internal(imp.target)
            if target is None:
                continue
            room = _room_of(target)
            if ROOM_RANK[room] > rank:
                found[("room", module.path, target)] = (
                    f"{module.path}:{imp.line} ({module.room}) imports {target} ({room}), "
                    "a room above it")
    return found


def _import_graph() -> dict[str, list[str]]:
    """Module -> the package modules it imports at run time (``TYPE_CHECKING`` aside)."""
    return {m.name: sorted({t for imp in _imports(m) if not imp.type_only
                            if (t := _internal(imp.target)) and t != m.name})
            for m in MODULES}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every set of modules that import each other in a circle (Tarjan's SCCs), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return sorted(found)


def _unexpected(found: dict[Violation, str]) -> list[str]:
    return sorted(message for key, message in found.items() if key not in KNOWN_EXCEPTIONS)


def test_every_module_lives_in_a_known_room():
    assert sorted({m.room for m in MODULES} - set(ROOM_RANK)) == []


def test_only_the_wiring_and_resource_modules_import_dagster():
    assert _unexpected(_dagster_violations()) == []


def test_only_launch_and_the_cli_entry_read_the_environment():
    assert _unexpected(_environment_violations()) == []


def test_no_room_imports_a_room_above_it():
    """E.g. the catalog (the bottom room) never imports mail, pipeline, sources, store, ..."""
    assert _unexpected(_room_violations()) == []


def test_no_import_circle():
    assert _cycles(_import_graph()) == []


def test_a_circle_is_found():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": ["f"], "f": ["e"]}
    assert _cycles(graph) == [["a", "b", "c"], ["e", "f"]]


def test_known_exceptions_are_current():
    """An exception that no longer happens is removed from the list (it only shrinks)."""
    found = {**_dagster_violations(), **_environment_violations(), **_room_violations()}
    assert sorted(key for key in KNOWN_EXCEPTIONS if key not in found) == []


@pytest.mark.parametrize("source, expected", [
    ("import os\nos.environ.get('X')\n", ["os.environ"]),
    ("import os\nos.getenv('X')\n", ["os.getenv"]),
    ("from os import environ\n", ["os.environ"]),
    ("'''os.environ in a docstring'''\nimport os\nos.path.join('a')\n", []),
])
def test_environment_reads_are_found(source, expected):
    module = Module("x/y.py", "watch_pipeline.x.y", ast.parse(source))
    assert [what for what, _ in _environment_reads(module)] == expected


def test_imports_are_found_at_any_depth_and_relative():
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from watch_pipeline.catalog.db import Catalog\n"
              "def f():\n    import dagster as dg\n    from . import resource\n")
    module = Module("store/x.py", "watch_pipeline.store.x", ast.parse(source))
    found = [(i.target, i.type_only) for i in _imports(module)]
    assert ("watch_pipeline.catalog.db", True) in found
    assert ("dagster", False) in found
    assert ("watch_pipeline.store.resource", False) in found
