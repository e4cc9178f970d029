"""``sqltrack migrate``, ``sql`` and ``sync``: the schema, any SQL, spools and copies."""

from __future__ import annotations

import sys

import click

from ._base import cli, errors, format_option, open_tracker, url_option
from ._output import emit


@cli.command()
@url_option
@click.option(
    "--dir",
    "directory",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Also apply your own NNNN_name.sql files from this folder (or its dialect subfolder).",
)
@errors
def migrate(url: str | None, directory: str | None) -> None:
    """Create or update the schema (and apply your own migrations with --dir)."""
    tracker = open_tracker(url, migrate=False)
    done = tracker.migrate(directory)
    for migration in done:
        click.echo(f"applied {migration.path.name}")
    click.echo(f"schema up to date ({len(done)} migration(s) applied)")


@cli.command()
@url_option
@click.argument("statement")
@format_option
@errors
def sql(url: str | None, statement: str, fmt: str) -> None:
    """Run any SQL statement and print its result."""
    tracker = open_tracker(url)
    emit(tracker.query(statement), fmt, nan_shown=True)  # NULL and NaN stay apart


@cli.command()
@click.option(
    "--from",
    "from_url",
    default=None,
    metavar="URL",
    help="Copy runs from this tracking database instead of sending spools.",
)
@click.option(
    "--to",
    "to_url",
    default=None,
    metavar="URL",
    help="Send to this database (default: each spool's own; with --from, $SQLTRACK_URL).",
)
@click.option("--run", "runs", multiple=True, metavar="UUID", help="Only this run. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; write nothing.")
@errors
def sync(from_url: str | None, to_url: str | None, runs: tuple[str, ...], dry_run: bool) -> None:
    """Send spooled runs to their database, or copy runs between two databases.

    Without --from it sends the spools that processes left when they ended while their
    database was away ($SQLTRACK_SPOOL_DIR, default: the user cache dir), then removes them.
    Runs are matched by UUID: sending twice merges, never duplicates.
    """
    from rich.progress import Progress

    from .. import offline

    wanted = list(runs) or None
    verb = "would send" if dry_run else "sent"
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("steps", total=None)

        def advance(steps: int) -> None:
            progress.advance(task, steps)

        if from_url is not None:
            result = offline.copy_database(
                from_url, to_url, runs=wanted, dry_run=dry_run, progress=advance
            )
            progress.stop()
            click.echo(
                f"{verb} {len(result.runs)} run(s) ({result.new_runs} new): "
                f"{result.rows} steps, {result.checkpoints} checkpoints, {result.links} links"
                + (f", {result.skipped_links} links skipped" if result.skipped_links else "")
            )
            return
        reports = offline.sync_spools(to_url, runs=wanted, dry_run=dry_run, progress=advance)
    if not reports:
        click.echo(f"no spools in {offline.spool_dir()}")
        return
    failed = 0
    for entry in reports:
        if entry.skipped is not None:
            failed += entry.skipped.startswith("not sent")
            click.echo(f"{entry.path}: {entry.skipped}")
            continue
        for run_uuid, experiment, name, status in entry.runs:
            click.echo(f"{verb} run {run_uuid} ({experiment}/{name or '-'}, {status})")
        r = entry.result
        click.echo(
            f"{entry.path} -> {entry.target}: {r.rows} steps, {r.checkpoints} checkpoints, "
            f"{r.links} links" + (", spool removed" if entry.removed else "")
        )
    if failed:
        raise click.ClickException(f"{failed} spool(s) could not be sent; they are kept")
