"""``sqltrack lineage``: where a run's weights came from, and what came of them."""

from __future__ import annotations

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import emit


@cli.command()
@url_option
@click.argument("run")
@format_option
@errors
def lineage(url: str | None, run: str, fmt: str) -> None:
    """Print the ancestors and descendants of a run, with link kinds."""
    tracker = open_tracker(url)
    df = tracker.lineage(run)
    if fmt == "table":
        df = df.drop(columns=["uuid"])
    emit(df, fmt)
