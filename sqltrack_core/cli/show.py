"""``sqltrack show``: one run."""

from __future__ import annotations

import json

import click

from ._base import cli, errors, open_tracker, url_option
from ._output import cell, json_default


@cli.command()
@url_option
@click.argument("run")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@errors
def show(url: str | None, run: str, fmt: str) -> None:
    """Show one run (by id or UUID): status, params, env, links and metric summary."""
    tracker = open_tracker(url)
    info = tracker.run_info(run)
    if fmt == "json":
        click.echo(json.dumps(info, default=json_default, indent=2))
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
        head.add_row(f"[bold]{field}[/bold]", cell(info.get(field)))
    console.print(head)
    params = {k: v for k, v in info.items() if k.startswith("params.")}
    if params:
        table = Table(title="params", header_style="bold")
        table.add_column("param")
        table.add_column("value")
        for key, value in params.items():
            table.add_row(key[len("params.") :], cell(value))
        console.print(table)
    if info["metrics"]:
        table = Table(title="metrics", header_style="bold")
        for column in ("key", "count", "last", "last step", "min", "max"):
            table.add_column(column, justify="left" if column == "key" else "right")
        for key, entry in info["metrics"].items():
            table.add_row(
                key,
                str(entry["count"]),
                cell(entry["last"]),
                str(entry["last_step"]),
                cell(entry.get("min")),
                cell(entry.get("max")),
            )
        console.print(table)
    if info["links"]:
        table = Table(title="links", header_style="bold")
        for column in ("direction", "kind", "run", "evidence"):
            table.add_column(column)
        for link in info["links"]:
            table.add_row(
                link["direction"], link["kind"], str(link["run_id"]), cell(link["evidence"])
            )
        console.print(table)
    env = info.get("env") or {}
    summary = {k: env.get(k) for k in ("hostname", "user", "python", "platform", "git", "packages")}
    console.print(
        "[bold]env[/bold] " + json.dumps({k: v for k, v in summary.items() if v}, default=str)
    )
