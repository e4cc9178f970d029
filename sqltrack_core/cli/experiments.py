"""``sqltrack experiments`` (list, rename, delete) and the run verbs ``rename``, ``move``, ``delete``.

Deleting asks first on a terminal, refuses without ``--yes`` when stdin is not one, and says
what it deleted.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import emit

_STATUSES = ("running", "crashed", "completed", "failed", "cancelled")


def stdin_is_terminal() -> bool:
    """Whether someone can answer a question on stdin."""
    return sys.stdin is not None and sys.stdin.isatty()


def confirm(question: str, *, yes: bool) -> None:
    """Go on with ``--yes`` or a "y" at the prompt; else stop with exit status 1.

    Without a terminal to ask on, refuse: a script must say ``--yes``.
    """
    if yes:
        return
    if not stdin_is_terminal():
        raise click.ClickException(
            "stdin is not a terminal, so there is no one to confirm: add --yes to delete"
        )
    if not click.confirm(question, default=False):
        click.echo("nothing deleted", err=True)
        click.get_current_context().exit(1)


def _by_status(row: Any) -> str:
    """``"3 completed, 1 failed"``: the statuses an experiment's runs have, most first."""
    counts = sorted(((int(row[s]), s) for s in _STATUSES if row[s]), key=lambda c: -c[0])
    return ", ".join(f"{n} {status}" for n, status in counts)


@cli.group(invoke_without_command=True)
@url_option
@format_option
@click.pass_context
@errors
def experiments(ctx: click.Context, url: str | None, fmt: str) -> None:
    """List experiments: runs by status and last activity; rename or delete one.

    \b
      sqltrack experiments
      sqltrack experiments rename mnist mnist-v1
      sqltrack experiments delete scratch --runs
    """
    if ctx.invoked_subcommand is not None:
        return
    df = open_tracker(url).experiments()
    if fmt == "table":
        df["by status"] = [_by_status(row) for _, row in df.iterrows()]
        df = df[["id", "name", "runs", "by status", "last_activity"]]
    emit(df, fmt, title="experiments", keep=("id", "name"))


@experiments.command("rename")
@url_option
@click.argument("old")
@click.argument("new")
@errors
def rename_experiment(url: str | None, old: str, new: str) -> None:
    """Rename experiment OLD to NEW (its id and runs stay)."""
    open_tracker(url).rename_experiment(old, new)
    click.echo(f"renamed experiment {old!r} to {new!r}")


@experiments.command("delete")
@url_option
@click.argument("name")
@click.option(
    "--runs", is_flag=True, help="Also delete its runs, with their metrics, links and checkpoints."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@errors
def delete_experiment(url: str | None, name: str, runs: bool, yes: bool, dry_run: bool) -> None:
    """Delete experiment NAME; one that has runs needs --runs, which deletes them too."""
    tracker = open_tracker(url)
    plan = tracker.delete_experiment(name, runs=True, dry_run=True)
    if plan.runs and not runs:
        raise click.ClickException(
            f"experiment {name!r} still has {plan.runs} run(s); add --runs to delete them with it"
        )
    if dry_run:
        click.echo(f"would delete {plan}")
        return
    confirm(f"Delete experiment {name!r}: {plan}?", yes=yes)
    click.echo(f"deleted {tracker.delete_experiment(name, runs=runs)}")


@cli.command("rename")
@url_option
@click.argument("run")
@click.argument("name")
@errors
def rename_run(url: str | None, run: str, name: str) -> None:
    """Rename a run (by id or UUID)."""
    tracker = open_tracker(url)
    tracker.rename_run(run, name)
    click.echo(f"renamed run {tracker.run_id(run)} to {name!r}")


@cli.command("move")
@url_option
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.argument("experiment")
@errors
def move_runs(url: str | None, runs: tuple[str, ...], experiment: str) -> None:
    """Move runs (by id or UUID) into EXPERIMENT, created if new."""
    tracker = open_tracker(url)
    ids = list(dict.fromkeys(tracker.run_id(run) for run in runs))  # all known, or none moved
    for ident in ids:
        tracker.move_run(ident, experiment)
    click.echo(f"moved {_runs(ids)} to experiment {experiment!r}")


@cli.command("delete")
@url_option
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@errors
def delete_runs(url: str | None, runs: tuple[str, ...], yes: bool, dry_run: bool) -> None:
    """Delete runs (by id or UUID) with their metrics, links and checkpoints."""
    tracker = open_tracker(url)
    ids = list(dict.fromkeys(tracker.run_id(run) for run in runs))
    plan = tracker.delete_runs(ids, dry_run=True)
    if dry_run:
        click.echo(f"would delete {plan} ({_runs(ids)})")
        return
    confirm(f"Delete {_runs(ids)}: {plan}?", yes=yes)
    click.echo(f"deleted {tracker.delete_runs(ids)}")


def _runs(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
    return f"run{'' if len(ids) == 1 else 's'} {shown}"
