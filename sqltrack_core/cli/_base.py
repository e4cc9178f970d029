"""What every ``sqltrack`` command shares: the group, common options, errors, the tracker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import SQLTrackError

__all__ = ["cli", "errors", "format_option", "open_tracker", "url_option"]

F = TypeVar("F", bound=Callable[..., Any])


def url_option(fn: F) -> F:
    return click.option(
        "--url",
        envvar="SQLTRACK_URL",
        default=None,
        help="Database URL (default: $SQLTRACK_URL, else sqlite:///sqltrack.db).",
    )(fn)


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
@click.version_option(package_name="sqltrack-core")
def cli() -> None:
    """sqltrack: ML experiment tracking that is just SQL."""
