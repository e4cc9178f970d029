"""``sqltrack views``: list, show, save and delete the saved views of a database."""

from __future__ import annotations

import shlex
from typing import Any

import click
from click.core import ParameterSource

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import cell, dumps, emit
from ._table import printable
from .experiments import confirm
from .runs import selection, selection_options


def _url(url: str | None) -> str | None:
    """The subcommand's --url if typed, else the group's (``sqltrack views --url X show``)."""
    ctx = click.get_current_context()
    if ctx.parent is None or ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
        return url
    given: str | None = ctx.parent.params.get("url")
    return given if given is not None else url


@cli.group(invoke_without_command=True)
@url_option
@format_option
@click.pass_context
@errors
def views(ctx: click.Context, url: str | None, fmt: str) -> None:
    """Saved views: named selections of runs, kept in the database for everyone who reads it.

    Without a subcommand, list them.

    \b
      sqltrack views save best -e mnist -p lr -p 'optim.*' -m val/acc:max \\
          --order-by -val/acc:max --limit 10
      sqltrack runs --view best
      sqltrack views show best --sql      # the SELECT, for psql and other SQL tools
    """
    if ctx.invoked_subcommand is None:
        _list(url, fmt)


@views.command("list")
@url_option
@format_option
@errors
def list_views(url: str | None, fmt: str) -> None:
    """List the saved views."""
    _list(_url(url), fmt)


def _list(url: str | None, fmt: str) -> None:
    tracker = open_tracker(url)
    df = tracker.views()
    if fmt == "table":
        df = df[["name", "experiment", "params", "varying", "metrics", "order_by", "limit"]].assign(
            where=df["where"], owner=df["owner"], updated_at=df["updated_at"]
        )
        for column in ("params", "metrics", "order_by"):
            df[column] = [" ".join(v) if isinstance(v, list) else v for v in df[column]]
    emit(df, fmt, title="views")


@views.command("show")
@url_option
@click.argument("name")
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print a SELECT giving the view's rows (values inlined), for psql and other SQL tools.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@errors
def show(url: str | None, name: str, as_sql: bool, fmt: str) -> None:
    """Show a saved view's definition (or, with --sql, the SQL of its rows)."""
    tracker = open_tracker(_url(url))
    if as_sql:
        click.echo(tracker.view_sql(name), nl=False)
        return
    view = tracker.view(name)
    if fmt == "json":
        click.echo(dumps(view))
        return
    for key, value in view.items():
        shown = " ".join(value) if isinstance(value, list) and key != "args" else cell(value)
        click.echo(printable(f"{key + ':':<12}{shown}".rstrip()))
    click.echo(f"\nits runs: sqltrack runs --view {shlex.quote(name)}")


@views.command("save")
@url_option
@click.argument("name")
@selection_options
@click.option("--replace", is_flag=True, help="Overwrite the view if the name is taken.")
@errors
def save(url: str | None, name: str, replace: bool, **options: Any) -> None:
    """Save a view: the options of `sqltrack runs` under NAME, checked by running it once."""
    chosen = selection(**options)
    chosen["varying"] = bool(chosen["varying"])
    tracker = open_tracker(_url(url))
    tracker.save_view(name, replace=replace, **chosen)
    verb = "saved" if not replace else "saved (replacing any of that name)"
    click.echo(f"{verb} view {name!r}; its runs: sqltrack runs --view {shlex.quote(name)}")


@views.command("delete")
@url_option
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@errors
def delete(url: str | None, name: str, yes: bool) -> None:
    """Delete a saved view, for everyone (asks first on a terminal; --yes without one)."""
    tracker = open_tracker(_url(url))
    view = tracker.view(name)  # an unknown name fails before any question
    confirm(
        f"Delete view {name!r} (owner {view['owner']!r}) for everyone using this database?",
        yes=yes,
    )
    tracker.delete_view(name)
    click.echo(f"deleted view {name!r}")
