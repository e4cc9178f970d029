"""A run's lineage in words: `describe_evidence`, `lineage_tree` and `sqltrack lineage`, on
both backends."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import sqltrack_core as sqltrack
from sqltrack_core.cli import cli
from sqltrack_core.errors import NotFoundError
from sqltrack_core.lineage import describe_evidence

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TOKEN_20 = {"method": "token", "checkpoint_uuid": "c2", "step": 20, "path": "/ckpt/step-20"}
TOKEN_48 = {"method": "token", "checkpoint_uuid": "c1", "step": 48, "fraction": 0.96}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("evidence", "words"),
    [
        (TOKEN_20, "by token of the step-20 checkpoint"),
        (TOKEN_48, "by token of the step-48 checkpoint, 96% of the weights"),
        ({"method": "token"}, "by token of the checkpoint"),
        ({"method": "fingerprint", "fraction": 0.95}, "by fingerprints, 95% of the weights"),
        ({"method": "fingerprint", "fraction": 0.004}, "by fingerprints, <1% of the weights"),
        ({"method": "fingerprint", "fraction": 0.9996}, "by fingerprints, >99% of the weights"),
        (
            {
                "method": "fingerprint",
                "fraction": 0.6,
                "elements_matched": 600,
                "elements_matched_by_cast": 600,
                "casts": ["float32->bfloat16"],
            },
            "by fingerprints, 60% of the weights, all through a float32->bfloat16 cast",
        ),
        (
            {
                "method": "fingerprint",
                "fraction": 1.0,
                "elements_matched": 1000,
                "elements_matched_by_cast": 250,
                "casts": ["float32->bfloat16", "float32->float16"],
            },
            "by fingerprints, 100% of the weights, 25% of them through a float32->bfloat16 "
            "and float32->float16 casts",
        ),
        ({}, "by hand"),
        (None, "by hand"),
        ({"checkpoint": "best.pt"}, 'by hand: checkpoint="best.pt"'),
        ({"note": "x" * 100}, 'by hand: note="' + "x" * 44 + "…"),
    ],
    ids=[
        "token",
        "token-fraction",
        "token-no-step",
        "fingerprints",
        "tiny-share",
        "almost-all",
        "all-by-cast",
        "some-by-cast",
        "hand-empty",
        "hand-none",
        "hand-evidence",
        "hand-long",
    ],
)
def test_describe_evidence(evidence: dict[str, Any] | None, words: str) -> None:
    """Verify that each kind of evidence reads as the sentence the tree and `show` print."""
    assert describe_evidence(evidence) == words


def family(tracker: sqltrack.Tracker) -> dict[str, sqltrack.Run]:
    """The examples' story: a pretrain run, a fine-tune from it (cancelled), a resume of that."""
    base = tracker.start_run("pretrain", name="backbone")
    base.finish()
    tune = tracker.start_run("finetune", name="new-head")
    tune.link("finetuned_from", base, evidence=TOKEN_48)
    tune.finish("cancelled")
    again = tracker.start_run("finetune", name="new-head (resumed)")
    again.link("resumed_from", tune, evidence=TOKEN_20)
    again.finish()
    return {"base": base, "tune": tune, "again": again}


def test_the_tree_of_a_leaf_reads_as_the_examples_print_it(tracker: sqltrack.Tracker) -> None:
    """Verify that the last run's tree lists its ancestors, nested, with kinds, names,
    statuses and how each link was found, exactly as the README shows."""
    runs = family(tracker)
    again, tune, base = runs["again"], runs["tune"], runs["base"]
    assert sqltrack.lineage_tree(tracker, again.id).splitlines() == [
        f"lineage of run {again.id} ({again.uuid}):",
        f"  run {again.id}  finetune/new-head (resumed)  completed",
        f"    └─ resumed_from run {tune.id}  finetune/new-head  cancelled  "
        "(by token of the step-20 checkpoint)",
        f"      └─ finetuned_from run {base.id}  pretrain/backbone  completed  "
        "(by token of the step-48 checkpoint, 96% of the weights)",
    ]


def test_the_tree_shows_descendants(tracker: sqltrack.Tracker) -> None:
    """Verify that a run in the middle shows its parent above its descendants, and the first
    run its whole family below it, each link saying which run it points at."""
    runs = family(tracker)
    again, tune, base = runs["again"], runs["tune"], runs["base"]
    middle = sqltrack.lineage_tree(tracker, str(tune.uuid)).splitlines()
    assert middle[2].startswith(f"    └─ finetuned_from run {base.id}  pretrain/backbone")
    assert middle[3:] == [
        "  descendants:",
        f"    └─ run {again.id}  finetune/new-head (resumed)  completed  resumed_from run "
        f"{tune.id}  (by token of the step-20 checkpoint)",
    ]
    top = sqltrack.lineage_tree(tracker, base).splitlines()
    assert top[2] == "  descendants:"
    assert top[3].startswith(f"    └─ run {tune.id}  finetune/new-head  cancelled  finetuned_from")
    assert top[4].startswith(f"      └─ run {again.id}  finetune/new-head (resumed)  completed")


def test_a_run_with_two_parents_and_shared_grandparent(tracker: sqltrack.Tracker) -> None:
    """Verify that siblings branch with ├─ and └─, and a run reached twice is expanded once."""
    grand = tracker.start_run("g", name="grand")
    grand.finish()
    left, right = tracker.start_run("p", name="left"), tracker.start_run("p", name="right")
    for parent in (left, right):
        parent.link("finetuned_from", grand, evidence={"method": "fingerprint", "fraction": 1})
        parent.finish()
    child = tracker.start_run("c", name="merged")
    child.link("initialized_from", left, evidence={"method": "fingerprint", "fraction": 0.4})
    child.link("initialized_from", right, evidence={"method": "fingerprint", "fraction": 0.3})
    child.finish()
    lines = sqltrack.lineage_tree(tracker, child).splitlines()
    assert lines[2].startswith(f"    ├─ initialized_from run {left.id}  p/left  completed")
    assert lines[2].endswith("(by fingerprints, 40% of the weights)")
    assert lines[3].startswith(f"    │ └─ finetuned_from run {grand.id}  g/grand")
    assert lines[4].startswith(f"    └─ initialized_from run {right.id}  p/right")
    assert lines[5].startswith(f"      └─ finetuned_from run {grand.id}  g/grand")
    assert len(lines) == 6


def test_hand_made_cycles_end(tracker: sqltrack.Tracker) -> None:
    """Verify that links made by hand into a cycle give a finite tree: each link once."""
    a, b = tracker.start_run("loop", name="a"), tracker.start_run("loop", name="b")
    a.link("derived_from", b)
    b.link("derived_from", a)
    a.finish()
    b.finish()
    lines = sqltrack.lineage_tree(tracker, a).splitlines()
    assert lines[2] == f"    └─ derived_from run {b.id}  loop/b  completed  (by hand)"
    assert lines[3:] == [
        "  descendants:",
        f"    └─ run {b.id}  loop/b  completed  derived_from run {a.id}  (by hand)",
    ]


def test_a_run_without_links(tracker: sqltrack.Tracker) -> None:
    """Verify that a run without links says so, and that a running run with a stale heartbeat
    is shown as crashed, as `runs` reads it."""
    run = tracker.start_run("solo", name="alone")
    lines = sqltrack.lineage_tree(tracker, run).splitlines()
    assert lines[1] == f"  run {run.id}  solo/alone  running"
    assert lines[2] == "    (no links to or from other runs)"
    run.finish()
    # what a killed process leaves: status running, no ended_at, a heartbeat long past
    with tracker.backend.transaction():
        tracker.backend.execute(
            tracker.backend.sql(
                "UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ? WHERE id = ?"
            ),
            (tracker.backend.timestamp(time.time() - 3600), run.id),
        )
    assert sqltrack.lineage_tree(tracker, run).splitlines()[1].endswith("solo/alone  crashed")


def test_width_wraps_how_a_link_was_found(tracker: sqltrack.Tracker) -> None:
    """Verify that with a width, a long line puts how the link was found under it."""
    runs = family(tracker)
    text = sqltrack.lineage_tree(tracker, runs["again"], width=60)
    assert max(map(len, text.splitlines()[1:])) <= 60
    assert "(by token of the step-48 checkpoint, 96% of the weights)" in " ".join(text.split())
    assert text.splitlines()[-1].startswith("           ")  # under the text, past the branch


def test_an_unknown_run_is_named(tracker: sqltrack.Tracker) -> None:
    """Verify that an unknown run raises NotFoundError naming it."""
    with pytest.raises(NotFoundError, match="999"):
        sqltrack.lineage_tree(tracker, 999)


def test_the_lineage_command(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `sqltrack lineage` prints the tree, and the raw links with --format json
    or csv (evidence as JSON)."""
    runs = family(tracker)
    tree = invoke("lineage", "--url", db_url, str(runs["again"].id))
    assert tree.exit_code == 0, tree.output
    assert tree.stdout.rstrip("\n") == sqltrack.lineage_tree(tracker, runs["again"])
    raw = json.loads(
        invoke("lineage", "--url", db_url, str(runs["tune"].id), "--format", "json").stdout
    )
    assert {(r["relation"], r["kind"], r["run_id"]) for r in raw} == {
        ("ancestor", "finetuned_from", runs["base"].id),
        ("descendant", "resumed_from", runs["again"].id),
    }
    assert next(r for r in raw if r["relation"] == "ancestor")["evidence"] == TOKEN_48
    text = invoke("lineage", "--url", db_url, str(runs["tune"].id), "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {json.dumps(json.loads(r["evidence"]), sort_keys=True) for r in rows} == {
        json.dumps(TOKEN_48, sort_keys=True),
        json.dumps(TOKEN_20, sort_keys=True),
    }


def test_show_names_links_in_words(tracker: sqltrack.Tracker, db_url: str) -> None:
    """Verify that `show` writes a run's links as sentences, both directions."""
    runs = family(tracker)
    text = invoke("show", "--url", db_url, str(runs["tune"].id)).stdout
    flat = " ".join(text.split())
    assert (
        f"finetuned_from run {runs['base'].id} (pretrain/backbone), by token of the step-48 "
        "checkpoint, 96% of the weights" in flat
    )
    assert (
        f"run {runs['again'].id} (finetune/new-head (resumed)) resumed_from this run, by token "
        "of the step-20 checkpoint" in flat
    )


def test_the_examples_print_the_packaged_tree(
    tracker: sqltrack.Tracker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that the examples' print_lineage prints what lineage_tree makes."""
    runs = family(tracker)
    spec = importlib.util.spec_from_file_location("_lineage", EXAMPLES / "_lineage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.print_lineage(tracker, str(runs["again"].uuid))
    printed = capsys.readouterr().out
    assert printed == "\n" + sqltrack.lineage_tree(tracker, runs["again"]) + "\n"
