"""Logged key -> SQL column: SQL-friendly names, collision resolution and type inference.

Type inference happens in two small steps (as sqlite-utils does): `narrow` picks one value
family from the families seen for a key, then each backend maps the family to its SQL type.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, Literal

Family = Literal["bool", "int", "float", "text", "json"]

#: Columns of `metrics` that are not metrics; a key that maps onto one gets a suffix.
FIXED_COLUMNS = frozenset({"run_id", "step", "logged_at", "extra"})

#: PostgreSQL's reserved key words (SQL:2016 table in the PostgreSQL docs, "reserved" and
#: "reserved (can be function or type)"): a column named like one needs quotes in every
#: query, so such a key gets a trailing underscore instead (`order` -> `order_`).
RESERVED_WORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast
    check collate collation column concurrently constraint create cross current_catalog
    current_date current_role current_schema current_time current_timestamp current_user
    default deferrable desc distinct do else end except false fetch for foreign freeze from
    full grant group having ilike in initially inner intersect into is isnull join lateral
    leading left like limit localtime localtimestamp natural not notnull null offset on
    only or order outer overlaps placing primary references returning right select
    session_user similar some symmetric system_user table tablesample then to trailing true
    union unique user using variadic verbose when where window with
    """.split()  # noqa: SIM905
)

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")
_MAX_INT64 = 2**63 - 1
_MAX_EXACT_FLOAT_INT = 2**53


def sanitize(key: str) -> str:
    """Return the SQL-friendly form of `key`: ``[a-z0-9_]``, no leading digit, <= 63 bytes."""
    ascii_key = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode("ascii")
    name = _NOT_ALLOWED.sub("_", ascii_key.lower()).strip("_") or "metric"
    if name[0].isdigit():
        name = "m_" + name
    name = name[:MAX_IDENTIFIER_BYTES].rstrip("_")
    if name in RESERVED_WORDS:
        name += "_"
    return name


def column_name(key: str, taken: Iterable[str]) -> str:
    """Pick the column for a new `key`, avoiding every name in `taken` and the fixed columns.

    The sanitised key is used when free. Otherwise the name is its first 54 bytes plus an
    8-hex digest of the key itself, so the outcome depends only on the key, not on timing.
    """
    used = set(taken) | FIXED_COLUMNS
    base = sanitize(key)
    if base not in used:
        return base
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    name = f"{base[:54]}_{digest[:8]}"
    counter = 2
    while name in used:  # a digest collision on top of a name collision: vanishingly rare
        name = f"{base[:50]}_{digest[:8]}_{counter}"
        counter += 1
    return name


def family_of(value: Any) -> Family | None:
    """Return the value family of an already converted logged value (None for None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    return "json"


def narrow(families: Iterable[Family | None]) -> Family | None:
    """Pick the column family for a new key from the families of its values, in order seen.

    ints and floats together make a float column; otherwise the first family seen wins and
    values of other families go to ``extra``.
    """
    seen = [f for f in families if f is not None]
    if not seen:
        return None
    if set(seen) <= {"int", "float"}:
        return "float" if "float" in seen else "int"
    return seen[0]


_SQL_TYPE_FAMILIES: list[tuple[re.Pattern[str], Family]] = [
    (re.compile(r"^(bool|boolean)$"), "bool"),
    (re.compile(r"^(big|small|tiny|medium)?int(eger)?\d*$|^(big|small)?serial\d*$"), "int"),
    (re.compile(r"^(real|double( precision)?|float\d*|numeric|decimal)$"), "float"),
    (re.compile(r"^(text|varchar|char|character( varying)?|clob|string|nvarchar|nchar)$"), "text"),
    (re.compile(r"^jsonb?$"), "json"),
]


def family_of_sql_type(sql_type: str) -> Family | None:
    """Return the family a declared SQL type stores, or None for a type we do not know."""
    base = re.sub(r"\(.*\)", "", sql_type).strip().lower()
    for pattern, family in _SQL_TYPE_FAMILIES:
        if pattern.match(base):
            return family
    return None


def fits(value: Any, family: Family | None) -> bool:
    """Whether a converted value can be stored exactly in a column of `family`.

    A column of unknown type (user-declared) takes any scalar and lets the database convert.
    """
    value_family = family_of(value)
    if value_family is None:
        return True
    if family is None:
        return value_family != "json"
    if family == "int":
        return (value_family == "int" and -_MAX_INT64 - 1 <= value <= _MAX_INT64) or (
            value_family == "float" and value.is_integer() and abs(value) <= _MAX_EXACT_FLOAT_INT
        )
    if family == "float":
        return value_family == "float" or (
            value_family == "int" and abs(value) <= _MAX_EXACT_FLOAT_INT
        )
    return value_family == family


def needs_widening(value: Any, family: Family | None) -> bool:
    """Whether `value` asks an int column to become a float column (a fractional or non-finite float)."""
    return (
        family == "int"
        and isinstance(value, float)
        and not (math.isfinite(value) and value.is_integer())
    )
