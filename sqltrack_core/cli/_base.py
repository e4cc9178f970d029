"""What every ``sqltrack`` command shares: the group, common options, errors, the tracker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import SQLTrackError

__all__ = ["cli", "errors", "format_option", "open_tracker", "url_option"]

F = TypeVar("F", bound=Callable[..., Any])


GROUP_URL_HELP = (
    "Database URL for the command (default: $SQLTRACK_URL, else sqlite:///sqltrack.db); "
    "a command's own --url wins."
)
URL_HELP = "Database URL (default: the group's --url, $SQLTRACK_URL, else sqlite:///sqltrack.db)."


def _group_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A command's ``--url``, else the nearest group's (``sqltrack --url X runs``); None
    leaves the choice to `connect` ($SQLTRACK_URL, else the SQLite default)."""
    parent = ctx.parent
    while value is None and parent is not None:
        value = parent.params.get("url")
        parent = parent.parent
    return value


def url_option(fn: F) -> F:
    """The ``--url`` of a command; it wins over the ``--url`` of the groups around it."""
    return click.option("--url", default=None, callback=_group_url, help=URL_HELP)(fn)


def format_option(fn: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "csv", "json"]),
        default="table",
        show_default=True,
        help="Output format.",
    )(fn)


def errors(fn: F) -> F:
    """Turn a SQLTrackError into one line on stderr and exit status 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SQLTrackError as exc:
            # a driver message can go on with context lines (PostgreSQL's "LINE 1: ...")
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise click.ClickException(lines[0]) from exc

    return wrapper  # type: ignore[return-value]


def open_tracker(url: str | None, *, migrate: bool = True) -> Any:
    from ..tracker import connect

    tracker = connect(url, migrate=migrate, offline_ok=False)
    click.get_current_context().call_on_close(tracker.close)  # no leaked connections
    return tracker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", default=None, metavar="URL", help=GROUP_URL_HELP)
@click.version_option(package_name="sqltrack-core")
def cli(url: str | None) -> None:
    """sqltrack: ML experiment tracking that is just SQL.

    Tables fit the terminal ($COLUMNS, else its width; piped output is not cut). Times are
    ISO-8601 UTC (Z); --format csv and json print every column and value whole.
    """
