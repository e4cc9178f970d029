"""Placeholders in user SQL: one style on both databases, checked and translated for the driver.

`to_driver` reads SQL the way the database that runs it does (a real tokenizer, not a text
replace), so text inside literals, quoted identifiers and comments is never touched.

Placeholder rules
-----------------
User SQL (``Tracker.query``) uses the same placeholders on SQLite and on PostgreSQL:

* ``?`` is a positional placeholder: params is a sequence with one value per ``?``, in order.
* ``:name`` is a named placeholder: params is a mapping with one key per name used (a name may
  appear more than once). A name starts with a letter or ``_`` and goes on with letters,
  digits, ``_`` and ``$``. One statement uses ``?`` or ``:name``, never both.
* Nothing inside a string literal (``'...'`` with ``''`` for a quote; on PostgreSQL also
  ``E'...'`` with backslash escapes and ``$$...$$`` / ``$tag$...$tag$``), a quoted identifier
  (``"..."`` with ``""`` for a quote; on SQLite also `` `...` `` and ``[...]``) or a comment
  (``-- ...``, ``/* ... */``, which nest on PostgreSQL) is a placeholder. A backslash in a
  plain ``'...'`` is an ordinary character (PostgreSQL's ``standard_conforming_strings``).
* Without params (None), nothing is a placeholder on PostgreSQL: ``data ? 'key'`` runs as
  written. With params, ``??`` is a literal ``?``, for PostgreSQL's jsonb operators:
  ``data ?? 'key'`` runs as ``data ? 'key'`` (without params too); other operators with a
  ``?`` are written the same way (``@??``, ``??-``).
  ``?|`` and ``?&`` are the jsonb operators as written (``tags ?| array['a']``); for a
  placeholder followed by ``|`` or ``&``, put a space between (``? | 4``). SQLite has no such
  operators, so on SQLite ``??``, ``?|`` and ``?&`` are errors.
* A colon starts no placeholder in a cast (``x::int``), in ``:=``, before a digit
  (``a[1:2]``) or right after a letter, digit, ``_`` or ``$`` (``a[lo:hi]``); write a slice
  with no lower bound as ``a[: hi]``.
* ``%`` is an ordinary character everywhere (``LIKE 'run%'``); psycopg's ``%s`` is not a
  placeholder. Numbered placeholders (``?1``), SQLite's ``$x`` and ``@x``, and, when params
  are given, PostgreSQL's ``$1`` are errors.

Every problem raises `ConfigurationError`; positions in messages count characters from 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeAlias

from ..errors import ConfigurationError

__all__ = ["ParamStyle", "Params", "to_driver"]

ParamStyle: TypeAlias = Literal["qmark", "format"]
Params: TypeAlias = Sequence[Any] | Mapping[str, Any] | None

# The next token that matters, in the database's own lexical rules. At one position the first
# alternative wins, so `??` comes before `?` and `::` before `:name`. `(?<![\w$])` keeps an
# identifier's tail (`xe'..'`, `a$q$`, `a[lo:hi]`) from starting a token.
_TOKEN_RULES = {
    # https://www.postgresql.org/docs/current/sql-syntax-lexical.html
    "format": r"""
        (?P<e_string>(?<![\w$])[eE]')
        | (?P<string>')
        | (?P<identifier>")
        | (?P<line_comment>--)
        | (?P<block_comment>/\*)
        | (?P<dollar_string>(?<![\w$])\$(?:[^\W\d]\w*)?\$)
        | (?P<native>(?<![\w$])\$\d+)
    """,
    # https://www.sqlite.org/lang_keywords.html, https://www.sqlite.org/lang_expr.html#varparam
    "qmark": r"""
        (?P<string>')
        | (?P<identifier>")
        | (?P<backtick>`)
        | (?P<bracket>\[)
        | (?P<line_comment>--)
        | (?P<block_comment>/\*)
        | (?P<foreign>(?:(?<![\w$])\$|[@\#])[\w$]+)
    """,
}
_PLACEHOLDER_RULES = r"""
    | (?P<escape>\?\?)
    | (?P<operator>\?[|&])
    | (?P<numbered>\?\d)
    | (?P<qmark>\?)
    | (?P<cast>::)
    | (?P<named>(?<![\w$]):[^\W\d][\w$]*)
"""
_TOKENS = {
    style: re.compile(rules + _PLACEHOLDER_RULES, re.VERBOSE)
    for style, rules in _TOKEN_RULES.items()
}
_LINE_END = {"format": re.compile(r"[\r\n]"), "qmark": re.compile(r"\n")}
_E_STRING_STOP = re.compile(r"[\\']")
_COMMENT_STOP = re.compile(r"/\*|\*/")
_DRIVER_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?s(?!\w)")


@dataclass(frozen=True)
class _Template:
    """One statement, split at its placeholders."""

    names: tuple[str | None, ...]  # per placeholder: None for `?`, else the name
    positions: tuple[int, ...]  # per placeholder: where it starts, counted from 1
    native: tuple[str, int] | None  # the first PostgreSQL `$1` and where it starts
    bound_sql: str  # the driver's text when params are given
    plain_sql: str  # the driver's text when params is None (placeholders as written)


def to_driver(sql: str, params: Params, style: ParamStyle) -> tuple[str, Params]:
    """Check `params` against the placeholders of `sql` and return both for the driver.

    Args:
        sql: user SQL, written by the module's placeholder rules.
        params: a sequence for ``?`` placeholders, a mapping for ``:name`` ones, or None.
        style: the driver's paramstyle: ``"qmark"`` (sqlite3) or ``"format"`` (psycopg).

    Returns:
        The SQL and the params to hand to the driver: for ``"qmark"`` the text is unchanged,
        for ``"format"`` placeholders become ``%s`` / ``%(name)s`` and, when params are given,
        ``%`` becomes ``%%``. A mapping is returned as a `dict`, a sequence as given.

    Raises:
        ConfigurationError: the SQL breaks a rule, or params do not match its placeholders.

    Example::

        to_driver("SELECT * FROM runs WHERE name LIKE 'a%' AND id = ?", [7], "format")
        # ("SELECT * FROM runs WHERE name LIKE 'a%%' AND id = %s", [7])
    """
    if style not in _TOKENS:
        raise ConfigurationError(f"style must be 'qmark' or 'format', got {style!r}")
    template = _parse(sql, style)
    names = template.names
    if params is None:
        if names and style == "qmark":
            first = "?" if names[0] is None else f":{names[0]}"
            raise ConfigurationError(
                f"query has placeholders but no params were given: {first!r} at character "
                f"{template.positions[0]}"
            )
        return template.plain_sql, None
    if template.native is not None:
        token, position = template.native
        raise ConfigurationError(
            f"{token!r} at character {position} is PostgreSQL's own placeholder and would clash "
            "with the ones psycopg sends; write '?' or ':name'"
        )
    if isinstance(params, Mapping):
        if names and names[0] is None:
            raise ConfigurationError(
                f"query uses '?' placeholders, so params must be a sequence (list or tuple), "
                f"got {type(params).__name__}"
            )
        _check_names(sql, template, params)
        return template.bound_sql, dict(params)
    if not isinstance(params, Sequence) or isinstance(params, (str, bytes, bytearray)):
        raise ConfigurationError(
            "params must be a sequence (list or tuple) for '?' or a mapping (dict) for ':name', "
            f"got {type(params).__name__}"
        )
    if names and names[0] is not None:
        raise ConfigurationError(
            f"query uses named placeholders (:{names[0]} at character {template.positions[0]}), "
            f"so params must be a mapping (dict), got {type(params).__name__}"
        )
    if len(names) != len(params):
        placeholders = _count(len(names), "'?' placeholder")
        raise ConfigurationError(
            f"query has {placeholders} but "
            f"{_count(len(params), 'param')} {'was' if len(params) == 1 else 'were'} given"
            f"{_driver_hint(sql)}"
        )
    return template.bound_sql, params


def _check_names(sql: str, template: _Template, params: Mapping[str, Any]) -> None:
    for name, position in zip(template.names, template.positions, strict=True):
        if name not in params:
            raise ConfigurationError(
                f"named parameter :{name} (character {position}) is not in params; "
                f"params has keys {list(params)!r}"
            )
    extra = [key for key in params if key not in template.names]
    if extra:
        keys = ", ".join(repr(key) for key in extra)
        raise ConfigurationError(
            f"params has {'key' if len(extra) == 1 else 'keys'} {keys} that the query does not "
            f"use; each key needs a ':name' placeholder{_driver_hint(sql)}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _driver_hint(sql: str) -> str:
    """Point users of the old driver placeholders (psycopg's `%s`) to the new ones."""
    if _DRIVER_PLACEHOLDER.search(sql):
        return "; '%s' is not a placeholder here: write '?' (or ':name' for '%(name)s')"
    return ""


# Our own statements repeat; ad-hoc user SQL comes and goes, so the cache is bounded.
@lru_cache(maxsize=1024)
def _parse(sql: str, style: ParamStyle) -> _Template:
    """Split `sql` at its placeholders, skipping literals, identifiers and comments."""
    token = _TOKENS[style]
    pieces: list[str] = []
    names: list[str | None] = []
    written: list[str] = []  # each placeholder as written
    positions: list[int] = []
    text: list[str] = []  # the piece being built
    copied = 0  # sql[:copied] is in pieces or text
    native: tuple[str, int] | None = None
    i = 0
    while (match := token.search(sql, i)) is not None:
        kind, start, i = match.lastgroup, match.start(), match.end()
        if kind in ("string", "identifier", "backtick"):
            i = _skip_quoted(sql, i, start)
        elif kind == "e_string":
            i = _skip_e_string(sql, i, start)
        elif kind == "bracket":
            end = sql.find("]", i)
            if end < 0:
                raise _unterminated(sql, start, "quoted identifier", "]")
            i = end + 1
        elif kind == "line_comment":
            newline = _LINE_END[style].search(sql, i)
            i = len(sql) if newline is None else newline.end()
        elif kind == "block_comment":
            i = _skip_comment(sql, i, start, nested=style == "format")
        elif kind == "dollar_string":
            i = sql.find(match.group(), i)
            if i < 0:
                raise _unterminated(sql, start, "dollar-quoted string", match.group())
            i += len(match.group())
        elif kind == "native":
            native = native or (match.group(), start + 1)
        elif kind == "escape" and style == "format":
            text += (sql[copied:start], "?")
            copied = i
        elif kind == "escape" and style == "qmark":
            raise ConfigurationError(
                f"'??' at character {start + 1} is a literal '?' for PostgreSQL's jsonb "
                "operators, which SQLite does not have (SQLite reads every '?' as a placeholder)"
            )
        elif kind == "operator" and style == "qmark":
            raise ConfigurationError(
                f"{match.group()!r} at character {start + 1} is PostgreSQL's jsonb operator, which "
                f"SQLite does not have; for a placeholder followed by {match.group()[1]!r}, "
                f"write '? {match.group()[1]}'"
            )
        elif kind == "numbered":
            raise ConfigurationError(
                f"{match.group()!r} at character {start + 1}: numbered placeholders are not "
                "supported; write '?' (one per param, in order) or ':name'"
            )
        elif kind == "foreign":
            note = (
                " (and strings as '...': $$ quotes are PostgreSQL's)" if match[0][0] == "$" else ""
            )
            raise ConfigurationError(
                f"{match.group()!r} at character {start + 1} is a placeholder to SQLite; write "
                f"placeholders as '?' or ':name'{note}"
            )
        elif kind in ("qmark", "named"):
            text.append(sql[copied:start])
            pieces.append("".join(text))
            text = []
            copied = i
            names.append(None if kind == "qmark" else match.group()[1:])
            written.append(match.group())
            positions.append(start + 1)
        # else `cast`, or a jsonb `operator` on PostgreSQL: left as written
    text.append(sql[copied:])
    pieces.append("".join(text))

    kinds = {name is None for name in names}
    if len(kinds) == 2:
        qmark = positions[names.index(None)]
        named, at = next((n, p) for n, p in zip(names, positions, strict=True) if n is not None)
        raise ConfigurationError(
            f"query mixes '?' placeholders (first at character {qmark}) and named ones "
            f"(:{named} at character {at}); use one style per statement"
        )
    if style == "qmark":  # sqlite3 reads `?` and `:name` itself, and `%` means nothing to it
        return _Template(tuple(names), tuple(positions), native, sql, sql)
    # psycopg reads `%` as its own when params are given: every other `%` is doubled
    bound = [pieces[0].replace("%", "%%")]
    plain = [pieces[0]]  # without params nothing is a placeholder: `?` is jsonb's operator
    for name, as_written, piece in zip(names, written, pieces[1:], strict=True):
        bound += ("%s" if name is None else f"%({name})s", piece.replace("%", "%%"))
        plain += (as_written, piece)
    return _Template(tuple(names), tuple(positions), native, "".join(bound), "".join(plain))


def _skip_quoted(sql: str, i: int, start: int) -> int:
    """Return the end of the quoted text opened at `start`, where a doubled quote is a quote."""
    quote = sql[start]
    while True:
        end = sql.find(quote, i)
        if end < 0:
            what = "string literal" if quote == "'" else "quoted identifier"
            raise _unterminated(sql, start, what, quote)
        if not sql.startswith(quote, end + 1):
            return end + 1
        i = end + 2


def _skip_e_string(sql: str, i: int, start: int) -> int:
    """Return the end of PostgreSQL's ``E'...'``: a backslash escapes the next character."""
    while True:
        stop = _E_STRING_STOP.search(sql, i)
        if stop is None:
            raise _unterminated(sql, start, "string literal", "'")
        end = stop.start()
        if sql[end] == "'" and not sql.startswith("'", end + 1):
            return end + 1
        i = end + 2


def _skip_comment(sql: str, i: int, start: int, *, nested: bool) -> int:
    """Return the end of the block comment opened at `start` (nested ones on PostgreSQL)."""
    if not nested:
        end = sql.find("*/", i)
        if end < 0:
            raise _unterminated(sql, start, "block comment", "*/")
        return end + 2
    depth = 1
    while depth:
        stop = _COMMENT_STOP.search(sql, i)
        if stop is None:
            raise _unterminated(sql, start, "block comment", "*/", " (they nest on PostgreSQL)")
        depth += 1 if stop.group() == "/*" else -1
        i = stop.end()
    return i


def _unterminated(
    sql: str, start: int, what: str, closer: str, note: str = ""
) -> ConfigurationError:
    return ConfigurationError(
        f"unterminated {what} starting at character {start + 1}: {sql[start : start + 20]!r}; "
        f"end it with {closer!r}{note}"
    )
