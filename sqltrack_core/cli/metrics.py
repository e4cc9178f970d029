"""``sqltrack metrics``: one run's metric history."""

from __future__ import annotations

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import emit


@cli.command()
@url_option
@click.argument("run")
@click.option("--key", "-k", "keys", multiple=True, help="Only these metric keys. Repeatable.")
@format_option
@errors
def metrics(url: str | None, run: str, keys: tuple[str, ...], fmt: str) -> None:
    """Print one run's metric history, one row per step."""
    tracker = open_tracker(url)
    df = tracker.metrics(tracker.run_id(run), list(keys) or None)
    if fmt == "table":
        df = df.drop(columns=["logged_at"])
    emit(df, fmt)
