"""``sqltrack export``: metric histories streamed to CSV, JSON Lines or Parquet."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..errors import ConfigurationError
from ..export import FORMATS, LAYOUTS
from ._base import cli, errors, open_tracker, url_option
from .runs import parse_arg


@cli.command()
@url_option
@click.option("--experiment", "-e", default=None, help="Only runs of this experiment.")
@click.option(
    "--run",
    "runs",
    multiple=True,
    metavar="RUN",
    help="Only this run (id, UUID or name). Repeatable.",
)
@click.option(
    "--where", default=None, help="Extra SQL condition on runs r and experiments e, with ?."
)
@click.option(
    "--arg",
    "where_args",
    multiple=True,
    metavar="VALUE",
    help="A value for a ? of --where, in order (as in `sqltrack runs`). Repeatable.",
)
@click.option("--key", "-k", "keys", multiple=True, help="Only these metric keys. Repeatable.")
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="wide",
    show_default=True,
    help="wide: a row per run and step, a column per key; long: a row per value.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="File format (default: from the --output suffix, else csv).",
)
@click.option(
    "--params",
    is_flag=True,
    help="Add the runs' params as params.<name> columns.",
)
@click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    metavar="FILE",
    help="Write here ('-': stdout); .gz compresses CSV and JSON Lines.",
)
@errors
def export(
    url: str | None,
    experiment: str | None,
    runs: tuple[str, ...],
    where: str | None,
    where_args: tuple[str, ...],
    keys: tuple[str, ...],
    layout: str,
    fmt: str | None,
    params: bool,
    output: str,
) -> None:
    """Export metric histories, streamed (memory stays flat however many values).

    Every row starts with run_id, run_uuid, experiment, run_name (then params), step and
    logged_at. Times are ISO-8601 UTC (Z); NaN is an empty cell (JSON null), ±inf is
    Infinity/-Infinity. Parquet (pip install 'sqltrack-core[parquet]') keeps types, NaN
    and ±inf. A file is written under a temporary name and renamed once complete; a summary
    line follows on stdout (on stderr when the data goes to stdout).
    """
    stdout = output == "-"
    fmt = fmt or ("csv" if stdout else None)
    if stdout and fmt == "parquet" and sys.stdout.isatty():
        raise ConfigurationError("Parquet is binary: write it to a file with -o FILE, or pipe it")
    tracker = open_tracker(url)
    target: Any = sys.stdout if stdout else output
    with _progress() as advance:
        result = tracker.export(
            target,
            experiment=experiment,
            runs=list(runs) or None,
            where=where,
            args=[parse_arg(text) for text in where_args],
            keys=list(keys) or None,
            layout=layout,
            format=fmt,
            params=params,
            progress=advance,
        )
    # the summary goes where the data does not: stderr when the data is on stdout
    click.echo(
        f"exported {result.rows} row(s), {result.values} value(s) of {result.runs} run(s) "
        f"to {'stdout' if stdout else output} ({result.format}, {result.layout})",
        err=stdout,
    )


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr while it is a terminal: steps read of their total."""
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty())
    with bar:
        task = bar.add_task("exporting steps", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
