"""The rows of ``runs``: creating one, and finding a run by `Run`, id or UUID."""

from __future__ import annotations

import re
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import _json
from ._backends.base import mask_password
from .errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    NotFoundError,
    SQLTrackError,
)

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = ["RunLike", "insert_run", "reopen_run", "run_id", "run_ids", "run_uuid"]


@runtime_checkable
class RunLike(Protocol):
    """A run as the readers take it (a `Run`): its UUID, and its id once it has one."""

    uuid: uuid_module.UUID

    @property
    def id(self) -> int | None: ...


def insert_run(
    b: Backend,
    *,
    uuid: uuid_module.UUID,
    experiment: str,
    name: str | None,
    params: Mapping[str, Any],
    env: Mapping[str, Any],
    tags: list[str],
    comment: str | None,
    started_at: float,
    status: str = "running",
    ended_at: float | None = None,
    new: bool = False,
    reopen: bool = False,
) -> int:
    """Create a run in `b` (this database, or a spool); return its id there.

    A run with this UUID already there is kept as it is (and its id returned; with `reopen`
    it is made running again), unless `new` asks for a new run: then that is an error.
    """
    now = b.timestamp(time.time())
    owner, owner_params = b.dialect.owner_sql(env.get("user"))
    with b.transaction():
        _, taken = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (str(uuid),))
        if taken:
            if reopen and status == "running":
                b.execute(
                    b.sql(
                        "UPDATE runs SET status = 'running', ended_at = NULL, "
                        "heartbeat_at = ? WHERE id = ?"
                    ),
                    (now, taken[0][0]),
                )
            if not new:
                return int(taken[0][0])
            raise ConfigurationError(
                f"run {taken[0][0]} already has uuid {uuid}; continue it with "
                "tracker.continue_run() or leave uuid out for a new run"
            )
        b.execute(
            b.sql("INSERT INTO experiments (name) VALUES (?) ON CONFLICT (name) DO NOTHING"),
            (experiment,),
        )
        _, rows = b.fetchall(b.sql("SELECT id FROM experiments WHERE name = ?"), (experiment,))
        experiment_id = rows[0][0]
        b.execute(
            b.sql(
                "INSERT INTO runs (uuid, experiment_id, name, status, started_at, ended_at, "
                "heartbeat_at, params, env, tags, comment, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, " + owner + ")"
            ),
            (
                str(uuid),
                experiment_id,
                name,
                status,
                b.timestamp(started_at),
                None if ended_at is None else b.timestamp(ended_at),
                now,
                b.json_param(_json.dumps(params)),
                b.json_param(_json.dumps(env)),
                b.json_param(_json.dumps(tags)),
                comment,
                *owner_params,
            ),
        )
        _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (str(uuid),))
    return int(rows[0][0])


def run_id(backend: Callable[[], Backend], ref: object, url: str) -> int:
    """Resolve a run given as a `Run`, an integer id, or a UUID (object or text) in the
    database at `url` (named in errors); `backend()` is asked for only if needed.

    Raises:
        NotFoundError: no such run, with the runs it may have meant (the ids around an
            unknown id, the runs whose UUID starts with a UUID prefix).
        ConfigurationError: `ref` is neither an id nor a UUID (naming the runs called so).
    """
    if isinstance(ref, RunLike):
        if ref.id is None:
            raise DatabaseUnavailableError(
                f"run {ref.uuid} has not reached its database yet; it has no id so far"
            )
        return ref.id
    if isinstance(ref, int) and not isinstance(ref, bool):
        b = backend()
        _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE id = ?"), (ref,))
        if not rows:
            raise NotFoundError(_no_id(b, ref, None, url))
        return int(rows[0][0])
    if not isinstance(ref, (str, uuid_module.UUID)):
        raise ConfigurationError(
            f"run {ref!r} is a {type(ref).__name__}; expected a Run, an int id or a UUID"
        )
    text = str(ref).strip()
    if text.isdigit():
        b = backend()
        _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE id = ?"), (int(text),))
        if not rows:
            raise NotFoundError(_no_id(b, int(text), text, url))
        return int(rows[0][0])
    try:
        parsed = str(uuid_module.UUID(text))
    except ValueError:
        raise _not_a_reference(backend, ref, text, url) from None
    b = backend()
    _, rows = b.fetchall(b.sql("SELECT id FROM runs WHERE uuid = ?"), (parsed,))
    if not rows:
        raise NotFoundError(
            f"no run with UUID {parsed!r} in {mask_password(url)}" + _prefix_hint(b, parsed[:8])
        )
    return int(rows[0][0])


def run_uuid(backend: Callable[[], Backend], ref: object, url: str) -> str:
    """The UUID of a run given as a `Run`, a UUID or an integer id (only an id needs the
    database)."""
    if isinstance(ref, RunLike):
        return str(ref.uuid)
    if isinstance(ref, uuid_module.UUID):
        return str(ref)
    if isinstance(ref, str) and not ref.strip().isdigit():
        try:
            return str(uuid_module.UUID(ref.strip()))
        except ValueError:
            raise _not_a_reference(backend, ref, ref.strip(), url) from None
    b = backend()
    _, rows = b.fetchall(b.sql("SELECT uuid FROM runs WHERE id = ?"), (run_id(backend, ref, url),))
    return str(rows[0][0])


# -- what an unknown run may have meant (the error paths only) ---------------------------------

#: text that may be the start of a UUID: hex digits and dashes, at least 4 digits
_UUID_PREFIX = re.compile(r"(?=(?:-*[0-9a-fA-F]){4})[0-9a-fA-F-]{4,36}")
_SHOWN = 3  # runs named in a hint


def _no_id(b: Backend, number: int, text: str | None, url: str) -> str:
    """An unknown id: the ids on either side of it (and, for typed digits, runs whose UUID
    starts with them)."""
    shown = text if text is not None else number
    message = f"no run {shown!r} in {mask_password(url)}"
    if text is not None and len(text) >= 4:
        hint = _prefix_hint(b, text)
        if hint:
            return message + hint
    _, rows = b.fetchall(
        b.sql(
            "SELECT (SELECT MAX(id) FROM runs WHERE id < ?), (SELECT MIN(id) FROM runs WHERE id > ?)"
        ),
        (number, number),
    )
    near = [int(i) for i in rows[0] if i is not None]
    if not near:
        return message + "; it has no runs"
    return message + f"; did you mean run {' or '.join(map(str, near))}?"


def _prefix_hint(b: Backend, prefix: str) -> str:
    """ "; did you mean ..." naming the runs whose UUID starts with `prefix`, or ""."""
    _, rows = b.fetchall(
        b.sql("SELECT id, uuid FROM runs WHERE CAST(uuid AS TEXT) LIKE ? ORDER BY id LIMIT ?"),
        (prefix.lower() + "%", _SHOWN + 1),
    )
    if not rows:
        return ""
    named = [f"{str(u)!r} (run {i})" for i, u in rows[:_SHOWN]]
    more = ", or another" if len(rows) > _SHOWN else ""
    return f"; did you mean {' or '.join(named)}{more}?"


def _not_a_reference(
    backend: Callable[[], Backend], ref: object, text: str, url: str
) -> SQLTrackError:
    """The error for text that is neither an id nor a UUID: NotFoundError naming the runs
    whose UUID starts with it (a UUID prefix), else ConfigurationError naming the runs called
    so. Without the database, the plain ConfigurationError."""
    plain = f"run {ref!r} is neither an integer id nor a UUID"
    try:
        b = backend()
        if _UUID_PREFIX.fullmatch(text):
            hint = _prefix_hint(b, text)
            if hint:
                return NotFoundError(f"no run {text!r} in {mask_password(url)}" + hint)
            return NotFoundError(
                f"no run {text!r} in {mask_password(url)}: it is not an integer id, not a "
                "full UUID, and no run's UUID starts with it"
            )
        _, rows = b.fetchall(
            b.sql("SELECT id FROM runs WHERE name = ? ORDER BY id LIMIT ?"), (text, _SHOWN + 1)
        )
    except SQLTrackError:
        return ConfigurationError(plain)
    ids = [str(row[0]) for row in rows[:_SHOWN]] + (["..."] if len(rows) > _SHOWN else [])
    if not ids:
        return ConfigurationError(plain)
    if len(ids) == 1:
        return ConfigurationError(f"{plain}; run {ids[0]} is named {text!r}: give its id")
    return ConfigurationError(f"{plain}; runs {', '.join(ids)} are named {text!r}: give an id")


def run_ids(runs: object) -> list[int]:
    """The run ids `metrics` takes: one or several ints or Runs."""
    single = isinstance(runs, (int, str, RunLike)) or not isinstance(runs, Iterable)
    items: Iterable[Any] = [runs] if single else runs  # type: ignore[assignment]
    ids = []
    for item in items:
        ident = item.id if isinstance(item, RunLike) else item
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise ConfigurationError(
                f"run id {item!r} is a {type(item).__name__}; expected an int or a Run"
            )
        ids.append(ident)
    return ids


def reopen_run(b: Backend, run_id: int) -> tuple[Any, ...]:
    """Make run `run_id` running again; return its (uuid, experiment, name, params, tags,
    comment, last step) as stored."""
    now = b.timestamp(time.time())
    with b.transaction():
        _, rows = b.fetchall(
            b.sql(
                "SELECT r.uuid, e.name, r.name, r.params, r.tags, r.comment, "
                "(SELECT MAX(step) FROM metrics WHERE run_id = r.id) FROM runs r "
                "JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?"
            ),
            (run_id,),
        )
        b.execute(
            b.sql(
                "UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ? WHERE id = ?"
            ),
            (now, run_id),
        )
    return tuple(rows[0])
