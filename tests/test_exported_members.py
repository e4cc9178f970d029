"""The package's public names: ``__all__`` lists exactly what the top-level module defines."""

from __future__ import annotations
import __future__

import types

import sqltrack_core


def test_all_matches_public_names() -> None:
    """Verify that __all__ equals the public names in the package namespace, modules aside."""
    public = {
        name
        for name, value in vars(sqltrack_core).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    exported = set(sqltrack_core.__all__) - {"__version__"}
    assert exported == public


def test_all_names_exist() -> None:
    """Verify that every name in __all__ is an attribute of the package, listed once."""
    assert len(sqltrack_core.__all__) == len(set(sqltrack_core.__all__))
    for name in sqltrack_core.__all__:
        assert hasattr(sqltrack_core, name), name


def test_exported_objects_belong_to_the_package() -> None:
    """Verify that every exported class and function is defined inside sqltrack_core."""
    for name in sqltrack_core.__all__:
        value = getattr(sqltrack_core, name)
        module = getattr(value, "__module__", None)
        if module is not None and isinstance(value, (type, types.FunctionType)):
            assert module.split(".")[0] == "sqltrack_core", name
