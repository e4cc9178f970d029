"""``sqltrack metrics``: one run's metric history, or the steps of it that you ask for."""

from __future__ import annotations

from typing import Any

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import emit

#: a table without --head, --tail or --all shows this many steps from each end
PREVIEW = 10


@cli.command()
@url_option
@click.argument("run")
@click.option(
    "--key",
    "-k",
    "keys",
    multiple=True,
    metavar="KEY",
    help="Only these metrics, and only the steps with a value of one of them. Repeatable.",
)
@click.option("--head", type=int, metavar="N", help="The first N steps.")
@click.option("--tail", type=int, metavar="N", help="The last N steps (with --head: both ends).")
@click.option(
    "--steps",
    metavar="A:B",
    help="Steps A to B, inclusive: '100:200', ':500', '1000:', or '500' for one step.",
)
@click.option(
    "--every",
    type=int,
    metavar="N",
    help="Every N-th step: the first, then each N-th after it by position (before --head/--tail).",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help=f"Print every step as a table too (a table shows the first and last {PREVIEW} otherwise).",
)
@format_option
@errors
def metrics(
    url: str | None,
    run: str,
    keys: tuple[str, ...],
    head: int | None,
    tail: int | None,
    steps: str | None,
    every: int | None,
    show_all: bool,
    fmt: str,
) -> None:
    """Print a run's metric history, one row per step.

    A table shows the first and last 10 steps and says how many it left out; --all, --head,
    --tail, --steps or --format csv/json show more. Steps are chosen in the database: the
    --steps range and the --key metrics first, then --every, then --head and --tail.

    \b
    sqltrack metrics 3 -k val/acc            # the steps with a validation accuracy
    sqltrack metrics 3 --tail 20             # the last 20 steps
    sqltrack metrics 3 --steps 1000:2000 --every 100 --format csv
    """
    if show_all and (head is not None or tail is not None):
        raise click.UsageError("--all prints every step; give it without --head and --tail")
    preview = fmt == "table" and not show_all and head is None and tail is None
    if preview:
        head = tail = PREVIEW
    tracker = open_tracker(url)
    run_id = tracker.run_id(run)
    df = tracker.metrics(run_id, list(keys) or None, head=head, tail=tail, steps=steps, every=every)
    notes: list[str] = []
    if fmt == "table":
        df = df.drop(columns=["logged_at"])
        if df.empty:
            notes.append(_nothing(run_id, keys, steps))
        elif preview and df.attrs["omitted_steps"][run_id]:
            notes += _left_out(df, df.attrs["omitted_steps"][run_id])
    emit(df, fmt, keep=("step",), notes=notes)


def _left_out(df: Any, omitted: int) -> list[str]:
    """The lines under a preview: how many steps it left out, where, and how to see them."""
    before, after = int(df["step"].iloc[PREVIEW - 1]), int(df["step"].iloc[PREVIEW])
    total = len(df) + omitted
    return [
        f"… {omitted:,} of {total:,} steps not shown, between step {before:,} and step {after:,}",
        "  see them with --all, --steps A:B, --tail N or --format csv",
    ]


def _nothing(run_id: int, keys: tuple[str, ...], steps: str | None) -> str:
    """The line under an empty table: what no step of the run has."""
    what = f"a value of {', '.join(keys)}" if keys else "a metric"
    where = f" in steps {steps}" if steps else ""
    return f"no step of run {run_id} has {what}{where}"
