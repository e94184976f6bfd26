"""The operation table's layering: dispatch knows no operation by name, and nothing in
rest/ reaches exchange/ (DESIGN.md: "Operations in a registry ... no special cases in
dispatch; no import loop between rest and exchange"). Read from the sources (no import), so
the check is exact whatever other tests loaded."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import fhir_server
from fhir_server.operations.table import OPERATIONS

ROOT = Path(fhir_server.__file__).parent


def _file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:  # `from fhir_server import clock`: the package itself
        return ROOT / "__init__.py"
    rel = Path(*parts)
    for path in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _imports(path: Path) -> frozenset[str]:
    """The fhir_server modules `path` imports at run time (not under TYPE_CHECKING)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fhir_server"):
            out.add(str(node.module))
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("fhir_server"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return frozenset(m for m in out if _file(m) is not None)


def _reach(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        path = _file(m)
        if m in seen or path is None:
            continue
        seen.add(m)
        todo.extend(_imports(path))
    return seen


def test_dispatch_names_no_operation() -> None:
    source = (ROOT / "rest" / "dispatch.py").read_text()
    for op in OPERATIONS:
        assert f"${op.name}" not in source and f'"{op.name}"' not in source, op.name


def test_rest_does_not_reach_exchange() -> None:
    for path in sorted((ROOT / "rest").glob("*.py")):
        reached = _reach(f"fhir_server.rest.{path.stem}")
        assert not {m for m in reached if m.startswith("fhir_server.exchange")}, path.name
    # ... while the operations reach both (the check itself is not vacuous).
    assert "fhir_server.exchange.bulk_routes" in _reach("fhir_server.operations.table")
