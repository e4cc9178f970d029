"""Unit tests of `sqltrack_core._backends.sqltext`: user placeholders, translated per driver."""

from __future__ import annotations

import ast
import datetime
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from sqltrack_core._backends import sqltext
from sqltrack_core._backends.sqltext import Params, ParamStyle, to_driver
from sqltrack_core.errors import ConfigurationError

PG_URL = os.environ.get("SQLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# (user sql, params) -> psycopg sql; the params go through as given
TO_PSYCOPG = [
    pytest.param("SELECT ? + ?", (1, 2), "SELECT %s + %s", id="positional"),
    pytest.param(
        "WHERE a = :a OR b = :a OR c = :c_2",
        {"a": 1, "c_2": 2},
        "WHERE a = %(a)s OR b = %(a)s OR c = %(c_2)s",
        id="named-repeated",
    ),
    pytest.param("SELECT :a$b", {"a$b": 1}, "SELECT %(a$b)s", id="name-with-dollar"),
    pytest.param("SELECT '?', ':x', ?", [1], "SELECT '?', ':x', %s", id="literal-placeholders"),
    pytest.param("SELECT 'it''s ? :x', ?", (1,), "SELECT 'it''s ? :x', %s", id="doubled-quote"),
    pytest.param(
        "WHERE name LIKE 'run%' AND id = ?", (1,), "WHERE name LIKE 'run%%' AND id = %s", id="like"
    ),
    pytest.param("SELECT 7 % 2, '5%' -- %", (), "SELECT 7 %% 2, '5%%' -- %%", id="percent-empty"),
    pytest.param("SELECT 'a%' LIKE 'a%%'", None, "SELECT 'a%' LIKE 'a%%'", id="percent-no-params"),
    pytest.param(r"SELECT E'\'?', ?", (1,), r"SELECT E'\'?', %s", id="e-string-quote"),
    pytest.param(
        r"SELECT e'\\', e'a''?', ?", (1,), r"SELECT e'\\', e'a''?', %s", id="e-string-end"
    ),
    pytest.param(r"SELECT xe'\' AS c, ?", (1,), r"SELECT xe'\' AS c, %s", id="e-at-word-start"),
    pytest.param("SELECT $$ ? :x % $$, ?", (1,), "SELECT $$ ? :x %% $$, %s", id="dollar-quote"),
    pytest.param(
        "SELECT $q$ :x $$ ? $q$, :x", {"x": 1}, "SELECT $q$ :x $$ ? $q$, %(x)s", id="dollar-tag"
    ),
    pytest.param("SELECT 1 AS a$q$, ?", (1,), "SELECT 1 AS a$q$, %s", id="dollar-in-identifier"),
    pytest.param("PREPARE p AS SELECT $1", None, "PREPARE p AS SELECT $1", id="native-no-params"),
    pytest.param(
        'SELECT "weird ?identifier", "a "" :b", ?',
        (1,),
        'SELECT "weird ?identifier", "a "" :b", %s',
        id="quoted-identifier",
    ),
    pytest.param(
        "SELECT ? -- what? :x\n, ? -- end?",
        (1, 2),
        "SELECT %s -- what? :x\n, %s -- end?",
        id="line-comment",
    ),
    pytest.param(
        "SELECT /* nested /* ? */ :x */ ?", (1,), "SELECT /* nested /* ? */ :x */ %s", id="nested"
    ),
    pytest.param("SELECT x::int, ?::text", (1,), "SELECT x::int, %s::text", id="cast"),
    pytest.param("SELECT :v::jsonb", {"v": "{}"}, "SELECT %(v)s::jsonb", id="named-then-cast"),
    pytest.param(
        "SELECT x::jsonb ?? 'k' WHERE id = ?",
        (1,),
        "SELECT x::jsonb ? 'k' WHERE id = %s",
        id="jsonb-exists-escaped",
    ),
    pytest.param("SELECT j ?| array['a'], ?", (1,), "SELECT j ?| array['a'], %s", id="jsonb-any"),
    pytest.param(
        "SELECT j ?& array['a'], :x", {"x": 1}, "SELECT j ?& array['a'], %(x)s", id="jsonb-all"
    ),
    pytest.param(
        "SELECT j @?? '$.a', a ??-| b", None, "SELECT j @? '$.a', a ?-| b", id="other-operators"
    ),
    pytest.param("SELECT ? | 4, ? & 4", (1, 2), "SELECT %s | 4, %s & 4", id="placeholder-bitwise"),
    pytest.param(
        "SELECT a[1:2], a[lo:hi], a[: hi], ?",
        (1,),
        "SELECT a[1:2], a[lo:hi], a[: hi], %s",
        id="array-slices",
    ),
    pytest.param("SELECT f(x := ?)", (1,), "SELECT f(x := %s)", id="named-argument"),
    pytest.param(
        "SELECT 'ünï?', \"ß?\", :naïve -- é?",
        {"naïve": 1},
        "SELECT 'ünï?', \"ß?\", %(naïve)s -- é?",
        id="unicode",
    ),
    pytest.param("", None, "", id="empty-no-params"),
    pytest.param("", (), "", id="empty-empty-params"),
    pytest.param("SELECT 1", {}, "SELECT 1", id="empty-mapping"),
]

# user sql and params that sqlite3 gets exactly as written
TO_SQLITE = [
    pytest.param("SELECT ? + ?", [1, 2], id="positional"),
    pytest.param("WHERE a = :a OR b = :a", {"a": 1}, id="named-repeated"),
    pytest.param(
        "SELECT '?', ':x', 'a%', \"?\", [?], `?`, ? -- ?\n /* ? */", (1,), id="quoted-and-comments"
    ),
    pytest.param("SELECT name LIKE 'run%', ?", (1,), id="percent"),
    pytest.param("/* /* */ SELECT ?", (1,), id="comments-do-not-nest"),
    pytest.param("SELECT `a``?`, [b :x], ?", (1,), id="backtick-bracket"),
    pytest.param("SELECT :naïve || '·?'", {"naïve": "é"}, id="unicode"),
    pytest.param("", None, id="empty"),
]

# (sql, params) -> ConfigurationError matching the pattern, the same for both drivers
PARAM_ERRORS = [
    pytest.param("SELECT ?, ?", (1, 2, 3), r"2 '\?' placeholders but 3 params were", id="too-many"),
    pytest.param("SELECT ?, ?", [1], r"2 '\?' placeholders but 1 param was given", id="too-few"),
    pytest.param("SELECT 1", (1,), r"0 '\?' placeholders but 1 param", id="no-placeholders"),
    pytest.param("SELECT %s", (1,), r"'%s' is not a placeholder here: write '\?'", id="percent-s"),
    pytest.param(
        "SELECT * FROM runs WHERE id = :run",
        {"id": 1},
        r"named parameter :run \(character 31\) is not in params; params has keys \['id'\]",
        id="missing-name",
    ),
    pytest.param("SELECT :a", {"a": 1, "b": 2}, r"has key 'b' that the query does not", id="extra"),
    pytest.param("SELECT 1", {"a": 1, "b": 2}, r"params has keys 'a', 'b' that", id="extras"),
    pytest.param("SELECT :a", (1,), r"\(:a at character 8\), so params must be a map", id="list"),
    pytest.param("SELECT ?", {"a": 1}, r"placeholders, so params must be a sequence", id="dict"),
    pytest.param("SELECT ?", "a", r"must be a sequence .* got str", id="str"),
    pytest.param("SELECT ?", {1}, r"must be a sequence .* got set", id="set"),
]

# sql -> ConfigurationError matching the pattern, the same for both drivers
TEXT_ERRORS = [
    pytest.param("SELECT ?, :x", r"mixes '\?' placeholders \(first at character 8\)", id="mixed"),
    pytest.param("SELECT :x, ?", r"named ones \(:x at character 8\); use one style", id="mixed2"),
    pytest.param(
        "SELECT ?1", r"'\?1' at character 8: numbered placeholders are not", id="numbered"
    ),
    pytest.param(
        "SELECT 1, 'abc",
        r"""^unterminated string literal starting at character 11: "'abc"; end it with "'"$""",
        id="open-string",
    ),
    pytest.param("SELECT 'it''s", r"unterminated string literal starting at character 8", id="''"),
    pytest.param('SELECT "a""b', r"unterminated quoted identifier starting at character 8", id='"'),
    pytest.param("SELECT 1 /* a", r"unterminated block comment starting at character 10", id="/*"),
]

# sql -> ConfigurationError matching the pattern, from reading SQL as PostgreSQL does
PSYCOPG_TEXT_ERRORS = [
    pytest.param(r"SELECT E'\'", r"unterminated string literal starting at character 8", id="E''"),
    pytest.param(
        "SELECT /* a /* ? */ 1",
        r"unterminated block comment starting at character 8: .* \(they nest on PostgreSQL\)",
        id="nested-comment",
    ),
    pytest.param(
        "SELECT $q$ abc $$",
        r"unterminated dollar-quoted string starting at character 8: .* end it with '\$q\$'",
        id="dollar-quote",
    ),
    pytest.param("SELECT $1, ?", r"'\$1' at character 8 is PostgreSQL's own placeholder", id="$1"),
]

# sql -> ConfigurationError matching the pattern, from reading SQL as SQLite does
SQLITE_TEXT_ERRORS = [
    pytest.param(
        r"SELECT E'\'?'", r"unterminated string literal starting at character 13", id="E''"
    ),
    pytest.param("SELECT [abc", r"unterminated quoted identifier .* end it with '\]'", id="["),
    pytest.param("SELECT `a``", r"unterminated quoted identifier .* end it with '`'", id="`"),
    pytest.param("SELECT j ?? 'k'", r"'\?\?' at character 10 .* SQLite does not have", id="??"),
    pytest.param("SELECT j ?| 4", r"'\?\|' at character 10 .* write '\? \|'", id="?|"),
    pytest.param("SELECT j ?& 4", r"'\?&' at character 10 .* write '\? &'", id="?&"),
    pytest.param("SELECT $$ ? $$", r"'\$\$' at character 8 is a placeholder to SQLite", id="$$"),
    pytest.param("SELECT @x", r"'@x' at character 8 is a placeholder to SQLite", id="@x"),
]


@pytest.mark.parametrize(("sql", "params", "want"), TO_PSYCOPG)
def test_to_psycopg(sql: str, params: Params, want: str) -> None:
    """Verify that user SQL becomes psycopg's, with only placeholders, `??` and `%` changed."""
    assert to_driver(sql, params, "format") == (want, params)


@pytest.mark.parametrize(("sql", "params"), TO_SQLITE)
def test_to_sqlite3(sql: str, params: Params) -> None:
    """Verify that user SQL goes to sqlite3 as written, once checked."""
    assert to_driver(sql, params, "qmark") == (sql, params)


@pytest.mark.parametrize("style", ["qmark", "format"])
def test_mapping_becomes_dict(style: ParamStyle) -> None:
    """Verify that any mapping reaches the driver as a dict (sqlite3 accepts no other)."""
    _, params = to_driver("SELECT :x", MappingProxyType({"x": 1}), style)
    assert type(params) is dict
    assert params == {"x": 1}


@pytest.mark.parametrize("style", ["qmark", "format"])
@pytest.mark.parametrize(("sql", "params", "pattern"), PARAM_ERRORS)
def test_param_errors(sql: str, params: Any, pattern: str, style: ParamStyle) -> None:
    """Verify that params that do not fit the placeholders raise an error naming the misfit."""
    with pytest.raises(ConfigurationError, match=pattern):
        to_driver(sql, params, style)


@pytest.mark.parametrize("params", [None, (1,)], ids=["no-params", "params"])
@pytest.mark.parametrize("style", ["qmark", "format"])
@pytest.mark.parametrize(("sql", "pattern"), TEXT_ERRORS)
def test_text_errors(sql: str, pattern: str, style: ParamStyle, params: Params) -> None:
    """Verify that SQL breaking a rule raises an error naming the rule and the position."""
    with pytest.raises(ConfigurationError, match=pattern):
        to_driver(sql, params, style)


@pytest.mark.parametrize(("sql", "pattern"), PSYCOPG_TEXT_ERRORS)
def test_psycopg_text_errors(sql: str, pattern: str) -> None:
    """Verify the errors that come from reading SQL as PostgreSQL does."""
    with pytest.raises(ConfigurationError, match=pattern):
        to_driver(sql, (1,), "format")


@pytest.mark.parametrize(
    ("sql", "pattern"),
    [
        ("SELECT 1 = ?", r"no params were given: '\?' at character 12"),
        ("SELECT :x", r"no params were given: ':x' at character 8"),
    ],
    ids=["?", "named"],
)
def test_sqlite_placeholders_without_params(sql: str, pattern: str) -> None:
    """Verify that on SQLite a placeholder without params is an error naming it."""
    with pytest.raises(ConfigurationError, match=pattern):
        to_driver(sql, None, "qmark")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT x ? 'k'", "SELECT x ? 'k'"),
        ("SELECT x ?? 'k', x ?| array['a']", "SELECT x ? 'k', x ?| array['a']"),
        ("SELECT :x, 'a%'", "SELECT :x, 'a%'"),
    ],
    ids=["jsonb-?", "escaped", "named-and-percent"],
)
def test_postgres_without_params_reads_no_placeholder(sql: str, expected: str) -> None:
    """Verify that on PostgreSQL a query without params has no placeholders: a bare '?' is
    the jsonb operator as written."""
    assert to_driver(sql, None, "format") == (expected, None)


@pytest.mark.parametrize(("sql", "pattern"), SQLITE_TEXT_ERRORS)
def test_sqlite_text_errors(sql: str, pattern: str) -> None:
    """Verify the errors that come from reading SQL as SQLite does."""
    with pytest.raises(ConfigurationError, match=pattern):
        to_driver(sql, (1,), "qmark")


def test_unknown_style() -> None:
    """Verify that a paramstyle other than qmark and format is refused."""
    with pytest.raises(ConfigurationError, match=r"style must be 'qmark' or 'format', got 'x'"):
        to_driver("SELECT 1", None, "x")  # type: ignore[arg-type]


def test_translation_is_cached() -> None:
    """Verify that a statement's text is translated once, in a bounded cache."""
    sql = "SELECT ? -- test_translation_is_cached"
    to_driver(sql, (1,), "format")
    hits = sqltext._parse.cache_info().hits
    assert to_driver(sql, (2,), "format") == ("SELECT %s -- test_translation_is_cached", (2,))
    assert sqltext._parse.cache_info().hits == hits + 1
    assert sqltext._parse.cache_info().maxsize is not None


def test_module_imports_only_the_standard_library() -> None:
    """Verify that the module stays pure: standard library and its own package only."""
    tree = ast.parse(Path(sqltext.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots = [(node.module or "").split(".")[0]]
        else:
            continue
        assert all(root in sys.stdlib_module_names or root == "__future__" for root in roots)


# (sql, params) -> the row the database returns for the translated statement
SQLITE_RUNS = [
    pytest.param("SELECT ? + 1, '?', 'a%' -- ?", (41,), (42, "?", "a%"), id="positional"),
    pytest.param("SELECT :n * 2, ':n', '%'", {"n": 21}, (42, ":n", "%"), id="named"),
    pytest.param(
        'SELECT [a ?], `b :c`, "d ?" FROM (SELECT 1 AS [a ?], 2 AS `b :c`, 3 AS "d ?") '
        "/* ? */ WHERE ? = 1",
        (1,),
        (1, 2, 3),
        id="quoted-identifiers",
    ),
    pytest.param(
        "/* /* */ SELECT 'it''s ?', ?", ("x",), ("it's ?", "x"), id="comment-doubled-quote"
    ),
    pytest.param("SELECT 'a%', '?'", None, ("a%", "?"), id="no-params"),
    pytest.param("SELECT :naïve || '·?'", {"naïve": "é"}, ("é·?",), id="unicode"),
]


@pytest.mark.parametrize(("sql", "params", "row"), SQLITE_RUNS)
def test_sqlite3_runs_translation(sql: str, params: Params, row: tuple[Any, ...]) -> None:
    """Verify that sqlite3 runs the translated statement and binds the params."""
    driver_sql, driver_params = to_driver(sql, params, "qmark")
    with closing(sqlite3.connect(":memory:")) as conn:
        cursor = conn.execute(driver_sql, () if driver_params is None else driver_params)
        assert cursor.fetchone() == row


POSTGRES_RUNS = [
    pytest.param(
        "SELECT '{\"a\":1}'::jsonb ?? 'a', ?::int + 1, '?' AS lit",
        (41,),
        (True, 42, "?"),
        id="jsonb-exists-positional",
    ),
    pytest.param(
        r"SELECT :n::int * 2, ':n', 'abc' LIKE 'a%', $$ ? :x % $$, E'\'?' -- ? 5%",
        {"n": 21},
        (42, ":n", True, " ? :x % ", "'?"),
        id="named-cast-literals",
    ),
    pytest.param(
        "SELECT '{\"a\":1}'::jsonb ?| array['a'], '{\"a\":1}'::jsonb ?& array['a', 'b'], "
        "(ARRAY[1, 2, 3])[2:3], ?",
        ("x",),
        (True, False, [2, 3], "x"),
        id="jsonb-any-all-slice",
    ),
    pytest.param(
        'SELECT /* a /* ? */ :b */ "weird ?col" FROM (SELECT ? AS "weird ?col") t -- ?',
        (7,),
        (7,),
        id="nested-comment-identifier",
    ),
    pytest.param("SELECT $q$ :x ? $q$, :x::int", {"x": 1}, (" :x ? ", 1), id="dollar-tag-named"),
    pytest.param(
        "SELECT make_interval(days := ?::int)",
        (2,),
        (datetime.timedelta(days=2),),
        id="named-argument",
    ),
    pytest.param("SELECT 'a%', '{\"a\":1}'::jsonb ?? 'a'", None, ("a%", True), id="no-params"),
]


@pytest.mark.parametrize(("sql", "params", "row"), POSTGRES_RUNS)
def test_psycopg_runs_translation(sql: str, params: Params, row: tuple[Any, ...]) -> None:
    """Verify that psycopg and PostgreSQL run the translated statement and bind the params."""
    psycopg = pytest.importorskip("psycopg")
    driver_sql, driver_params = to_driver(sql, params, "format")
    with psycopg.connect(PG_URL, connect_timeout=5) as conn:
        assert conn.execute(driver_sql, driver_params).fetchone() == row
