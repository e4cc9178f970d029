"""The one-line 'did you mean' message every reader and command gives for a name it does not know."""

from __future__ import annotations

from sqltrack_core._suggest import did_you_mean


def test_close_names_are_suggested_best_first() -> None:
    """Verify that up to three close matches are named, the closest first."""
    message = did_you_mean("val/accc", ["train/loss", "val/acc", "val/acc5"], what="metric key")
    assert message == "no metric key 'val/accc'; did you mean 'val/acc' or 'val/acc5'?"


def test_without_a_close_name_a_few_known_ones_are_listed() -> None:
    """Verify that a name close to nothing lists the first known names, cut after eight."""
    known = [f"exp{i:02d}" for i in range(12)]
    message = did_you_mean("zzz", known, what="experiment")
    assert message.startswith("no experiment 'zzz'; known: 'exp00', 'exp01'")
    assert message.endswith("'exp07', ...")
    assert did_you_mean("zzz", [], what="view") == "no view 'zzz'; there are none"
