"""Copying runs between tracking databases by UUID (`sqltrack sync --from ... --to ...`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import sqltrack_core as sqltrack
from sqltrack_core import offline
from sqltrack_core.cli import cli


def _laptop(path: Path) -> tuple[str, dict[str, Any]]:
    """A SQLite tracking file with a pre-training run and a fine-tune linked to it."""
    url = f"sqlite:///{path}"
    torch.manual_seed(0)
    weights = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    with sqltrack.connect(url, flush_interval=0.05) as tracker:
        with tracker.start_run(
            "pretrain", name="base", params={"lr": 0.1, "model": {"layers": 2}}, tags=["a"]
        ) as base:
            base.comment = "offline on a laptop"
            base.link_from_weights({k: torch.zeros_like(v) for k, v in weights.items()})
            for step in range(30):
                base.log(
                    {
                        "loss": 1.0 / (step + 1),
                        "count": step,
                        "ok": step % 2 == 0,
                        "note": f"s{step}",
                        "cfg": {"step": step},
                    },
                    step=step,
                )
            base.log({"loss": math.nan, "inf": -math.inf}, step=30)
            base.register_checkpoint("base.pt", weights, step=30)
        with tracker.start_run("finetune", name="ft") as ft:
            links = ft.link_from_weights(weights)
            ft.log({"acc": 0.5}, step=0)
        assert [link.kind for link in links] == ["finetuned_from"]
        ids = {"base": base.uuid, "ft": ft.uuid}
    return url, ids


def _snapshot(url: str) -> dict[str, Any]:
    with sqltrack.connect(url) as tracker:
        runs = tracker.runs(metrics=["loss:last", "count:max", "acc:max"])
        runs = runs.sort_values("name").reset_index(drop=True)
        keep = [
            "uuid",
            "experiment",
            "name",
            "status",
            "params.lr",
            "params.model.layers",
            "loss:last",
            "count:max",
            "acc:max",
        ]
        base = tracker.run_info(str(runs.loc[0, "uuid"]))
        history = tracker.metrics(base["id"])
        return {
            "runs": runs[keep].to_dict("list"),
            "tags": base["tags"],
            "comment": base["comment"],
            "history": history.drop(columns=["run_id"]).to_dict("list"),
            "links": tracker.query(
                "SELECT f.name AS f, l.kind, t.name AS t FROM run_links l "
                "JOIN runs f ON f.id = l.from_run_id JOIN runs t ON t.id = l.to_run_id"
            ).to_dict("list"),
            "checkpoints": tracker.query(
                "SELECT c.kind, count(f.name) AS tensors FROM checkpoints c "
                "LEFT JOIN tensor_fingerprints f ON f.checkpoint_id = c.id "
                "GROUP BY c.kind ORDER BY c.kind"
            ).to_dict("list"),
        }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a is None and b != b) or (b is None and a != a)


def test_copy_is_faithful_and_idempotent(db_url: str, tmp_path: Path) -> None:
    """Verify that copying runs keeps params, tags, every metric type, checkpoints,
    fingerprints and links, and that copying again changes nothing."""
    laptop, _ = _laptop(tmp_path / "laptop.db")
    dry = offline.copy_database(laptop, db_url, dry_run=True)
    assert (len(dry.runs), dry.new_runs, dry.rows, dry.links) == (2, 2, 32, 1)
    with sqltrack.connect(db_url) as tracker:
        assert len(tracker.runs()) == 0  # a dry run writes nothing
    first = offline.copy_database(laptop, db_url)
    assert (first.new_runs, first.rows, first.checkpoints, first.links) == (2, 32, 3, 1)
    copied = _snapshot(db_url)
    assert _same(copied, _snapshot(laptop))
    again = offline.copy_database(laptop, db_url)
    assert (again.new_runs, again.checkpoints) == (0, 0)
    assert _same(_snapshot(db_url), copied)


def test_copied_weights_still_link_new_fine_tunes(db_url: str, tmp_path: Path) -> None:
    """Verify that fingerprints copied from a laptop let a fine-tune in the team database link
    to the copied pre-training run."""
    laptop, ids = _laptop(tmp_path / "laptop.db")
    offline.copy_database(laptop, db_url)
    torch.manual_seed(0)
    weights = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    with sqltrack.connect(db_url) as tracker, tracker.start_run("team-finetune") as run:
        links = run.link_from_weights(weights)
    assert [(link.kind, link.run_uuid) for link in links] == [("finetuned_from", str(ids["base"]))]


def test_copy_one_run_by_uuid_from_the_cli(db_url: str, tmp_path: Path) -> None:
    """Verify that `sqltrack sync --from --to --run` copies only that run, and says so."""
    laptop, ids = _laptop(tmp_path / "laptop.db")
    result = CliRunner().invoke(
        cli, ["sync", "--from", laptop, "--to", db_url, "--run", str(ids["base"])]
    )
    assert result.exit_code == 0, result.output
    assert "sent 1 run(s) (1 new): 31 steps, 2 checkpoints, 0 links" in result.output
    with sqltrack.connect(db_url) as tracker:
        assert list(tracker.runs()["name"]) == ["base"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "sqlite:///same.db", "--to", "sqlite:///same.db"], "same database"),
        (["--from", "mysql://x/y", "--to", "sqlite:///b.db"], "unsupported scheme"),
    ],
)
def test_sync_refuses_bad_arguments(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that `sqltrack sync` refuses a copy onto itself and an unknown URL in one line."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sync", *args])
    assert result.exit_code == 1 and message in result.output


def test_sync_without_spools(tmp_path: Path) -> None:
    """Verify that `sqltrack sync` with no spools says where it looked."""
    result = CliRunner().invoke(cli, ["sync"])
    assert result.exit_code == 0 and "no spools in" in result.output
