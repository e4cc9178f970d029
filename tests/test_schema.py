"""Schema behaviour users rely on in their own SQL."""

from __future__ import annotations

import sqltrack_core as sqltrack


def test_deleting_a_run_deletes_its_metrics_and_links(tracker: sqltrack.Tracker) -> None:
    """Verify that DELETE FROM runs cascades to metrics (by trigger) and run_links (by key)."""
    with tracker.start_run("e") as keep:
        keep.log({"loss": 1.0}, step=0)
    with tracker.start_run("e") as doomed:
        doomed.log({"loss": 2.0}, step=0)
        doomed.log({"loss": 3.0}, step=1)
        doomed.link("finetuned_from", keep)
    tracker.backend.execute(tracker.backend.sql("DELETE FROM runs WHERE id = ?"), (doomed.id,))
    left = tracker.query("SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id")
    assert left.values.tolist() == [[keep.id, 1]]
    assert tracker.query("SELECT count(*) AS n FROM run_links")["n"].tolist() == [0]


def test_metrics_rows_of_other_runs_survive_a_delete(tracker: sqltrack.Tracker) -> None:
    """Verify that the delete trigger removes only the deleted run's rows."""
    runs = []
    for i in range(3):
        with tracker.start_run("e") as run:
            run.log({"x": i}, step=0)
        runs.append(run)
    tracker.backend.execute(tracker.backend.sql("DELETE FROM runs WHERE id = ?"), (runs[1].id,))
    ids = tracker.query("SELECT run_id FROM metrics ORDER BY run_id")["run_id"].tolist()
    assert ids == [runs[0].id, runs[2].id]
