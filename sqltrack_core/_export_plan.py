"""What an export reads: the runs it selects, the metric keys as file columns, the queries.

Everything here runs on one `Snapshot` before the first row is streamed, and only touches
small things (runs, ``metric_columns``, aggregates over ``metrics``), so the file's header
and, for Parquet, its schema are known up front. The SQL is built by pure functions.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _json
from ._columns import family_of, family_of_sql_type
from ._history import unique_labels
from ._rows import RunLike
from ._suggest import did_you_mean
from .errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from ._backends.stream import Snapshot

__all__ = ["FIXED", "Key", "Plan", "plan_export", "stream_queries"]

#: the columns every row starts with (params, if asked for, come after run_name)
FIXED = ("run_id", "run_uuid", "experiment", "run_name")
#: the columns after the run's (and params'): then metrics (wide) or key and value (long)
STEP_COLUMNS = ("step", "logged_at")
#: runs per streamed query when only some runs are exported
RUN_BATCH = 500


@dataclass(frozen=True)
class Key:
    """One logged key as the file shows it: its label, where its values are, what they are.

    `family` is what the file holds: the column's family, widened by the values found in
    ``extra`` (``int`` and ``float`` make ``float``); ``mixed`` when they disagree otherwise,
    ``other`` for a column of a type sqltrack does not know (written as text).
    """

    key: str
    label: str
    column: str | None  # the metrics column, None when the key only lives in extra
    stored: str | None  # the column's family as recorded (None: unknown type or no column)
    family: str
    in_extra: bool


@dataclass
class Plan:
    """The runs and keys of an export, and how many metric rows it reads (when counted)."""

    runs: dict[int, tuple[Any, ...]]  # run id -> (id, uuid, experiment, name, *param values)
    run_condition: tuple[str, list[Any]]  # SQL on ``m`` selecting the runs' metric rows
    all_runs: bool
    params: list[tuple[str, str]] = field(default_factory=list)  # (label, family)
    keys: list[Key] = field(default_factory=list)
    steps: int | None = None


def plan_export(
    snap: Snapshot,
    *,
    experiment: str | None,
    runs: Iterable[Any] | None,
    where: str | None,
    args: Sequence[Any],
    keys: Iterable[str] | None,
    wide: bool,
    params: bool,
    count: bool,
) -> Plan:
    """Select the runs, resolve the keys (by default those the runs logged), flatten params
    into columns if asked, count the metric rows if `count` (or to find the logged keys)."""
    plan = _select_runs(snap, experiment, runs, where, args, params)
    wanted = None if keys is None else _check_keys(keys)
    among, among_params = plan.run_condition
    columns = _metric_columns(snap)
    extra: dict[str, set[str]] = {}
    if plan.runs:
        for key, family, _ in snap.fetchall(snap.extra_types_sql(among), among_params):
            extra.setdefault(key, set()).add(family)
    for key in wanted or ():
        if key not in columns and key not in extra:
            raise NotFoundError(did_you_mean(key, [*columns, *extra], what="metric key"))
    logged: dict[str, int] = {}
    if not plan.runs:
        plan.steps = 0
    elif count or wanted is None:
        counted = [c for c, _ in columns.values()] if wanted is None else []
        plan.steps, *found = snap.fetchall(*_count_sql(snap, among, among_params, counted))[0]
        logged = {c: int(n) for c, n in zip(counted, found, strict=True)}
    if wanted is None:  # the keys these runs logged: columns in the order they were made
        present = [k for k, (c, _) in columns.items() if logged.get(c) or k in extra]
        wanted = present + sorted(k for k in extra if k not in columns)
    fixed = [*FIXED, *(label for label, _ in plan.params), *STEP_COLUMNS]
    labels = unique_labels(fixed, wanted) if wide else wanted
    plan.keys = [_key(k, label, columns, extra) for k, label in zip(wanted, labels, strict=True)]
    return plan


def _key(
    key: str,
    label: str,
    columns: dict[str, tuple[str, str | None]],
    extra: dict[str, set[str]],
) -> Key:
    column, family = columns.get(key, (None, "null"))  # family None: a type we do not know
    return Key(
        key=key,
        label=label,
        column=column,
        stored=None if family == "null" else family,
        family=widen({family or "other", *extra.get(key, ())}),
        in_extra=key in extra,
    )


def _check_keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        raise ConfigurationError(f"keys {keys!r} is a str; expected a list of metric keys")
    wanted = list(dict.fromkeys(keys))
    for key in wanted:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"metric key {key!r} is a {type(key).__name__}; expected a str"
            )
    return wanted


def widen(families: Iterable[str]) -> str:
    """The family of a file column holding values of `families` (``null`` counts for none):
    the one family, ``float`` for ints and floats, else ``mixed``; ``text`` if none."""
    found = set(families) - {"null"}
    if not found:
        return "text"
    if len(found) == 1:
        return found.pop()
    return "float" if found == {"int", "float"} else "mixed"


def _metric_columns(snap: Snapshot) -> dict[str, tuple[str, str | None]]:
    rows = snap.fetchall(
        "SELECT key, column_name, sql_type FROM metric_columns ORDER BY created_at, column_name"
    )
    return {key: (name, family_of_sql_type(sql_type)) for key, name, sql_type in rows}


def _count_sql(
    snap: Snapshot, among: str, params: list[Any], columns: list[str]
) -> tuple[str, list[Any]]:
    """One scan counting the selected metric rows and each column's values among them."""
    counts = "".join(f", count({snap.dialect.quote(c)})" for c in columns)
    return f"SELECT count(*){counts} FROM metrics m WHERE {among}", params


# -- runs ---------------------------------------------------------------------------------------


def _select_runs(
    snap: Snapshot,
    experiment: str | None,
    runs: Iterable[Any] | None,
    where: str | None,
    args: Sequence[Any],
    params: bool,
) -> Plan:
    conditions: list[str] = []
    values: list[Any] = []
    experiment_id = None
    if experiment is not None:
        experiment_id = _experiment_id(snap, experiment)
        conditions.append("r.experiment_id = ?")
        values.append(experiment_id)
    if runs is not None:
        refs = [runs] if isinstance(runs, (str, int, uuid_module.UUID, RunLike)) else list(runs)
        ids = sorted({_run_id(snap, ref, experiment, experiment_id) for ref in refs})
        conditions.append(f"r.id IN ({', '.join('?' for _ in ids)})" if ids else "1 = 0")
        values.extend(ids)
    if where is not None:
        if not isinstance(where, str) or not where.strip():
            raise ConfigurationError(f"where {where!r} must be a non-empty SQL condition")
        conditions.append(f"({where})")
        values.extend(args)
    elif args:
        raise ConfigurationError(f"args {args!r} were given without a where condition")
    sql = (
        "SELECT r.id, r.uuid, e.name, r.name, r.params FROM runs r "
        "JOIN experiments e ON e.id = r.experiment_id"
        + (" WHERE " + " AND ".join(conditions) if conditions else "")
        + " ORDER BY r.id"
    )
    rows = snap.fetchall(sql, values)
    everything = not conditions
    # the pre-pass aggregates select the same runs by the same conditions (one snapshot), so
    # no list of ids, however long, is bound
    condition = (
        # metric rows of runs that exist: a run deleted while another process still logged
        # to it can leave rows behind (metrics has no foreign key, for the writer's speed)
        ("m.run_id IN (SELECT id FROM runs)", [])
        if everything
        else (
            "m.run_id IN (SELECT r.id FROM runs r JOIN experiments e ON e.id = r.experiment_id"
            f" WHERE {' AND '.join(conditions)})",
            values,
        )
    )
    plan = Plan(runs={}, run_condition=condition, all_runs=everything)
    flat = [_flat_params(row[4]) for row in rows] if params else [{} for _ in rows]
    names = sorted({name for one in flat for name in one})
    labels = unique_labels(FIXED, [f"params.{name}" for name in names])
    plan.params = [
        (label, widen(family_of(one.get(name)) or "null" for one in flat))
        for label, name in zip(labels, names, strict=True)
    ]
    for row, one in zip(rows, flat, strict=True):
        head = (int(row[0]), str(row[1]), row[2], row[3])
        plan.runs[int(row[0])] = head + tuple(one.get(name) for name in names)
    return plan


def _flat_params(value: Any) -> dict[str, Any]:
    """A run's params as ``a.b`` names (nested dicts flattened, as `Tracker.runs` shows them)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, inner: Any) -> None:
        if isinstance(inner, dict) and inner:
            for key, item in inner.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif prefix:
            flat[prefix] = inner

    walk("", _json.decode(value) or {})
    return flat


def _experiment_id(snap: Snapshot, experiment: str) -> int:
    if not isinstance(experiment, str):
        raise ConfigurationError(
            f"experiment {experiment!r} is a {type(experiment).__name__}; expected its name"
        )
    found = snap.fetchall("SELECT id FROM experiments WHERE name = ?", [experiment])
    if not found:
        known = [name for (name,) in snap.fetchall("SELECT name FROM experiments")]
        raise NotFoundError(did_you_mean(experiment, known, what="experiment"))
    return int(found[0][0])


def _run_id(snap: Snapshot, ref: Any, experiment: str | None, experiment_id: int | None) -> int:
    """A run given as a `Run`, an id, a UUID or a run name (unique in the export's experiment,
    or in the database), checked to be in `experiment`."""
    column, value = _run_lookup(ref)
    rows = snap.fetchall(
        f"SELECT r.id, e.name, r.experiment_id FROM runs r "
        f"JOIN experiments e ON e.id = r.experiment_id WHERE r.{column} = ?"
        + (" AND r.experiment_id = ?" if column == "name" and experiment_id is not None else "")
        + " ORDER BY r.id",
        [value] + ([experiment_id] if column == "name" and experiment_id is not None else []),
    )
    if not rows:
        scope = "" if experiment_id is None else " WHERE experiment_id = ?"
        known = snap.fetchall(
            f"SELECT {column} FROM runs{scope}", [] if experiment_id is None else [experiment_id]
        )
        raise NotFoundError(
            did_you_mean(str(value), [str(k) for (k,) in known if k is not None], what="run")
        )
    if len(rows) > 1:
        ids = ", ".join(str(r[0]) for r in rows)
        raise ConfigurationError(
            f"run name {value!r} is shared by runs {ids}; give the run's id or UUID instead"
        )
    run_id, run_experiment, run_experiment_id = rows[0]
    if experiment_id is not None and run_experiment_id != experiment_id:
        raise NotFoundError(
            f"run {ref!r} is in experiment {run_experiment!r}, not {experiment!r}; "
            "leave out the experiment or pick a run of it"
        )
    return int(run_id)


def _run_lookup(ref: Any) -> tuple[str, Any]:
    """(runs column, value) that finds the run `ref` names."""
    if isinstance(ref, RunLike):
        return ("id", ref.id) if ref.id is not None else ("uuid", str(ref.uuid))
    if isinstance(ref, uuid_module.UUID):
        return "uuid", str(ref)
    if isinstance(ref, int) and not isinstance(ref, bool):
        return "id", ref
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigurationError(
            f"run {ref!r} is a {type(ref).__name__}; expected a Run, an id, a UUID or a run name"
        )
    text = ref.strip()
    if text.isdigit():
        return "id", int(text)
    try:
        return "uuid", str(uuid_module.UUID(text))
    except ValueError:
        return "name", text


# -- the streamed queries ------------------------------------------------------------------------


def stream_queries(
    plan: Plan, snap: Snapshot, *, iso_times: bool
) -> Iterator[tuple[str, list[Any]]]:
    """The queries that read the plan's metric rows, in (run, step) order: one for every run,
    or one per `RUN_BATCH` runs. Each row is ``(run_id, step, logged_at, <key columns>,
    extra)``, logged_at as ISO-8601 text (`iso_times`) or integer microseconds."""
    time_sql = snap.iso_time_sql("m.logged_at") if iso_times else snap.epoch_us_sql("m.logged_at")
    selected = [snap.dialect.quote(k.column) for k in plan.keys if k.column is not None]
    select = ", ".join(["m.run_id", "m.step", time_sql, *selected, "m.extra"])
    if plan.all_runs:
        yield (
            f"SELECT {select} FROM metrics m WHERE m.run_id IN (SELECT id FROM runs) "
            "ORDER BY m.run_id, m.step",
            [],
        )
        return
    ids = sorted(plan.runs)
    for start in range(0, len(ids), RUN_BATCH):
        batch = ids[start : start + RUN_BATCH]
        marks = ", ".join("?" for _ in batch)
        yield (
            f"SELECT {select} FROM metrics m WHERE m.run_id IN ({marks}) ORDER BY m.run_id, m.step",
            batch,
        )
