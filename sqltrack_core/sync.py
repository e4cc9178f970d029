"""Copy runs between tracking databases by UUID: spools to their database, a laptop's file to the team's.

A run is matched by its client-made UUID, so copying it again (or a copy cut short and started
over) merges instead of duplicating: its row is updated, its steps merge (later value wins),
checkpoints and links are added once. Params, env, tags, comment, status and times, every
metric (typed columns and ``extra``), checkpoints with their fingerprints, and links whose two
runs are both in the target, come along.

Example::

    from sqltrack_core import connect, sync
    laptop, team = connect("sqlite:///laptop.db"), connect("postgresql://db.lab/experiments")
    sync.copy_runs(laptop.backend, team.backend, team.registry)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _json, _spool, provenance
from ._columns import family_of_sql_type
from ._store import ColumnRegistry, write_steps
from .errors import DatabaseError, NotFoundError

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["CHUNK_STEPS", "SyncResult", "copy_runs", "run_uuids"]

#: Steps read and written per batch while copying a run.
CHUNK_STEPS = 5000
_RUN_FIELDS = (
    "r.uuid, e.name, r.name, r.status, r.created_at, r.started_at, r.ended_at, r.heartbeat_at, "
    "r.params, r.env, r.tags, r.comment, r.owner"
)
_TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class SyncResult:
    """What a copy did (or, with ``dry_run``, would do)."""

    runs: list[str] = field(default_factory=list)  # UUIDs copied
    new_runs: int = 0  # runs the target did not have
    rows: int = 0  # steps written
    checkpoints: int = 0  # checkpoints the target did not have
    links: int = 0
    skipped_links: int = 0  # links whose other run is not in the target
    #: (from uuid, kind, to uuid, evidence) of links whose other run is still in the source
    #: spool, not sent yet: the spool keeps them, by UUID, for when it is
    kept_links: list[tuple[str, str, str, Any]] = field(default_factory=list)

    def add(self, other: SyncResult) -> None:
        self.runs += other.runs
        self.new_runs += other.new_runs
        self.rows += other.rows
        self.checkpoints += other.checkpoints
        self.links += other.links
        self.skipped_links += other.skipped_links
        self.kept_links += other.kept_links


def run_uuids(src: Backend) -> list[str]:
    """Every run's UUID in `src`, oldest first."""
    _, rows = src.fetchall("SELECT uuid FROM runs ORDER BY id")
    return [str(row[0]) for row in rows]


def copy_runs(
    src: Backend,
    dst: Backend,
    registry: ColumnRegistry,
    uuids: Iterable[str] | None = None,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    held_wait: float = 60.0,
) -> SyncResult:
    """Copy the runs `uuids` (default: all) from `src` into `dst`; see the module docstring.

    `registry` is `dst`'s column registry; `progress` is called with each number of steps
    written (or counted, with `dry_run`); a new metric column that waits for a lock another
    session holds is waited for at most `held_wait` seconds.

    Raises:
        NotFoundError: a UUID that `src` does not hold.
        DatabaseError: either database failed (what was copied stays; copying again merges).
    """
    wanted = run_uuids(src) if uuids is None else [str(u) for u in uuids]
    result = SyncResult()
    for run_uuid in wanted:
        result.add(_copy_run(src, dst, registry, run_uuid, dry_run, progress, held_wait))
    result.add(_copy_links(src, dst, wanted, dry_run))
    if _spool.is_spool(src) and not dry_run:
        result.links += _deferred_inferences(src, dst, wanted)
        _deferred_removals(src, dst, wanted)
    return result


def _lookup(b: Backend, run_uuid: str) -> int | None:
    _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (run_uuid,))
    return int(rows[0][0]) if rows else None


def _copy_run(
    src: Backend,
    dst: Backend,
    registry: ColumnRegistry,
    run_uuid: str,
    dry_run: bool,
    progress: Callable[[int], None] | None,
    held_wait: float,
) -> SyncResult:
    _, rows = src.fetchall(
        src.sql(
            f"SELECT r.id, {_RUN_FIELDS} FROM runs r "
            "JOIN experiments e ON e.id = r.experiment_id WHERE r.uuid = ?"
        ),
        (run_uuid,),
    )
    if not rows:
        raise NotFoundError(f"no run with uuid {run_uuid!r} in {src.url!r}")
    src_id, *fields = rows[0]
    result = SyncResult(runs=[run_uuid])
    dst_id = _lookup(dst, run_uuid)
    if dry_run:
        result.new_runs = int(dst_id is None)
        _, counted = src.fetchall(
            src.sql("SELECT count(*) FROM metrics WHERE run_id = ?"), (src_id,)
        )
        result.rows = int(counted[0][0])
        _, counted = src.fetchall(
            src.sql("SELECT count(*) FROM checkpoints WHERE run_id = ?"), (src_id,)
        )
        result.checkpoints = int(counted[0][0])
        if progress is not None:
            progress(result.rows)
        return result
    result.new_runs = int(dst_id is None)
    dst_id = _upsert_run(src, dst, fields)
    result.rows = _copy_metrics(src, dst, registry, src_id, dst_id, run_uuid, progress, held_wait)
    result.checkpoints = _copy_checkpoints(src, dst, src_id, dst_id)
    return result


def _upsert_run(src: Backend, dst: Backend, fields: list[Any]) -> int:
    """Create the run in `dst`, or bring its row up to date; return its id there."""
    (
        run_uuid,
        experiment,
        name,
        status,
        created_at,
        started_at,
        ended_at,
        heartbeat_at,
        params,
        env,
        tags,
        comment,
        owner,
    ) = fields

    def stamp(value: Any) -> Any:
        return None if value is None else dst.timestamp(src.unix_time(value))

    def as_json(value: Any, default: Any) -> Any:
        decoded = _json.decode(value) if value is not None else default
        return dst.json_param(_json.dumps(decoded))

    with dst.transaction():
        dst.execute(
            dst.sql("INSERT INTO experiments (name) VALUES (?) ON CONFLICT (name) DO NOTHING"),
            (experiment,),
        )
        _, rows = dst.fetchall(
            dst.sql(
                "SELECT r.id, r.status, r.name, r.params, r.tags, r.comment FROM runs r "
                "WHERE r.uuid = ?"
            ),
            (str(run_uuid),),
        )
        if not rows:
            _, exp = dst.fetchall(
                dst.sql("SELECT id FROM experiments WHERE name = ?"), (experiment,)
            )
            dst.execute(
                dst.sql(
                    "INSERT INTO runs (uuid, experiment_id, name, status, created_at, started_at, "
                    "ended_at, heartbeat_at, params, env, tags, comment, owner) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    str(run_uuid),
                    exp[0][0],
                    name,
                    status,
                    stamp(created_at) or dst.timestamp(time.time()),
                    stamp(started_at),
                    stamp(ended_at),
                    stamp(heartbeat_at),
                    as_json(params, {}),
                    as_json(env, {}),
                    as_json(tags, []),
                    comment,
                    owner,
                ),
            )
        elif not (rows[0][1] in _TERMINAL and status == "running"):
            # The source knows more (a spool holds the run's latest state); a run that ended
            # in the target is never made running again by an older copy. Params only ever
            # merge, so they merge here too (a run continued offline knows only its new ones);
            # empty tags, a missing name or comment keep the target's.
            _, _, old_name, old_params, old_tags, old_comment = rows[0]
            merged = _json.decode(old_params) or {}
            _json.deep_merge(merged, _json.decode(params) or {})
            params = _json.dumps(merged)
            if not (_json.decode(tags) if tags is not None else []):
                tags = old_tags
            name = old_name if name is None else name
            comment = old_comment if comment is None else comment
            dst.execute(
                dst.sql(
                    "UPDATE runs SET name = ?, status = ?, ended_at = ?, heartbeat_at = ?, "
                    "params = ?, tags = ?, comment = ? WHERE uuid = ?"
                ),
                (
                    name,
                    status,
                    stamp(ended_at),
                    stamp(heartbeat_at),
                    as_json(params, {}),
                    as_json(tags, []),
                    comment,
                    str(run_uuid),
                ),
            )
        run_id = _lookup(dst, str(run_uuid))
    assert run_id is not None
    return run_id


def _copy_metrics(
    src: Backend,
    dst: Backend,
    registry: ColumnRegistry,
    src_id: int,
    dst_id: int,
    run_uuid: str,
    progress: Callable[[int], None] | None,
    held_wait: float,
) -> int:
    """Copy the run's steps in chunks, in step order; return how many."""
    _, columns = src.fetchall("SELECT key, column_name, sql_type FROM metric_columns")
    keys = [str(key) for key, _, _ in columns]
    families = [family_of_sql_type(sql_type) for _, _, sql_type in columns]
    select = ", ".join(["step", "logged_at", "extra", *(src.quote(c) for _, c, _ in columns)])
    first = f"SELECT {select} FROM metrics WHERE run_id = ? ORDER BY step LIMIT ?"
    later = f"SELECT {select} FROM metrics WHERE run_id = ? AND step > ? ORDER BY step LIMIT ?"
    label = f"sync {run_uuid}"
    after: int | None = None
    total = 0
    while True:
        if after is None:
            _, rows = src.fetchall(src.sql(first), (src_id, CHUNK_STEPS))
        else:
            _, rows = src.fetchall(src.sql(later), (src_id, after, CHUNK_STEPS))
        if not rows:
            return total
        steps: dict[int, list[Any]] = {}
        for step, logged_at, extra, *values in rows:
            merged: dict[str, Any] = {}
            if extra is not None:
                merged.update(src.dialect.decode(extra, "extra") or {})
            for key, family, value in zip(keys, families, values, strict=True):
                if value is not None:
                    merged[key] = src.dialect.decode(value, family)
            steps[int(step)] = [src.unix_time(logged_at), merged]
        held = write_steps(dst, registry, dst_id, steps, label=label)
        deadline = time.monotonic() + held_wait
        while held:  # a new column waits for a lock another session holds
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"could not add metric columns for {sorted({k for _, v in held.values() for k in v})!r:.120} "
                    f"in {dst.url!r} within {held_wait:.0f} s: another session holds a lock "
                    "on the metrics table; run the copy again later (it resumes by merging)"
                )
            time.sleep(1.0)
            held = write_steps(dst, registry, dst_id, held, label=label)
        total += len(rows)
        after = int(rows[-1][0])
        if progress is not None:
            progress(len(rows))


def _copy_checkpoints(src: Backend, dst: Backend, src_id: int, dst_id: int) -> int:
    _, rows = src.fetchall(
        src.sql(
            "SELECT uuid, path, kind, token, removed_at FROM checkpoints WHERE run_id = ? "
            "ORDER BY id"
        ),
        (src_id,),
    )
    copied = 0
    for checkpoint_uuid, path, kind, token, removed_at in rows:
        _, have = dst.fetchall(
            dst.sql("SELECT 1 FROM checkpoints WHERE uuid = ?"), (str(checkpoint_uuid),)
        )
        if have:
            _copy_removed(src, dst, str(checkpoint_uuid), removed_at)
            continue
        fingerprints = provenance.read_fingerprints(src, str(checkpoint_uuid))
        # `produced` is decided again in the target, against the run's initial weights there.
        provenance.write_checkpoint(
            dst,
            run_id=dst_id,
            token=dict(_json.decode(token)),
            path=path,
            kind=kind,
            fingerprints=fingerprints,
        )
        _copy_removed(src, dst, str(checkpoint_uuid), removed_at)
        copied += 1
    return copied


def _copy_removed(src: Backend, dst: Backend, checkpoint_uuid: str, removed_at: Any) -> None:
    """Mark the checkpoint removed in `dst` too if its file went away after a sync."""
    if removed_at is not None:
        dst.execute(
            dst.sql("UPDATE checkpoints SET removed_at = ? WHERE uuid = ? AND removed_at IS NULL"),
            (dst.timestamp(src.unix_time(removed_at)), checkpoint_uuid),
        )


def _copy_links(src: Backend, dst: Backend, uuids: list[str], dry_run: bool) -> SyncResult:
    """Copy the links of the copied runs whose other run is in `dst` too."""
    result = SyncResult()
    wanted = set(uuids)
    _, rows = src.fetchall(
        "SELECT f.uuid, l.kind, t.uuid, l.evidence FROM run_links l "
        "JOIN runs f ON f.id = l.from_run_id JOIN runs t ON t.id = l.to_run_id"
    )
    links = [tuple(row) for row in rows]
    unsent: set[str] = set()  # runs the source spool still holds after this copy
    if _spool.is_spool(src):
        _, rows = src.fetchall("SELECT from_run_uuid, kind, to_run_uuid, evidence FROM spool_links")
        links += [tuple(row) for row in rows]
        unsent = set(run_uuids(src)) - wanted
    for from_uuid, kind, to_uuid, evidence in links:
        if str(from_uuid) not in wanted and str(to_uuid) not in wanted:
            continue
        from_id, to_id = _lookup(dst, str(from_uuid)), _lookup(dst, str(to_uuid))
        # with dry_run, a run about to be copied counts as there
        ends = ((from_id, str(from_uuid)), (to_id, str(to_uuid)))
        missing = [u for id_, u in ends if id_ is None and not (dry_run and u in wanted)]
        if missing:
            if all(u in unsent for u in missing):  # it comes later, from the same spool
                result.kept_links.append((str(from_uuid), kind, str(to_uuid), evidence))
            else:
                result.skipped_links += 1
            continue
        result.links += 1
        if dry_run or from_id is None or to_id is None:
            continue
        text = _json.dumps(_json.decode(evidence) if evidence is not None else {})
        dst.execute(
            dst.sql(
                "INSERT INTO run_links (from_run_id, kind, to_run_id, evidence) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (from_run_id, kind, to_run_id) DO UPDATE SET evidence = excluded.evidence"
            ),
            (from_id, kind, to_id, dst.json_param(text)),
        )
    return result


def _deferred_removals(src: Backend, dst: Backend, uuids: list[str]) -> None:
    """Mark in `dst` the checkpoint files deleted while the database was away (their rows may
    have been registered before the outage, so the spool has none), then forget them."""
    wanted = set(uuids)
    _, rows = src.fetchall("SELECT run_uuid, path, removed_at FROM spool_removals")
    for run_uuid, path, removed_at in rows:
        if run_uuid not in wanted:
            continue
        run_id = _lookup(dst, str(run_uuid))
        if run_id is not None:
            dst.execute(
                dst.sql(
                    "UPDATE checkpoints SET removed_at = ? "
                    "WHERE run_id = ? AND path = ? AND removed_at IS NULL"
                ),
                (dst.timestamp(float(removed_at)), run_id, path),
            )
        src.execute("DELETE FROM spool_removals WHERE run_uuid = ? AND path = ?", (run_uuid, path))


def _deferred_inferences(src: Backend, dst: Backend, uuids: list[str]) -> int:
    """Find the parents of runs that started from weights while their database was away (the
    spool kept which initial checkpoint to match); return how many links that made.

    Only once the spool holds no other run: a parent may still be in it, and its checkpoints
    must be in `dst` first. An inference that ran is removed from the spool.
    """
    if set(run_uuids(src)) - set(uuids):
        return 0
    made = 0
    _, rows = src.fetchall("SELECT run_uuid, checkpoint_uuid, resumed FROM spool_inferences")
    for run_uuid, checkpoint_uuid, resumed in rows:
        run_id = _lookup(dst, str(run_uuid))
        if run_id is not None:
            fingerprints = provenance.read_fingerprints(dst, str(checkpoint_uuid))
            links = provenance.infer_and_link(
                dst,
                run_id,
                fingerprints,
                resumed=bool(resumed),
                token=provenance.loaded_from(dst, str(checkpoint_uuid)),
            )
            made += len(links)
        src.execute(
            "DELETE FROM spool_inferences WHERE run_uuid = ? AND checkpoint_uuid = ?",
            (run_uuid, checkpoint_uuid),
        )
    return made
