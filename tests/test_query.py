"""`Tracker.query` takes the same SQL text and placeholders on both backends (`sqltext`)."""

from __future__ import annotations

import pytest

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError


def test_positional_and_named_placeholders_are_the_same_everywhere(
    tracker: sqltrack.Tracker,
) -> None:
    """Verify ``?`` and ``:name`` bind on both backends, leaving '?', ':x' and '%' in
    literals, comments and casts alone."""
    frame = tracker.query(
        "SELECT '?' AS lit, ? AS v, ':x' AS colon, 'a%' AS pct -- a comment? :y\n", [5]
    )
    assert frame.iloc[0].tolist() == ["?", 5, ":x", "a%"]
    frame = tracker.query("SELECT :a AS a, :a + 1 AS b, CAST(:b AS TEXT) AS c", {"a": 1, "b": 2})
    assert frame.iloc[0].tolist() == [1, 2, "2"]
    run = tracker.start_run("q", name="like%me")
    run.finish()
    frame = tracker.query("SELECT name FROM runs WHERE name LIKE ? AND name LIKE 'like%'", ["%me"])
    assert frame["name"].tolist() == ["like%me"]


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        ("SELECT ?, ?", [1], r"2 '\?' placeholders but 1 param was given"),
        ("SELECT :a", {"b": 1}, r"named parameter :a \(character 8\) is not in params"),
        ("SELECT ?, :a", [1], r"mixes '\?' placeholders"),
        ("SELECT 'open", [1], r"unterminated string literal"),
    ],
    ids=["count", "name", "mixed", "literal"],
)
def test_placeholder_mistakes_are_named_on_both_backends(
    tracker: sqltrack.Tracker, sql: str, params: list[int] | dict[str, int], message: str
) -> None:
    """Verify a mistake with placeholders raises the same ConfigurationError on both backends,
    before the database sees the SQL."""
    with pytest.raises(ConfigurationError, match=message):
        tracker.query(sql, params)


def test_postgres_jsonb_question_mark_operators(pg_url: str) -> None:
    """Verify PostgreSQL's jsonb ``?`` operators: as written without params, as ``??`` with
    them; ``?|`` and ``?&`` as written."""
    with sqltrack.connect(pg_url) as tracker:
        frame = tracker.query("""SELECT '{"a": 1}'::jsonb ? 'a' AS has, '?' AS lit""")
        assert frame.iloc[0].tolist() == [True, "?"]
        frame = tracker.query(
            """SELECT '{"a": 1}'::jsonb ?? 'a' AS has, '{"a": 1}'::jsonb ?| array['b'] AS any_,"""
            """ '{"a": 1}'::jsonb ?& array['a'] AS all_, ? AS v""",
            [7],
        )
        assert frame.iloc[0].tolist() == [True, False, True, 7]
