"""Print a run and its ancestors as a small tree (shared by the examples)."""

from __future__ import annotations

import sqltrack_core as sqltrack


def print_lineage(tracker: sqltrack.Tracker, run: str) -> None:
    """Print `run` (an id or UUID) and the runs its weights came from, with how each was found."""
    info = tracker.run_info(run)
    ancestors = tracker.lineage(run).query("relation == 'ancestor'")
    print(f"\nlineage of run {info['id']} ({info['uuid']}):")
    print(f"  run {info['id']}  {info['experiment']}/{info['name']}  {info['status']}")
    for row in ancestors.sort_values("depth").itertuples():
        evidence = row.evidence
        share = f"{evidence['fraction']:.0%} of the weights" if "fraction" in evidence else None
        how = (
            ", ".join(filter(None, [f"token of the step-{evidence['step']} checkpoint", share]))
            if evidence["method"] == "token"
            else f"fingerprints, {share}"
        )
        indent = "  " * int(row.depth)
        print(
            f"  {indent}└─ {row.kind} run {row.run_id}  {row.experiment}/{row.name}  "
            f"{row.status}  (by {how})"
        )
