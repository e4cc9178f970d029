"""The ``sqltrack`` command line: the core API's verbs, over any tracking database."""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import MissingDependencyError, SQLTrackError

if TYPE_CHECKING:
    import pandas as pd

try:
    import click
except ImportError:  # pragma: no cover - exercised by the console script without the extra
    click = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])

_MISSING_CLI = (
    "the sqltrack command needs click, rich and pandas, which are not all installed; "
    "run: pip install 'sqltrack-core[cli]'"
)


def main() -> None:
    """Entry point of the ``sqltrack`` console script."""
    if click is None:
        print(f"sqltrack: error: {_MISSING_CLI}", file=sys.stderr)
        raise SystemExit(2)
    cli(prog_name="sqltrack")


if click is not None:

    def _url_option(fn: F) -> F:
        return click.option(
            "--url",
            envvar="SQLTRACK_URL",
            default=None,
            help="Database URL (default: $SQLTRACK_URL, else sqlite:///sqltrack.db).",
        )(fn)

    def _format_option(fn: F) -> F:
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(["table", "csv", "json"]),
            default="table",
            show_default=True,
            help="Output format.",
        )(fn)

    def _errors(fn: F) -> F:
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

    def _tracker(url: str | None, *, migrate: bool = True) -> Any:
        from .tracker import connect

        tracker = connect(url, migrate=migrate, offline_ok=False)
        click.get_current_context().call_on_close(tracker.close)  # no leaked connections
        return tracker

    def _cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            if math.isnan(value):
                return "NaN"
            return f"{value:.6g}"
        if isinstance(value, (dict, list)):
            return json.dumps(value, default=str)
        text = str(value)
        return "" if text in ("NaT", "<NA>") else text

    def _json_default(value: Any) -> Any:
        """numpy scalars as their Python value (not their str), NaT as null, the rest as text."""
        import pandas as pd

        if value is pd.NaT:
            return None
        item = getattr(value, "item", None)
        if callable(item) and type(value).__module__ == "numpy":
            return item()
        return str(value)

    def _iso_times(df: pd.DataFrame) -> pd.DataFrame:
        """`df` with its timezone-aware datetime columns as ISO-8601 UTC text (NaT as empty).

        What `--format json` and SQLite write too; and numpy formats a column at once, where
        to_csv formats each Timestamp in Python (two thirds of a 1,000-step CSV's time).
        """
        import numpy as np
        import pandas as pd

        times = {c: t for c, t in df.dtypes.items() if isinstance(t, pd.DatetimeTZDtype)}
        if not times:
            return df
        df = df.copy(deep=False)
        for column, dtype in times.items():
            # a tz-aware column converts to UTC datetime64 of its own unit
            stamps = df[column].to_numpy(dtype=f"datetime64[{dtype.unit}]")
            text = np.datetime_as_string(stamps, timezone="UTC")
            text[np.isnat(stamps)] = ""
            df[column] = text
        return df

    def _emit(df: pd.DataFrame, fmt: str, title: str | None = None) -> None:
        if fmt == "csv":
            click.echo(_iso_times(df).to_csv(index=False), nl=False)
            return
        if fmt == "json":
            click.echo(
                df.to_json(orient="records", date_format="iso", default_handler=str, indent=2)
            )
            return
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError as exc:
            raise MissingDependencyError(_MISSING_CLI) from exc
        table = Table(title=title, show_lines=False, header_style="bold")
        for column in df.columns:
            numeric = df[column].dtype.kind in "iuf" or str(df[column].dtype) in (
                "Int64",
                "Float64",
            )
            table.add_column(str(column), justify="right" if numeric else "left", overflow="fold")
        for row in df.itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        Console(width=None if sys.stdout.isatty() else 200).print(table)

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="sqltrack-core")
    def cli() -> None:
        """sqltrack: ML experiment tracking that is just SQL."""

    @cli.command()
    @_url_option
    @click.option(
        "--dir",
        "directory",
        type=click.Path(exists=True, file_okay=False),
        default=None,
        help="Also apply your own NNNN_name.sql files from this folder (or its dialect subfolder).",
    )
    @_errors
    def migrate(url: str | None, directory: str | None) -> None:
        """Create or update the schema (and apply your own migrations with --dir)."""
        tracker = _tracker(url, migrate=False)
        done = tracker.migrate(directory)
        for migration in done:
            click.echo(f"applied {migration.path.name}")
        click.echo(f"schema up to date ({len(done)} migration(s) applied)")

    @cli.command()
    @_url_option
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
    @_format_option
    @_errors
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
        tracker = _tracker(url)
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
        _emit(df, fmt, title=f"runs{f' of {experiment}' if experiment else ''}")

    @cli.command()
    @_url_option
    @click.argument("run")
    @click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
    )
    @_errors
    def show(url: str | None, run: str, fmt: str) -> None:
        """Show one run (by id or UUID): status, params, env, links and metric summary."""
        tracker = _tracker(url)
        info = tracker.run_info(run)
        if fmt == "json":
            click.echo(json.dumps(info, default=_json_default, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        head = Table.grid(padding=(0, 2))
        for field in (
            "id",
            "uuid",
            "experiment",
            "name",
            "status",
            "owner",
            "started_at",
            "ended_at",
            "heartbeat_at",
            "tags",
            "comment",
        ):
            head.add_row(f"[bold]{field}[/bold]", _cell(info.get(field)))
        console.print(head)
        params = {k: v for k, v in info.items() if k.startswith("params.")}
        if params:
            table = Table(title="params", header_style="bold")
            table.add_column("param")
            table.add_column("value")
            for key, value in params.items():
                table.add_row(key[len("params.") :], _cell(value))
            console.print(table)
        if info["metrics"]:
            table = Table(title="metrics", header_style="bold")
            for column in ("key", "count", "last", "last step", "min", "max"):
                table.add_column(column, justify="left" if column == "key" else "right")
            for key, entry in info["metrics"].items():
                table.add_row(
                    key,
                    str(entry["count"]),
                    _cell(entry["last"]),
                    str(entry["last_step"]),
                    _cell(entry.get("min")),
                    _cell(entry.get("max")),
                )
            console.print(table)
        if info["links"]:
            table = Table(title="links", header_style="bold")
            for column in ("direction", "kind", "run", "evidence"):
                table.add_column(column)
            for link in info["links"]:
                table.add_row(
                    link["direction"], link["kind"], str(link["run_id"]), _cell(link["evidence"])
                )
            console.print(table)
        env = info.get("env") or {}
        summary = {
            k: env.get(k) for k in ("hostname", "user", "python", "platform", "git", "packages")
        }
        console.print(
            "[bold]env[/bold] " + json.dumps({k: v for k, v in summary.items() if v}, default=str)
        )

    @cli.command()
    @_url_option
    @click.argument("run")
    @click.option("--key", "-k", "keys", multiple=True, help="Only these metric keys. Repeatable.")
    @_format_option
    @_errors
    def metrics(url: str | None, run: str, keys: tuple[str, ...], fmt: str) -> None:
        """Print one run's metric history, one row per step."""
        tracker = _tracker(url)
        df = tracker.metrics(tracker.run_id(run), list(keys) or None)
        if fmt == "table":
            df = df.drop(columns=["logged_at"])
        _emit(df, fmt)

    @cli.command()
    @_url_option
    @click.argument("run")
    @_format_option
    @_errors
    def lineage(url: str | None, run: str, fmt: str) -> None:
        """Print the ancestors and descendants of a run, with link kinds."""
        tracker = _tracker(url)
        df = tracker.lineage(run)
        if fmt == "table":
            df = df.drop(columns=["uuid"])
        _emit(df, fmt)

    @cli.command()
    @_url_option
    @click.argument("statement")
    @_format_option
    @_errors
    def sql(url: str | None, statement: str, fmt: str) -> None:
        """Run any SQL statement and print its result."""
        tracker = _tracker(url)
        _emit(tracker.query(statement), fmt)

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
    @_errors
    def sync(
        from_url: str | None, to_url: str | None, runs: tuple[str, ...], dry_run: bool
    ) -> None:
        """Send spooled runs to their database, or copy runs between two databases.

        Without --from it sends the spools that processes left when they ended while their
        database was away ($SQLTRACK_SPOOL_DIR, default: the user cache dir), then removes them.
        Runs are matched by UUID: sending twice merges, never duplicates.
        """
        from rich.progress import Progress

        from . import offline

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
