"""`Tracker.export`: metric histories streamed to CSV, JSON Lines or Parquet, wide or long.

Rows are read from one consistent snapshot on a connection of the export's own, a chunk at a
time (a server-side cursor on PostgreSQL), and written as they come, so memory stays flat
however many values are exported. Parquet needs the ``parquet`` extra (pyarrow).

Example::

    tracker.export("metrics.parquet", experiment="mnist", keys=["val/acc"])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ._backends.stream import Snapshot, snapshot
from ._export_plan import FIXED, STEP_COLUMNS, Plan, plan_export, stream_queries, widen
from ._export_rows import Shaper
from ._export_text import Sink
from ._export_writers import FORMATS, format_of, open_sink, require_pyarrow
from .errors import ConfigurationError

__all__ = ["FORMATS", "LAYOUTS", "ExportMixin", "ExportResult", "Progress"]

LAYOUTS = ("wide", "long")
#: metric rows fetched per round trip (and held at once)
CHUNK_ROWS = 5000

#: called after each chunk with the metric rows (steps) read so far and their total
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the file's columns, its rows, the logged values in them, the
    runs selected and the metric rows (steps) read."""

    columns: list[str]
    rows: int
    values: int
    runs: int
    steps: int
    format: str
    layout: str


class ExportMixin:
    """`Tracker.export` (mixed into `Tracker`): needs only the URL the tracker opens."""

    _open_url: str

    def export(
        self,
        target: str | os.PathLike[str] | IO[Any],
        *,
        experiment: str | None = None,
        runs: Iterable[Any] | None = None,
        where: str | None = None,
        args: Sequence[Any] = (),
        keys: Iterable[str] | None = None,
        layout: str = "wide",
        format: str | None = None,
        params: bool = False,
        progress: Progress | None = None,
    ) -> ExportResult:
        """Write the metric histories of the selected runs to `target`, streamed.

        Example::

            tracker.export("mnist.csv", experiment="mnist")            # wide CSV
            tracker.export("long.parquet", runs=[3, 4], layout="long")

        Args:
            target: a path (written under a temporary name, renamed when complete; ``.gz``
                compresses CSV and JSON Lines) or an open file, text or binary (left open).
            experiment: only runs of this experiment.
            runs: only these runs: `Run` objects, ids, UUIDs or run names.
            where: an SQL condition on ``runs`` aliased ``r`` (and ``experiments`` as ``e``),
                trusted SQL, with ``?`` placeholders bound from `args`.
            keys: only these metric keys (default: every key the selected runs logged, in
                ``extra`` too). With keys, the wide layout leaves out steps without any of them.
            layout: ``wide``: a row per run and step, a column per key; ``long``: a row per
                logged value, ``(run, step, key, value)``.
            format: ``csv``, ``jsonl`` or ``parquet``; default: from the path's suffix
                (``.csv``, ``.jsonl``/``.ndjson``, ``.parquet``/``.pq``), CSV for a file.
            params: add the runs' params as ``params.<name>`` columns (nested names dotted).
            progress: called after each chunk with the steps read so far and their total.

        Every row starts with ``run_id, run_uuid, experiment, run_name`` (then params), then
        ``step, logged_at``. Long Parquet files hold each value in ``value`` (a float: ints
        and bools as numbers) or, for text and JSON, ``value_text``.

        Raises:
            NotFoundError: an unknown experiment, run or metric key (with close names).
            ConfigurationError: a bad layout, format, target or argument.
            MissingDependencyError: Parquet without pyarrow.
        """
        if layout not in LAYOUTS:
            raise ConfigurationError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        fmt = format_of(target, format)
        if fmt == "parquet":
            require_pyarrow()
        if progress is not None and not callable(progress):
            raise ConfigurationError(f"progress {progress!r} is not callable")
        long = layout == "long"
        with snapshot(self._open_url) as snap:
            plan = plan_export(
                snap,
                experiment=experiment,
                runs=runs,
                where=where,
                args=args,
                keys=keys,
                wide=not long,
                params=params,
                count=progress is not None,
            )
            header, families = _header(plan, fmt, long)
            head = len(FIXED) + len(plan.params)
            with open_sink(target, fmt, header, families, head=head) as sink:
                rows, values, steps = _stream(
                    snap, plan, sink, fmt, long, keys is not None, progress
                )
        return ExportResult(
            columns=header,
            rows=rows,
            values=values,
            runs=len(plan.runs),
            steps=steps,
            format=fmt,
            layout=layout,
        )


def _stream(
    snap: Snapshot,
    plan: Plan,
    sink: Sink,
    fmt: str,
    long: bool,
    chosen_keys: bool,
    progress: Progress | None,
) -> tuple[int, int, int]:
    """Read the plan's rows a chunk at a time into `sink`; (rows written, values, steps read)."""
    shape = Shaper(plan, snap.dialect, long=long, skip_empty=chosen_keys)
    rows = values = steps = 0
    for sql, bound in stream_queries(plan, snap, iso_times=fmt != "parquet"):
        for chunk in snap.chunks(sql, bound, CHUNK_ROWS):
            columns, count = shape(chunk)
            if long and fmt == "parquet":
                columns = [*columns, columns[-1]]  # value and value_text
            sink.write(columns)
            rows += len(columns[0])
            values += count
            steps += len(chunk)
            if progress is not None:
                progress(steps, plan.steps)
    return rows, values, steps


def _header(plan: Plan, fmt: str, long: bool) -> tuple[list[str], list[str]]:
    """The file's column names and the family of each (``time`` for ISO text, ``epoch_us``
    for Parquet's timestamps)."""
    names = [*FIXED, *(label for label, _ in plan.params), *STEP_COLUMNS]
    families = [
        "int",
        "text",
        "text",
        "text",
        *(family for _, family in plan.params),
        "int",
        "epoch_us" if fmt == "parquet" else "time",
    ]
    if not long:
        return [*names, *(k.label for k in plan.keys)], [*families, *(k.family for k in plan.keys)]
    if fmt == "parquet":
        return [*names, "key", "value", "value_text"], [*families, "text", "value", "value_text"]
    return [*names, "key", "value"], [*families, "text", widen(k.family for k in plan.keys)]
