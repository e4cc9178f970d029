"""The ``sqltrack`` command line: the core API's verbs, over any tracking database.

One module per command (or family of commands); importing this package registers them all on
`cli`. Without the ``cli`` extra, `main` says what to install.
"""

from __future__ import annotations

import sys

from ._missing import MISSING_CLI

__all__ = ["cli", "main"]

try:
    import click
except ImportError:  # pragma: no cover - exercised by the console script without the extra
    click = None  # type: ignore[assignment]

if click is not None:
    from . import admin, experiments, export, lineage, metrics, runs, show, views  # noqa: F401  (they register commands)
    from ._base import cli


def main() -> None:
    """Entry point of the ``sqltrack`` console script."""
    if click is None:
        print(f"sqltrack: error: {MISSING_CLI}", file=sys.stderr)
        raise SystemExit(2)
    cli(prog_name="sqltrack")
