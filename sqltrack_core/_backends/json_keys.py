"""The keys of a JSON object column as rows, in each dialect (for keys kept in ``metrics.extra``).

A key is matched as a whole string: SQLite's ``->`` reads a key such as ``a.b`` or ``$x`` as a
JSON path, and PostgreSQL's ``?`` operator clashes with the ``?`` placeholders, so both
dialects list the object's top-level members instead (``json_each``, ``jsonb_each``).
"""

from __future__ import annotations

from .dialect import Dialect, PostgresDialect

__all__ = ["object_keys_sql", "object_members_sql"]


def object_keys_sql(dialect: Dialect, column: str, alias: str) -> str:
    """A FROM item giving one row per top-level key of the JSON object `column` (a fixed
    name, never user text), the key in ``<alias>.key``, whatever its value (null too)."""
    if isinstance(dialect, PostgresDialect):
        return f"jsonb_object_keys({column}) AS {alias}(key)"
    return f"json_each({column}) AS {alias}"


def object_members_sql(dialect: Dialect, column: str, alias: str) -> tuple[str, str]:
    """A FROM item giving one row per top-level member of the JSON object `column` (a fixed
    name, never user text), its key in ``<alias>.key``; and a condition true for the rows
    whose value is not JSON null (a key logged as None is kept in ``extra`` as null)."""
    if isinstance(dialect, PostgresDialect):
        return (
            f"jsonb_each({column}) AS {alias}(key, value)",
            f"jsonb_typeof({alias}.value) <> 'null'",
        )
    return f"json_each({column}) AS {alias}", f"{alias}.type <> 'null'"
