"""The server's layers, read from its imports: each layer imports only the ones below it.

The imports are read with `ast` from the source, nothing is imported. The rules:

- handlers (``api/``) and services (``services/``) use the store through its interface
  (``store/base.py``): none imports a store implementation (``store/sqlite*``), so a second
  backend needs no change above the store;
- the store (``store/``) reads no request state and translates no errors: it imports nothing
  from ``auth/``, ``api/`` or ``services/``;
- authentication (``auth/``) imports nothing from ``api/`` or ``services/``;
- no two modules import each other, directly or through others, when imported (imports inside
  functions, and those under ``if TYPE_CHECKING:``, run later or never, and are left out).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "agent_training_server"
ROOT = Path(__file__).resolve().parents[1] / "server" / PACKAGE


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement of a module, resolved to a module of the server."""

    importer: str
    imported: str
    line: int
    at_import_time: bool
    """False inside a function or an ``if TYPE_CHECKING:`` block."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], at_import_time: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every statement, nested ones too, with whether it runs when the module is imported."""
    for statement in body:
        yield statement, at_import_time
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _statements(statement.body, False)
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _statements(statement.body, False)
            yield from _statements(statement.orelse, at_import_time)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                nested = getattr(statement, field, None)
                if isinstance(nested, list):
                    blocks = [getattr(each, "body", each) for each in nested]
                    for block in blocks:
                        if isinstance(block, list):
                            yield from _statements(block, at_import_time)
                        elif isinstance(block, ast.stmt):
                            yield from _statements([block], at_import_time)


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The server's modules an import statement loads (outside modules are left out)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = importer.split(".")
            is_package = MODULES[importer].name == "__init__.py"
            anchor = package[: len(package) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        # `from package import module` loads the module; `from module import name`, the module.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    return sorted({name for name in names if name in MODULES})


def _imports() -> list[Import]:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for statement, at_import_time in _statements(tree.body, True):
            if isinstance(statement, ast.Import | ast.ImportFrom):
                for imported in _resolve(module, statement):
                    found.append(Import(module, imported, statement.lineno, at_import_time))
    return found


IMPORTS = _imports()


def _in(module: str, *layers: str) -> bool:
    return any(
        module == f"{PACKAGE}.{layer}" or module.startswith(f"{PACKAGE}.{layer}.")
        for layer in layers
    )


def test_the_import_reader_finds_the_imports_it_checks() -> None:
    # A reader that found nothing would pass every rule below.
    assert f"{PACKAGE}.store.sqlite" in MODULES
    assert (
        Import(f"{PACKAGE}.startup", f"{PACKAGE}.store.sqlite", _line_of_sqlite_import(), True)
        in IMPORTS
    )
    lazy = [i for i in IMPORTS if not i.at_import_time]
    assert lazy, "imports inside functions and TYPE_CHECKING blocks are told apart"


def _line_of_sqlite_import() -> int:
    source = MODULES[f"{PACKAGE}.startup"].read_text().splitlines()
    return next(
        number
        for number, line in enumerate(source, 1)
        if line.startswith("from agent_training_server.store.sqlite import")
    )


def test_handlers_and_services_use_no_store_implementation() -> None:
    offending = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if _in(i.importer, "api", "services")
        and _in(i.imported, "store")
        and i.imported.split(".")[2].startswith(("sql", "postgres"))  # sqlite*, sql/, postgres*
    ]
    assert offending == []


def test_the_store_imports_nothing_from_auth_api_or_services() -> None:
    offending = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if _in(i.importer, "store") and _in(i.imported, "auth", "api", "services")
    ]
    assert offending == []


def test_auth_imports_nothing_from_api_or_services() -> None:
    # Authentication runs before any handler: it raises the service's errors (errors.py) and
    # leaves their translation to the error interceptor.
    offending = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if _in(i.importer, "auth") and _in(i.imported, "api", "services")
    ]
    assert offending == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), or importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_modules_import_each_other() -> None:
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        if i.at_import_time and i.imported != i.importer:
            edges.setdefault(i.importer, set()).add(i.imported)
    assert _cycles(edges) == []


@pytest.mark.parametrize("layer", ["api", "services", "store", "auth"])
def test_every_layer_has_modules(layer: str) -> None:
    # A renamed folder would otherwise leave its rule checking nothing.
    assert any(_in(module, layer) for module in MODULES)
