"""The house rules, read from the source: no import cycles, dialects only inside `_backends/`,
nothing private of the core used by the integrations or the CLI, modules of one size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _imports import PACKAGES, cycles, graph, modules

MAX_LINES = 500
DIALECT_NAMES = {"sqlite", "postgresql", "postgres"}


def test_no_import_cycles() -> None:
    """Verify the modules import each other in one direction only, counting imports inside
    functions and under ``if TYPE_CHECKING``."""
    assert cycles(graph()) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small(name: str) -> None:
    """Verify no module of ours is longer than 500 lines."""
    lines = modules()[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def _outside_backends() -> list[tuple[str, Path]]:
    backends = PACKAGES["sqltrack_core"] / "_backends"
    return [(n, p) for n, p in modules().items() if backends not in p.parents]


def test_no_dialect_branch_outside_the_backends() -> None:
    """Verify no comparison with a dialect name, and no ``.dialect ==``, outside `_backends/`:
    the dialect object answers instead."""
    found = []
    for name, path in _outside_backends():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            named = any(
                isinstance(o, ast.Constant)
                and isinstance(o.value, str)
                and o.value.lower() in DIALECT_NAMES
                for o in operands
            )
            dialect = any(isinstance(o, ast.Attribute) and o.attr == "dialect" for o in operands)
            if named or dialect:
                found.append(f"{name}:{node.lineno}")
    assert found == []


def _private_uses(path: Path) -> list[str]:
    """``sqltrack_core._x`` imports, and calls ``obj._x(...)`` where obj is not self or cls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "sqltrack_core" and any(p.startswith("_") for p in parts[1:]):
                found.append(f"{node.lineno}: from {node.module}")
            if node.module == "sqltrack_core":
                found += [
                    f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")
                ]
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("sqltrack_core._")
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, owner = node.func.attr, node.func.value
            private = attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))
            if private and not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{node.lineno}: ._{attr.lstrip('_')}()")
    return found


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(modules()) if n.startswith(("sqltrack_integrations", "sqltrack_core.cli"))],
)
def test_integrations_and_cli_use_no_private_name(name: str) -> None:
    """Verify the integrations and the CLI import nothing private from the core and call no
    other object's private methods: `sqltrack_core.integration` is their seam."""
    assert _private_uses(modules()[name]) == []
