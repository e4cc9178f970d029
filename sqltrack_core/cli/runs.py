"""``sqltrack runs``: runs with params and per-run metric aggregates."""

from __future__ import annotations

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import emit


@cli.command()
@url_option
@click.option("--experiment", "-e", default=None, help="Only runs of this experiment.")
@click.option(
    "--metric",
    "-m",
    "metric_specs",
    multiple=True,
    metavar="KEY:AGG",
    help="Per-run aggregate, e.g. val/acc:max (last, first, min, max, mean, count). Repeatable.",
)
@click.option("--where", default=None, help="Extra SQL condition on runs (aliased r).")
@click.option(
    "--order-by",
    "order_by",
    multiple=True,
    metavar="[-]FIELD",
    help="Sort by a metric spec KEY:AGG or a run column (id, name, status, started_at, ...); "
    "a leading - sorts descending; missing values last. Repeatable. Default: by id.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Show at most this many runs (the first in --order-by order).",
)
@click.option(
    "--params/--no-params", default=True, show_default=True, help="Show params.* columns."
)
@format_option
@errors
def runs(
    url: str | None,
    experiment: str | None,
    metric_specs: tuple[str, ...],
    where: str | None,
    order_by: tuple[str, ...],
    limit: int | None,
    params: bool,
    fmt: str,
) -> None:
    """List runs with status, params and per-run metric aggregates.

    \b
    The ten best runs by validation accuracy:
      sqltrack runs -m val/acc:max --order-by -val/acc:max --limit 10
    """
    tracker = open_tracker(url)
    df = tracker.runs(
        experiment,
        metrics=list(metric_specs),
        where=where,
        order_by=list(order_by),
        limit=limit,
    )
    if fmt == "table":
        keep = ["id", "experiment", "name", "status", "started_at"]
        keep += [c for c in df.columns if params and c.startswith("params.")]
        keep += [c for c in df.columns if ":" in c and not c.startswith("params.")]
        df = df[keep]
        df["started_at"] = df["started_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    emit(df, fmt, title=f"runs{f' of {experiment}' if experiment else ''}")
