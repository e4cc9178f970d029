"""The backends' two ways of writing a batch: straight in for new steps, upsert otherwise."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import sqltrack_core as sqltrack
from sqltrack_core._backends import postgres


def test_new_steps_then_earlier_steps_merge(tracker: sqltrack.Tracker) -> None:
    """Verify that a batch of new steps and a later batch reaching back both land, merged."""
    with tracker.start_run("paths") as run:
        for step in range(10, 20):
            run.log({"a": float(step)}, step=step)
        assert run.flush(timeout=30)  # only new steps: the direct path
        run.log({"b": 1.0}, step=15)  # an existing step: the upsert path
        run.log({"a": 5.0}, step=5)
        run.log({"a": 25.0}, step=25)
    df = tracker.metrics(run.id)
    assert list(df["step"]) == [5, *range(10, 20), 25]
    assert df.set_index("step").loc[15, "a"] == 15.0
    assert df.set_index("step").loc[15, "b"] == 1.0


def test_postgres_step_stored_meanwhile_is_merged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Verify that a step another connection stores between the check and the COPY is merged."""
    import psycopg

    caplog.set_level(logging.DEBUG, logger="sqltrack")

    tracker = sqltrack.connect(pg_url, flush_interval=0.05)
    try:
        run = tracker.start_run("race")
        original = postgres.PostgresBackend._copy_new_steps
        raced: list[bool] = []

        def copy_after_a_rival(self: Any, cursor: Any, batch: Any, values: Any) -> None:
            if not raced:
                raced.append(True)
                with psycopg.connect(pg_url, autocommit=True) as rival:
                    rival.execute(
                        "INSERT INTO metrics (run_id, step, extra) VALUES (%s, 1, %s::jsonb)",
                        (run.id, '{"rival": 1}'),
                    )
            original(self, cursor, batch, values)

        monkeypatch.setattr(postgres.PostgresBackend, "_copy_new_steps", copy_after_a_rival)
        run.log({"a": 1.0}, step=0)
        run.log({"a": 2.0}, step=1)
        run.finish()
        rows = tracker.query("SELECT step, a, extra FROM metrics ORDER BY step")
        assert raced
        assert rows["step"].tolist() == [0, 1]
        assert rows["a"].tolist() == [1.0, 2.0]
        assert rows["extra"].tolist()[1] == {"rival": 1}
        # merged by the backend itself, not by the writer's step-by-step fallback
        assert not [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    finally:
        tracker.close()
