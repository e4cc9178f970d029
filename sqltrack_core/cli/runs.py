"""``sqltrack runs``: runs with the params and per-run metric aggregates chosen, or a view's.

The selection options (`selection_options`) are shared with ``sqltrack views save``, so a view
is saved with exactly what ``runs`` was shown with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import cell, emit, terminal_width

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["parse_arg", "selection", "selection_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: how many params the default table shows at most (fewer when the terminal is narrow)
HANDFUL = 5
_CAP = 40  # a text cell wider than this is cut when a table does not fit
_PARAMS = "params."


def selection_options(fn: F) -> F:
    """The options that choose runs and columns (those of `Tracker.runs`)."""
    options = [
        click.option("--experiment", "-e", default=None, help="Only runs of this experiment."),
        click.option(
            "--param",
            "-p",
            "param_patterns",
            multiple=True,
            metavar="NAME|GLOB",
            help="Show this param (its flattened name, e.g. optim.lr) or those a glob matches "
            "('optim.*'), in the order given. Repeatable.",
        ),
        click.option(
            "--params/--no-params",
            "all_params",
            default=None,
            help="Show every param / no param. Default: the ones -p names; without -p, a few "
            "that vary.",
        ),
        click.option(
            "--varying/--no-varying",
            default=None,
            help="Hide the params that are equal in every run shown.",
        ),
        click.option(
            "--metric",
            "-m",
            "metric_specs",
            multiple=True,
            metavar="KEY:AGG",
            help="Per-run aggregate, e.g. val/acc:max (last, first, min, max, mean, count, ...). "
            "Repeatable.",
        ),
        click.option("--where", default=None, help="Extra SQL condition on runs (aliased r)."),
        click.option(
            "--arg",
            "where_args",
            multiple=True,
            metavar="VALUE",
            help="A value for a ? of --where, in order: a number, true, false or null as such, "
            "anything else as text ('\"3\"' for the text 3). Repeatable.",
        ),
        click.option(
            "--order-by",
            "order_by",
            multiple=True,
            metavar="[-]FIELD",
            help="Sort by a metric spec KEY:AGG or a run column (id, name, status, started_at, "
            "...); a leading - sorts descending; missing values last. Repeatable. Default: by id.",
        ),
        click.option(
            "--limit",
            type=click.IntRange(min=0),
            default=None,
            help="Show at most this many runs (the first in --order-by order).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def parse_arg(text: str) -> Any:
    """A ``--arg`` value: a JSON number, true, false, null or "text" as that, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    plain = value is None or isinstance(value, (bool, int, str))
    return value if plain or (isinstance(value, float) and math.isfinite(value)) else text


def selection(
    *,
    experiment: str | None,
    param_patterns: tuple[str, ...],
    all_params: bool | None,
    varying: bool | None,
    metric_specs: tuple[str, ...],
    where: str | None,
    where_args: tuple[str, ...],
    order_by: tuple[str, ...],
    limit: int | None,
) -> dict[str, Any]:
    """`selection_options` as keyword arguments of `Tracker.runs` (None: not given)."""
    if param_patterns and all_params is not None:
        flag = "--params" if all_params else "--no-params"
        raise click.UsageError(f"-p/--param and {flag} exclude each other; give one of them")
    params: list[str] | None = list(param_patterns) or None
    if all_params is not None:
        params = ["*"] if all_params else []
    return {
        "experiment": experiment,
        "params": params,
        "varying": varying,
        "metrics": list(metric_specs) or None,
        "where": where,
        "args": [parse_arg(text) for text in where_args],
        "order_by": list(order_by) or None,
        "limit": limit,
    }


@cli.command()
@url_option
@selection_options
@click.option("--view", default=None, metavar="NAME", help="Start from this saved view.")
@format_option
@errors
def runs(url: str | None, view: str | None, fmt: str, **options: Any) -> None:
    """List runs with status, params and per-run metric aggregates.

    Without -p, --params or a view that chooses params, the table shows a few params that
    vary between the runs and says how to see the others (CSV and JSON have them all).

    \b
    The ten best runs by validation accuracy, with the optimizer's params:
      sqltrack runs -e mnist -m val/acc:max --order-by -val/acc:max --limit 10 -p 'optim.*'
    The same from a saved view (see sqltrack views):
      sqltrack runs --view best
    """
    chosen = selection(**options)
    tracker = open_tracker(url)
    short = fmt == "table" and chosen["params"] is None and chosen["varying"] is None
    if short and view is not None:
        saved = tracker.view(view)
        short = saved["params"] is None and not saved["varying"]
    if short:
        chosen["varying"] = True
    df = tracker.runs(view=view, **chosen)
    notes: list[str] = []
    if fmt == "table":
        df, notes = table_frame(df, short=short, width=terminal_width())
    title = (
        f"view {view}"
        if view
        else f"runs of {chosen['experiment']}"
        if chosen["experiment"]
        else "runs"
    )
    emit(
        df,
        fmt,
        title=title,
        hidden_hint="choose columns with -p, --no-params or --view",
        keep=[c for c in df.columns if ":" in str(c)],  # aggregates outlast params
        notes=notes,  # made safe for the terminal and wrapped there
    )


def table_frame(
    df: pd.DataFrame, *, short: bool, width: int | None
) -> tuple[pd.DataFrame, list[str]]:
    """The table's columns: id, (experiment), name, status, started, the aggregates, then the
    params (in `short` mode the few that vary most usefully and fit `width`), named without
    ``params.`` where no other column has that name; and the notes to print under it."""
    fixed = ["id", "name", "status", "started_at"]
    if df["experiment"].nunique() > 1:
        fixed.insert(1, "experiment")
    params = [c for c in df.columns if str(c).startswith(_PARAMS)]
    # KEY:AGG: every aggregate's name has a colon, no run column's does
    aggregates = [c for c in df.columns if ":" in str(c) and c not in params]
    equal: dict[str, Any] = df.attrs.get("equal_params", {})
    notes = []
    if short:
        ranked = sorted(params, key=lambda c: _rank(df[c], c, len(df)))[:HANDFUL]
        shown = _fitting(df, fixed + aggregates, ranked, width)
        total = len(params) + len(equal)
        if total > len(shown):
            more = len(params) - len(shown)
            why = [f"{more} more vary"] if more else []
            why += [f"{len(equal)} same in every run"] if equal else []
            notes.append(
                f"{len(shown)} of {total} params shown ({', '.join(why)}); choose with -p NAME "
                "or -p 'GLOB*', see all that vary with --varying, every one with --params"
            )
        params = shown
    if equal:
        same = ", ".join(f"{k}={cell(v)}" for k, v in equal.items())
        notes.append(_cut(f"same in every run: {same}", width))
    table = df[fixed + aggregates + params].copy()
    table["started_at"] = table["started_at"].dt.strftime("%Y-%m-%d %H:%M")
    taken = {str(c) for c in table.columns}
    names = {"started_at": "started (UTC)"}
    for column in params:
        short_name = column[len(_PARAMS) :]
        if short_name not in taken:
            names[column] = short_name
    return table.rename(columns=names), notes


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rank(series: pd.Series, label: str, runs: int) -> tuple[bool, bool, str]:
    """Params present in every run first, then those with fewer distinct values than runs
    (a swept value rather than a seed or an output folder), then by name."""
    values = series.tolist()
    missing = any(_missing(v) for v in values)
    distinct = len({json.dumps(v, sort_keys=True, default=str) for v in values})
    return missing, distinct >= runs, label


def _width(df: pd.DataFrame, column: str) -> int:
    """The cells `column` takes in a table: its widest value (cut at `_CAP`) and borders."""
    values = df[column].tolist()
    if column == "started_at":
        return 16 + 3
    header = column[len(_PARAMS) :] if column.startswith(_PARAMS) else column
    widest = max([len(header)] + [len(cell(v)) for v in values])
    return min(widest, _CAP) + 3


def _fitting(df: pd.DataFrame, fixed: list[str], params: list[str], width: int | None) -> list[str]:
    """The leading `params` that fit in `width` cells next to the `fixed` columns."""
    if width is None:
        return params
    used = 1 + sum(_width(df, c) for c in fixed)
    shown = []
    for column in params:
        used += _width(df, column)
        if used > width:
            break
        shown.append(column)
    return shown


def _cut(text: str, width: int | None) -> str:
    limit = 200 if width is None else max(width, 20)
    return text if len(text) <= limit else text[: limit - 1] + "…"
