"""Provenance: checkpoint tokens, the checkpoint registry, and weight-fingerprint link inference.

Two independent keys say where a model's weights came from (see the brief's "Provenance" and
issue 3):

- a **token** ``{"run_uuid", "checkpoint_uuid", "step"}`` (plain str/int, so it survives
  ``torch.load(weights_only=True)``) travels inside the checkpoint and resolves to its run;
- **fingerprints**: per-tensor content hashes registered with every checkpoint. A hash is
  *produced* by run R only if R changed that tensor, i.e. it is not among R's own initial
  weights. When a run starts from some weights, each of its tensors is credited to the earliest
  other run that produced that exact hash; a parent credited with at least half of the
  fingerprinted elements is ``finetuned_from``, any other parent ``initialized_from``.

The `Run` methods `register_checkpoint`, `link_from_weights` and `link_from_token` are the
public API; this module holds what they share with the framework integrations.

Example::

    with tracker.start_run("pretrain") as run:
        run.link_from_weights(model.state_dict())  # records the initial weights
        train(model)
        token = run.register_checkpoint("base.pt", model.state_dict(), step=1000)
        torch.save({"model": model.state_dict(), "sqltrack": token}, "base.pt")

    with tracker.start_run("finetune") as run:
        model.load_state_dict(torch.load("base.pt", weights_only=True)["model"])
        run.link_from_weights(model.state_dict())  # -> finetuned_from the pretrain run
"""

from __future__ import annotations

import dataclasses
import os
import uuid as uuid_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _json
from ._fingerprint import CAST_DTYPES, MIN_NUMEL, TensorFingerprint, fingerprint_state_dict
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = [
    "CAST_DTYPES",
    "CHECKPOINT_KINDS",
    "FINETUNE_FRACTION",
    "MIN_NUMEL",
    "InferredLink",
    "TensorFingerprint",
    "checkpoint_token",
    "fingerprint_state_dict",
    "read_token",
]

#: Values of ``checkpoints.kind``: weights saved during training, at its end, or at its start.
CHECKPOINT_KINDS = ("checkpoint", "final", "initial")

#: A parent credited with at least this share of the elements is ``finetuned_from``; below it,
#: ``initialized_from`` (with the fraction in the link's evidence).
FINETUNE_FRACTION = 0.5

_TOKEN_KEYS = ("run_uuid", "checkpoint_uuid", "step")
_IN_CHUNK = 500  # hashes per IN (...) list: under SQLite's bound-variable limit


def checkpoint_token(
    run_uuid: uuid_module.UUID | str, checkpoint_uuid: uuid_module.UUID | str, step: int | None
) -> dict[str, Any]:
    """Return the token embedded in a checkpoint: plain JSON types only."""
    return {
        "run_uuid": str(run_uuid),
        "checkpoint_uuid": str(checkpoint_uuid),
        "step": None if step is None else int(step),
    }


def read_token(value: Any) -> dict[str, Any] | None:
    """Return `value` as a checkpoint token if it is one (as `checkpoint_token` makes), else None."""
    if not isinstance(value, Mapping) or not all(key in value for key in _TOKEN_KEYS):
        return None
    step = value["step"]
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        return None
    try:
        return checkpoint_token(
            uuid_module.UUID(str(value["run_uuid"])),
            uuid_module.UUID(str(value["checkpoint_uuid"])),
            step,
        )
    except ValueError:
        return None


@dataclass(frozen=True)
class InferredLink:
    """A link `link_from_weights` or `link_from_token` wrote: ``this run --kind--> run_id``.

    `run_id` is None for a link made while the database was away (it is written, by UUID,
    when the database answers).
    """

    kind: str
    run_id: int | None
    run_uuid: str
    evidence: dict[str, Any] = field(default_factory=dict)


def check_kind(kind: str) -> str:
    if kind not in CHECKPOINT_KINDS:
        raise ConfigurationError(
            f"checkpoint kind {kind!r} is not one of {', '.join(map(repr, CHECKPOINT_KINDS))}"
        )
    return kind


def write_checkpoint(
    b: Backend,
    *,
    run_id: int,
    token: dict[str, Any],
    path: str | None,
    kind: str,
    fingerprints: Sequence[TensorFingerprint],
) -> None:
    """Insert one checkpoint and its fingerprints in one transaction (on the writer thread).

    `produced` is decided here, after this run's earlier writes: a tensor is produced by the run
    unless it is among the run's own 'initial' weights, under any name (a key renamed between
    load and save still counts as unchanged) and in any floating dtype (a frozen layer saved in
    bfloat16 from float32 initial weights is unchanged too: its `bf16_hash` is one of their cast
    keys). Idempotent, so a retry after a lost connection is harmless.
    """
    with b.transaction():
        b.execute(
            b.sql(
                "INSERT INTO checkpoints (uuid, run_id, step, path, kind, token) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO NOTHING"
            ),
            (
                token["checkpoint_uuid"],
                run_id,
                token["step"],
                path,
                kind,
                b.json_param(_json.dumps(token)),
            ),
        )
        _, rows = b.fetchall(
            b.sql("SELECT id FROM checkpoints WHERE uuid = ?"), (token["checkpoint_uuid"],)
        )
        checkpoint_id = rows[0][0]
        initial = _initial_keys(b, run_id) if kind != "initial" else set()
        statement = b.sql(
            "INSERT INTO tensor_fingerprints (checkpoint_id, name, hash, dtype, shape, numel, "
            "sampled, produced, bf16_hash, bf16_via_fp16_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (checkpoint_id, name) DO NOTHING"
        )
        for fp in fingerprints:
            unchanged = fp.hash in initial or (fp.bf16_hash is not None and fp.bf16_hash in initial)
            b.execute(
                statement,
                (
                    checkpoint_id,
                    fp.name,
                    fp.hash,
                    fp.dtype,
                    b.json_param(_json.dumps(list(fp.shape))),
                    fp.numel,
                    fp.sampled,
                    kind != "initial" and not unchanged,
                    fp.bf16_hash,
                    fp.bf16_via_fp16_hash,
                ),
            )


def _initial_keys(b: Backend, run_id: int) -> set[str]:
    """Every exact hash and cast key of the run's 'initial' weights."""
    _, rows = b.fetchall(
        b.sql(
            "SELECT f.hash, f.bf16_hash, f.bf16_via_fp16_hash FROM tensor_fingerprints f "
            "JOIN checkpoints c ON c.id = f.checkpoint_id "
            "WHERE c.run_id = ? AND c.kind = 'initial'"
        ),
        (run_id,),
    )
    return {key for row in rows for key in row if key is not None}


@dataclass(frozen=True)
class _Producer:
    """The earliest checkpoint of another run that produced a tensor (by exact or cast key)."""

    checkpoint_id: int
    run_id: int
    run_uuid: str
    checkpoint_uuid: str
    dtype: str


@dataclass
class _Credit:
    run_uuid: str
    elements: int = 0
    tensors: int = 0
    cast_elements: int = 0
    casts: set[str] = field(default_factory=set)
    checkpoints: list[str] = field(default_factory=list)


#: the columns a tensor is looked up by: its exact hash, then the two cast keys of other runs'
#: tensors (a loaded tensor's `bf16_hash` equals one of them when it is a cast of that tensor)
_KEY_COLUMNS = ("hash", "bf16_hash", "bf16_via_fp16_hash")


def _producers(b: Backend, run_id: int, column: str, keys: set[str]) -> dict[str, _Producer]:
    """For each of `keys`, the earliest produced tensor of another run whose `column` equals it
    (lowest checkpoint id)."""
    assert column in _KEY_COLUMNS  # a fixed column name, never user text
    found: dict[str, _Producer] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[start : start + _IN_CHUNK]
        placeholders = ", ".join("?" for _ in chunk)  # only "?" marks: the values are bound
        _, rows = b.fetchall(
            b.sql(
                f"SELECT f.{column}, c.id, c.run_id, r.uuid, c.uuid, f.dtype "
                "FROM tensor_fingerprints f JOIN checkpoints c ON c.id = f.checkpoint_id "
                "JOIN runs r ON r.id = c.run_id "
                f"WHERE f.produced AND c.run_id <> ? AND f.{column} IN ({placeholders})"
            ),
            (run_id, *chunk),
        )
        for key, checkpoint_id, producer, run_uuid, checkpoint_uuid, dtype in rows:
            best = found.get(key)
            if best is None or checkpoint_id < best.checkpoint_id:
                found[key] = _Producer(
                    checkpoint_id, int(producer), str(run_uuid), str(checkpoint_uuid), str(dtype)
                )
    return found


def _cast_producers(
    b: Backend, run_id: int, fingerprints: Sequence[TensorFingerprint]
) -> dict[str, _Producer]:
    """By `bf16_hash`: the earliest producer among other runs' tensors of which it is a cast."""
    keys = {fp.bf16_hash for fp in fingerprints if fp.bf16_hash is not None}
    found: dict[str, _Producer] = {}
    for column in _KEY_COLUMNS[1:]:
        for key, producer in _producers(b, run_id, column, keys).items():
            best = found.get(key)
            if best is None or producer.checkpoint_id < best.checkpoint_id:
                found[key] = producer
    return found


def infer_links(
    b: Backend, run_id: int, fingerprints: Sequence[TensorFingerprint]
) -> list[InferredLink]:
    """Match `fingerprints` against the tensors other runs produced; return one link per parent.

    Each tensor is credited to the run whose checkpoint produced it first (the lowest checkpoint
    id), so a tensor passed on unchanged credits its producer, not the runs that merely carried
    it. A tensor is matched by its exact hash; one that matches nothing exactly is matched by
    its `bf16_hash` against other runs' cast keys (weights loaded in another floating dtype),
    and the link's evidence counts those elements and names the casts (``"float32->bfloat16"``).
    Reads only; the caller writes the links.
    """
    total_elements = sum(fp.numel for fp in fingerprints)
    if not total_elements:
        return []
    exact = _producers(b, run_id, "hash", {fp.hash for fp in fingerprints})
    cast = _cast_producers(b, run_id, [fp for fp in fingerprints if fp.hash not in exact])
    credits: dict[int, _Credit] = {}
    for fp in fingerprints:
        found = exact.get(fp.hash)
        by_cast = found is None and fp.bf16_hash is not None
        if by_cast:
            found = cast.get(str(fp.bf16_hash))
        if found is None:
            continue
        credit = credits.setdefault(found.run_id, _Credit(found.run_uuid))
        credit.elements += fp.numel
        credit.tensors += 1
        if by_cast:
            credit.cast_elements += fp.numel
            # the same dtype twice is a round trip: "float32->float32" went through bfloat16
            credit.casts.add(f"{found.dtype}->{fp.dtype}")
        if found.checkpoint_uuid not in credit.checkpoints:
            credit.checkpoints.append(found.checkpoint_uuid)
    links = [
        _link(producer, credit, total_elements, len(fingerprints))
        for producer, credit in credits.items()
    ]
    links.sort(key=lambda link: (-link.evidence["fraction"], link.run_id))
    return links


def _link(producer: int, credit: _Credit, total_elements: int, total_tensors: int) -> InferredLink:
    fraction = credit.elements / total_elements
    return InferredLink(
        "finetuned_from" if fraction >= FINETUNE_FRACTION else "initialized_from",
        producer,
        credit.run_uuid,
        {
            "method": "fingerprint",
            "fraction": round(fraction, 6),
            "elements_matched": credit.elements,
            "elements_total": total_elements,
            "tensors_matched": credit.tensors,
            "tensors_total": total_tensors,
            "elements_matched_by_cast": credit.cast_elements,
            "casts": sorted(credit.casts),
            "checkpoint_uuids": credit.checkpoints,
        },
    )


def token_evidence(token: Mapping[str, Any], path: Any = None) -> dict[str, Any]:
    """The evidence of a link made by `token` (a checkpoint token) to the run that wrote it."""
    return {
        "method": "token",
        "checkpoint_uuid": token["checkpoint_uuid"],
        "step": token["step"],
        "path": None if path is None else os.fspath(path),
    }


def with_token(
    b: Backend, links: list[InferredLink], token: Mapping[str, Any]
) -> list[InferredLink]:
    """`links`, with the link to the run of `token` (the checkpoint the weights were loaded
    from) made by token: its kind and fraction from the fingerprints when they credit that run;
    a ``finetuned_from`` link by token alone when the fingerprints credit no run (weights the
    registry cannot match: quantised, or registered without fingerprints). Unchanged when the
    fingerprints credit other runs only (the weights changed since that load), or when that
    run is not in this database."""
    run_uuid = str(token["run_uuid"])
    found = next((link for link in links if link.run_uuid == run_uuid), None)
    if found is None:
        if links:
            return links
        _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (run_uuid,))
        if not rows:
            return links
        found = InferredLink("finetuned_from", int(rows[0][0]), run_uuid)
    evidence = {**found.evidence, **token_evidence(token)}
    return [link for link in links if link is not found] + [
        dataclasses.replace(found, evidence=evidence)
    ]


def resumed_kind(links: list[InferredLink], resumed: bool) -> list[InferredLink]:
    """`links`, with ``finetuned_from`` read as ``resumed_from`` when optimizer and loop state
    were restored too (`resumed`)."""
    if not resumed:
        return links
    return [
        dataclasses.replace(link, kind="resumed_from") if link.kind == "finetuned_from" else link
        for link in links
    ]


def infer_and_link(
    b: Backend,
    run_id: int,
    fingerprints: Sequence[TensorFingerprint],
    *,
    resumed: bool,
    token: Mapping[str, Any] | None = None,
) -> list[InferredLink]:
    """`infer_links` (and `with_token` for the `token` the weights were loaded from), then
    write the links (for an inference deferred while the database was away: the writer, or
    `sync`, runs it once the run's weights and its parents are there)."""
    links = infer_links(b, run_id, fingerprints)
    if token is not None:
        links = with_token(b, links, token)
    links = resumed_kind(links, resumed)
    for link in links:
        b.execute(
            b.sql(
                "INSERT INTO run_links (from_run_id, kind, to_run_id, evidence) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (from_run_id, kind, to_run_id) DO UPDATE SET evidence = excluded.evidence"
            ),
            (run_id, link.kind, link.run_id, b.json_param(_json.dumps(link.evidence))),
        )
    return links


def loaded_from(b: Backend, checkpoint_uuid: str) -> dict[str, Any] | None:
    """The token of the checkpoint a run's initial weights (registered as `checkpoint_uuid`)
    were loaded from, when the run was given one (`link_from_weights(token=...)`)."""
    _, rows = b.fetchall(b.sql("SELECT token FROM checkpoints WHERE uuid = ?"), (checkpoint_uuid,))
    if not rows:
        return None
    stored = _json.decode(rows[0][0])
    return read_token(stored.get("loaded_from")) if isinstance(stored, Mapping) else None


def read_fingerprints(b: Backend, checkpoint_uuid: str) -> list[TensorFingerprint]:
    """The fingerprints registered with a checkpoint, by its UUID."""
    _, rows = b.fetchall(
        b.sql(
            "SELECT f.name, f.hash, f.dtype, f.shape, f.numel, f.sampled, f.bf16_hash, "
            "f.bf16_via_fp16_hash FROM tensor_fingerprints f "
            "JOIN checkpoints c ON c.id = f.checkpoint_id WHERE c.uuid = ? ORDER BY f.name"
        ),
        (checkpoint_uuid,),
    )
    return [
        TensorFingerprint(
            name, hash_, dtype, tuple(_json.decode(shape)), int(numel), bool(s), bf16, via
        )
        for name, hash_, dtype, shape, numel, s, bf16, via in rows
    ]
