"""Lineage in words: how a link between runs was found, and a run's family as a text tree.

    print(sqltrack.lineage_tree(tracker, run))   # what `sqltrack lineage RUN` prints

`Tracker.lineage` gives the same links as a DataFrame, evidence included.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uuid as uuid_module

    from .runs import Run
    from .tracker import Tracker

__all__ = ["describe_evidence", "lineage_tree"]

_HAND_EVIDENCE = 60  # characters of a hand-made link's own evidence shown in words


def _share(fraction: float) -> str:
    """A fraction as a percentage that never rounds a part to all or to nothing."""
    percent = round(fraction * 100)
    if percent >= 100 and fraction < 1:
        return ">99%"
    if percent <= 0 < fraction:
        return "<1%"
    return f"{percent}%"


def _casts(evidence: Mapping[str, Any]) -> str | None:
    """How much of the match went through a dtype cast (``float32->bfloat16``), if any."""
    by_cast, casts = evidence.get("elements_matched_by_cast"), evidence.get("casts")
    if not by_cast or not casts:
        return None
    matched = evidence.get("elements_matched") or by_cast
    amount = "all" if by_cast >= matched else f"{_share(by_cast / matched)} of them"
    names = " and ".join(str(c) for c in casts)
    return f"{amount} through a {names} cast{'s' if len(casts) > 1 else ''}"


def describe_evidence(evidence: Mapping[str, Any] | None) -> str:
    """How a link was found, in words, from its evidence.

    ``{"method": "token", "step": 48, "fraction": 0.96}`` reads "by token of the step-48
    checkpoint, 96% of the weights"; a link made by hand reads "by hand" and its own
    evidence, if any.
    """
    evidence = dict(evidence or {})
    method = evidence.get("method")
    if method == "token":
        step = evidence.get("step")
        parts = [f"by token of the {f'step-{step} ' if step is not None else ''}checkpoint"]
    elif method in ("fingerprint", "fingerprints"):
        parts = ["by fingerprints"]
    elif method:
        parts = [f"by {method}"]
    else:
        shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in evidence.items())
        words = _printable(f"by hand: {shown}" if shown else "by hand")
        return words if len(words) <= _HAND_EVIDENCE else words[: _HAND_EVIDENCE - 1] + "…"
    fraction = evidence.get("fraction")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
        parts.append(f"{_share(fraction)} of the weights")
    parts.append(_casts(evidence) or "")
    return ", ".join(filter(None, parts))


def _printable(text: str) -> str:
    """`text` for a terminal: newlines as ``↵``, other control characters replaced."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c == " " else "↵" if c == "\n" else "\ufffd" for c in text
    )


@dataclass(frozen=True)
class _Link:
    kind: str
    run_id: int  # the other run
    evidence: Mapping[str, Any]


@dataclass(frozen=True)
class _Family:
    """The runs and links of one lineage, ready to draw."""

    labels: dict[int, str]  # run id -> "experiment/name  status"
    uuids: dict[int, str]
    parents: dict[int, list[_Link]]
    children: dict[int, list[_Link]]


def _family(tracker: Tracker, root: int) -> _Family:
    frame = tracker.lineage(root)
    links: list[dict[str, Any]] = frame.to_dict("records")  # type: ignore[assignment]
    parents: dict[int, list[_Link]] = {}
    children: dict[int, list[_Link]] = {}
    for row in links:
        up = row["relation"] == "ancestor"
        ends = (row["from_run_id"], row["to_run_id"])
        owner, other = ends if up else ends[::-1]
        found = (parents if up else children).setdefault(int(owner), [])
        link = _Link(str(row["kind"]), int(other), row["evidence"] or {})
        if link not in found:
            found.append(link)
    for found in (*parents.values(), *children.values()):
        found.sort(key=lambda link: (link.run_id, link.kind))
    ids = sorted({root, *(int(row["run_id"]) for row in links)})
    marks = ", ".join("?" for _ in ids)
    # statuses as `runs` reads them (a running run with a stale heartbeat is crashed)
    runs: list[dict[str, Any]] = tracker.runs(where=f"r.id IN ({marks})", args=ids).to_dict(
        "records"
    )  # type: ignore[assignment]
    labels, uuids = {}, {}
    for run in runs:
        name = run["experiment"] + (f"/{run['name']}" if isinstance(run["name"], str) else "")
        labels[int(run["id"])] = _printable(f"{name}  {run['status']}")
        uuids[int(run["id"])] = str(run["uuid"])
    return _Family(labels, uuids, parents, children)


class _Drawing:
    """Draws one direction of a family (ancestors or descendants) as indented lines."""

    def __init__(self, family: _Family, width: int | None, *, up: bool) -> None:
        self.family, self.width, self.up = family, width, up
        self.lines: list[str] = []
        self.seen: set[int] = set()

    def links(self, run_id: int) -> list[_Link]:
        found = self.family.parents if self.up else self.family.children
        return found.get(run_id, [])

    def node(self, owner: int, link: _Link, indent: str, last: bool) -> None:
        label = self.family.labels.get(link.run_id, "?")
        how = describe_evidence(link.evidence)
        if self.up:
            text, how = f"{link.kind} run {link.run_id}  {label}", f"({how})"
        else:
            text, how = f"run {link.run_id}  {label}", f"{link.kind} run {owner}  ({how})"
        below = self.links(link.run_id)
        repeated = link.run_id in self.seen and below
        if repeated:
            how += "  (its links are shown above)"
        inner = indent + ("  " if last else "│ ")
        self.line(
            f"{indent}{'└─' if last else '├─'} {text}", how, inner + ("│ " if below else "  ")
        )
        if repeated:
            return
        self.seen.add(link.run_id)
        for i, child in enumerate(below):
            self.node(link.run_id, child, inner, i == len(below) - 1)

    def line(self, text: str, how: str, continuation: str) -> None:
        """`text` and `how` on one line, or `how` wrapped under it when that is too wide."""
        text, how = text.translate(_CONTROLS), how.translate(_CONTROLS)  # names are user text
        whole = f"{text}  {how}"
        if self.width is None or len(whole) <= self.width:
            self.lines.append(whole)
            return
        self.lines.append(text)
        room = max(self.width - len(continuation) - 1, 20)
        self.lines += [f"{continuation} {part}" for part in textwrap.wrap(how, room)]


#: control characters (a link kind, a run name) never reach the terminal as they are
_CONTROLS = {c: "\ufffd" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def lineage_tree(
    tracker: Tracker,
    run: Run | int | str | uuid_module.UUID,
    *,
    width: int | None = None,
) -> str:
    """A run, the runs its weights came from and the runs made from it, as a text tree.

    Each link names its kind, the other run (id, experiment/name, status) and how it was
    found (`describe_evidence`). A run reached twice is drawn once with its links. `width`
    wraps the "how" of a long line under it (None: one line per link, however long).

    Raises:
        NotFoundError: `run` names no run.
    """
    root = tracker.run_id(run)
    family = _family(tracker, root)
    lines = [
        f"lineage of run {root} ({family.uuids[root]}):",
        f"  run {root}  {family.labels[root]}",
    ]
    for up in (True, False):
        drawing = _Drawing(family, width, up=up)
        drawing.seen.add(root)
        below = drawing.links(root)
        if below and not up:
            lines.append("  descendants:")
        for i, link in enumerate(below):
            drawing.node(root, link, "    ", i == len(below) - 1)
        lines += drawing.lines
    if not family.parents and not family.children:
        lines.append("    (no links to or from other runs)")
    return "\n".join(lines)
