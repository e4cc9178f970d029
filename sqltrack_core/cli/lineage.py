"""``sqltrack lineage``: where a run's weights came from, and what came of them."""

from __future__ import annotations

import click

from ..lineage import lineage_tree
from ._base import cli, errors, open_tracker, url_option
from ._output import emit, terminal_width


@cli.command()
@url_option
@click.argument("run")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "csv", "json"]),
    default="tree",
    show_default=True,
    help="tree: the family in words; csv or json: the raw links, evidence included.",
)
@errors
def lineage(url: str | None, run: str, fmt: str) -> None:
    """Print a run (by id or UUID), the runs its weights came from and the runs made from it.

    Each link says its kind, the other run and how it was found; in an 80-column terminal:

    \b
      run 2  finetune/new-head  cancelled
        └─ finetuned_from run 1  pretrain/backbone  completed
             (by token of the step-48 checkpoint, 96% of the weights)
      descendants:
        └─ run 3  finetune/new-head (resumed)  completed
             resumed_from run 2  (by token of the step-20 checkpoint)
    """
    tracker = open_tracker(url)
    if fmt == "tree":
        click.echo(lineage_tree(tracker, run, width=terminal_width()))
        return
    emit(tracker.lineage(run), fmt)
