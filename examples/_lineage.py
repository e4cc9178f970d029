"""Print a run and its ancestors as a small tree (shared by the examples)."""

from __future__ import annotations

import sqltrack_core as sqltrack


def print_lineage(tracker: sqltrack.Tracker, run: str) -> None:
    """Print `run` (an id or UUID), the runs its weights came from and how each was found:
    what ``sqltrack lineage RUN`` prints."""
    print()
    print(sqltrack.lineage_tree(tracker, run))
