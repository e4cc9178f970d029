"""Quickstart: log a small learning-rate sweep on synthetic data, then read it back with SQL.

Run it from anywhere; it writes ``sqltrack.db`` in the working directory (or wherever
``$SQLTRACK_URL`` points)::

    python examples/quickstart.py
"""

from __future__ import annotations

import math
import random

import sqltrack_core as sqltrack


def train(run: sqltrack.Run, lr: float, seed: int, steps: int = 300) -> None:
    """Pretend to train: a noisy loss curve whose speed depends on the learning rate."""
    rng = random.Random(seed)
    speed = 4 * lr / (lr + 0.01)
    for step in range(steps):
        progress = step / steps
        loss = 2.3 * math.exp(-speed * progress * 3) + 0.1 + rng.gauss(0, 0.02)
        run.log(
            {"train/loss": loss, "train/acc": 1 - loss / 2.5, "lr": lr * (1 - progress)},
            step=step,
        )
        if step % 50 == 49:
            val_loss = loss + 0.05 + abs(rng.gauss(0, 0.02))
            run.log(
                {"val/loss": val_loss, "val/acc": 1 - val_loss / 2.5, "epoch": step // 50},
                step=step,
            )


def main() -> None:
    tracker = sqltrack.connect()  # $SQLTRACK_URL, else sqlite:///sqltrack.db
    print(f"tracking into {tracker.url}")
    for seed, lr in enumerate([1e-3, 3e-3, 1e-2, 3e-2]):
        params = {"lr": lr, "seed": seed, "model": {"layers": 4, "hidden": 128}}
        with tracker.start_run(
            "quickstart-sweep", name=f"lr={lr:g}", params=params, tags=["demo"]
        ) as run:
            train(run, lr, seed)

    # The readers return pandas DataFrames; aggregates are computed in SQL.
    runs = tracker.runs(
        "quickstart-sweep", metrics={"val/acc": "max", "train/loss": "last", "val/loss": "min"}
    )
    columns = [
        "id",
        "name",
        "status",
        "params.lr",
        "val/acc:max",
        "train/loss:last",
        "val/loss:min",
    ]
    print(runs[columns].tail(4).to_string(index=False))

    # Every metric is a typed column: plain SQL just works.
    best = tracker.query(
        "SELECT r.id, r.name, max(m.val_acc) AS best_val_acc FROM metrics m "
        "JOIN runs r ON r.id = m.run_id GROUP BY r.id, r.name ORDER BY best_val_acc DESC LIMIT 1"
    )
    print(f"\nbest run by SQL: {best.iloc[0]['name']} (val_acc {best.iloc[0]['best_val_acc']:.3f})")
    print(
        "try: sqltrack runs --metric val/acc:max   or   sqltrack sql 'SELECT * FROM metric_columns'"
    )


if __name__ == "__main__":
    main()
