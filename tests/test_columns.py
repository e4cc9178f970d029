"""Unit tests of `sqltrack_core._columns`: column names, collisions and type inference."""

from __future__ import annotations

import math
import re

import pytest

from sqltrack_core._columns import (
    FIXED_COLUMNS,
    MAX_IDENTIFIER_BYTES,
    RESERVED_WORDS,
    column_name,
    family_of,
    family_of_sql_type,
    fits,
    narrow,
    needs_widening,
    sanitize,
)

SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
LONG_A = "a" * 63 + "x" * 7  # two 70-character keys that share their first 63 bytes
LONG_B = "a" * 63 + "y" * 7


def assert_sql_friendly(name: str) -> None:
    assert SQL_NAME.match(name), name
    assert len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES, name
    assert name not in RESERVED_WORDS, name


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("val/acc", "val_acc"),
        ("train/loss", "train_loss"),
        ("Loss", "loss"),
        ("Val Acc@1", "val_acc_1"),
        ("lr-group.0", "lr_group_0"),
        ("__private__", "private"),
        ("a//b", "a_b"),
        ("1st_loss", "m_1st_loss"),
        ("0", "m_0"),
        ("Größe", "groe"),
        ("ümlaut/é", "umlaut_e"),
        ("ﬁne", "fine"),
        ("精度", "metric"),
        ("", "metric"),
        ("///", "metric"),
        ("order", "order_"),
        ("ORDER", "order_"),
        ("select", "select_"),
        ("user", "user_"),
        ("table", "table_"),
        ('x"; DROP TABLE runs; --', "x_drop_table_runs"),
        ("a" * 70, "a" * 63),
        ("a" * 62 + "/b", "a" * 62),
        ("9" + "b" * 70, "m_9" + "b" * 60),
    ],
    ids=repr,
)
def test_sanitize(key: str, expected: str) -> None:
    """Verify that sanitize maps a key to its documented SQL-friendly name."""
    name = sanitize(key)
    assert name == expected
    assert_sql_friendly(name)


@pytest.mark.parametrize(
    "key",
    [
        "val/acc",
        "Loss",
        "1st",
        "order",
        "é" * 80,
        "9" * 80,
        "_" * 80 + "z",
        "a" * 62 + "é",
        "€",
        "x" * 63 + "/order",
    ],
    ids=repr,
)
def test_sanitize_is_idempotent_and_sql_friendly(key: str) -> None:
    """Verify that a sanitised name is SQL-friendly and sanitises to itself."""
    name = sanitize(key)
    assert_sql_friendly(name)
    assert sanitize(name) == name


@pytest.mark.parametrize(
    ("key", "taken", "expected"),
    [
        ("val/acc", [], "val_acc"),
        ("val_acc", ["other"], "val_acc"),
        ("order", [], "order_"),
    ],
)
def test_column_name_free(key: str, taken: list[str], expected: str) -> None:
    """Verify that a key whose sanitised name is free gets that name."""
    assert column_name(key, taken) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("val/acc", "val_acc"),
        ("val_acc", "val/acc"),
        ("Loss", "loss"),
        ("loss", "LOSS"),
        (LONG_A, LONG_B),
        ("order", "Order"),
    ],
    ids=repr,
)
def test_column_name_collision(first: str, second: str) -> None:
    """Verify that two keys with the same sanitised name get distinct, SQL-friendly columns."""
    taken = [column_name(first, [])]
    name = column_name(second, taken)
    assert name not in taken
    assert name.startswith(sanitize(second)[:54])
    assert_sql_friendly(name)
    assert column_name(second, taken) == name  # deterministic: depends on key and taken only


def test_column_name_long_keys_sharing_63_bytes() -> None:
    """Verify that two 70-character keys sharing 63 bytes map to distinct names of <= 63 bytes."""
    a = column_name(LONG_A, [])
    b = column_name(LONG_B, [a])
    assert a != b
    assert len(a.encode()) <= MAX_IDENTIFIER_BYTES
    assert len(b.encode()) <= MAX_IDENTIFIER_BYTES


def test_column_name_collision_depends_only_on_key() -> None:
    """Verify that a collision is resolved from the key alone, whatever else is taken."""
    base = column_name("val_acc", ["val_acc"])
    assert column_name("val_acc", ["val_acc", "unrelated", "loss"]) == base
    assert column_name("val/acc", ["val_acc"]) != base  # a different key, a different digest


@pytest.mark.parametrize("fixed", sorted(FIXED_COLUMNS))
@pytest.mark.parametrize("variant", [str.lower, str.upper, lambda s: f"/{s}/"])
def test_column_name_never_reuses_fixed_columns(fixed: str, variant: object) -> None:
    """Verify that a key spelling a fixed column (run_id, step, logged_at, extra) gets another name."""
    key = variant(fixed)  # type: ignore[operator]
    assert sanitize(key) == fixed
    name = column_name(key, [])
    assert name not in FIXED_COLUMNS
    assert_sql_friendly(name)


@pytest.mark.parametrize("fixed", sorted(FIXED_COLUMNS))
def test_column_name_avoids_fixed_columns_when_listed_as_taken(fixed: str) -> None:
    """Verify that fixed columns stay excluded even when `taken` also lists them."""
    assert column_name(fixed, [*FIXED_COLUMNS, fixed]) not in FIXED_COLUMNS


def test_column_name_many_colliding_keys_stay_distinct() -> None:
    """Verify that many keys with one sanitised name all get distinct columns."""
    taken: list[str] = []
    keys = [
        "val/acc",
        "val_acc",
        "VAL/ACC",
        "val.acc",
        "val-acc",
        "Val Acc",
        "val__acc",
        "_val_acc",
    ]
    for key in keys:
        taken.append(column_name(key, taken))
    assert len(set(taken)) == len(keys)
    for name in taken:
        assert_sql_friendly(name)


def test_column_name_digest_collision_adds_counter() -> None:
    """Verify that a name taken even with its digest suffix still gets a free name."""
    first = column_name("val/acc", ["val_acc"])
    name = column_name("val/acc", ["val_acc", first])
    assert name not in ("val_acc", first)
    assert_sql_friendly(name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, "bool"),
        (False, "bool"),
        (0, "int"),
        (2**70, "int"),
        (1.5, "float"),
        (math.nan, "float"),
        ("x", "text"),
        ({"a": 1}, "json"),
        ([1, 2], "json"),
    ],
    ids=repr,
)
def test_family_of(value: object, expected: str | None) -> None:
    """Verify that family_of classifies converted values, bool before int."""
    assert family_of(value) == expected


@pytest.mark.parametrize(
    ("families", "expected"),
    [
        ([], None),
        ([None, None], None),
        (["int"], "int"),
        (["int", "int"], "int"),
        (["int", "float"], "float"),
        (["float", "int"], "float"),
        ([None, "int", None, "float"], "float"),
        (["bool"], "bool"),
        (["bool", "int"], "bool"),
        (["int", "bool"], "int"),
        (["text", "float"], "text"),
        (["float", "text"], "float"),
        (["json", "int"], "json"),
        ([None, "text"], "text"),
    ],
    ids=repr,
)
def test_narrow(families: list[str | None], expected: str | None) -> None:
    """Verify that narrow merges int and float and otherwise keeps the first family seen."""
    assert narrow(families) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql_type", "expected"),
    [
        ("BOOLEAN", "bool"),
        ("boolean", "bool"),
        ("bool", "bool"),
        ("BIGINT", "int"),
        ("bigint", "int"),
        ("INTEGER", "int"),
        ("integer", "int"),
        ("INT", "int"),
        ("smallint", "int"),
        ("TINYINT", "int"),
        ("int8", "int"),
        ("int4", "int"),
        ("bigserial", "int"),
        ("REAL", "float"),
        ("real", "float"),
        ("DOUBLE PRECISION", "float"),
        ("double precision", "float"),
        ("DOUBLE", "float"),
        ("FLOAT", "float"),
        ("float8", "float"),
        ("NUMERIC", "float"),
        ("numeric(10,2)", "float"),
        ("DECIMAL(8, 3)", "float"),
        ("TEXT", "text"),
        ("text", "text"),
        ("VARCHAR(255)", "text"),
        ("character varying(20)", "text"),
        ("character varying", "text"),
        ("JSON", "json"),
        ("jsonb", "json"),
        ("  jsonb  ", "json"),
        ("BLOB", None),
        ("bytea", None),
        ("timestamp with time zone", None),
        ("", None),
        ("UNSIGNED BIG INT", None),
        ("interval", None),
    ],
    ids=repr,
)
def test_family_of_sql_type(sql_type: str, expected: str | None) -> None:
    """Verify that declared SQL types (both dialects' spellings) map to the family they store."""
    assert family_of_sql_type(sql_type) == expected


@pytest.mark.parametrize(
    ("value", "family", "expected"),
    [
        (None, "int", True),
        (None, "json", True),
        (3, "int", True),
        (-(2**63), "int", True),
        (2**63 - 1, "int", True),
        (2**63, "int", False),
        (-(2**63) - 1, "int", False),
        (3.0, "int", True),
        (2.5, "int", False),
        (float(2**53), "int", True),
        (float(2**54), "int", False),
        (math.nan, "int", False),
        (math.inf, "int", False),
        (True, "int", False),
        ("3", "int", False),
        (2.5, "float", True),
        (math.nan, "float", True),
        (-math.inf, "float", True),
        (3, "float", True),
        (2**53, "float", True),
        (2**53 + 1, "float", False),
        (True, "float", False),
        ("2.5", "float", False),
        ({"a": 1}, "float", False),
        (True, "bool", True),
        (1, "bool", False),
        ("x", "text", True),
        (1, "text", False),
        ({"a": 1}, "json", True),
        ([1], "json", True),
        ("x", "json", False),
        (1, None, True),
        ("x", None, True),
        (True, None, True),
        ({"a": 1}, None, False),
        ([1], None, False),
    ],
    ids=repr,
)
def test_fits(value: object, family: str | None, expected: bool) -> None:
    """Verify that fits accepts exactly the values a column of the family stores without loss."""
    assert fits(value, family) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "family", "expected"),
    [
        (2.5, "int", True),
        (math.nan, "int", True),
        (math.inf, "int", True),
        (-math.inf, "int", True),
        (3.0, "int", False),
        (3, "int", False),
        (None, "int", False),
        (True, "int", False),
        ("2.5", "int", False),
        (2.5, "float", False),
        (2.5, "text", False),
        (2.5, None, False),
    ],
    ids=repr,
)
def test_needs_widening(value: object, family: str | None, expected: bool) -> None:
    """Verify that only a fractional or non-finite float asks an int column to widen."""
    assert needs_widening(value, family) is expected  # type: ignore[arg-type]
