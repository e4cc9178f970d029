"""The files an export writes, and where: CSV and JSON Lines (`_export_text`), Parquet.

A path is written under a temporary name next to it and renamed once complete (``.gz``
compresses CSV and JSON Lines); a file object is written as it is and left open. Parquet is
typed: a UTC timestamp, booleans, NaN and ±inf kept as floats apart from missing values
(null); JSON and mixed values as JSON text. Row groups are written as they fill, so memory
holds one row group's columns (as Arrow arrays) at most.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import uuid as uuid_module
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._export_text import Columns, Sink, TextSink, json_text
from .errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FORMATS", "SUFFIXES", "Sink", "format_of", "open_sink"]

FORMATS = ("csv", "jsonl", "parquet")
SUFFIXES = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: rows per Parquet row group (fewer when a row has many columns: about this many values)
ROW_GROUP_ROWS = 65_536
ROW_GROUP_VALUES = 1_000_000
MISSING_PYARROW = "Parquet export needs pyarrow, which is not installed; run: pip install 'sqltrack-core[parquet]'"


def format_of(target: Any, fmt: str | None) -> str:
    """The format to write: `fmt` if given, else the one the target's file suffix names
    (``.gz`` aside); CSV for a file object."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigurationError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    if not isinstance(target, (str, os.PathLike)):
        return "csv"
    path = Path(target)
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    found = SUFFIXES.get(suffixes[0].lower()) if suffixes else None
    if found is None:
        raise ConfigurationError(
            f"cannot tell the format of {str(target)!r} from its suffix (known: "
            f"{', '.join(SUFFIXES)}, each optionally + .gz); pass one of {', '.join(FORMATS)}"
        )
    return found


class _ParquetSink(Sink):
    def __init__(self, stream: IO[bytes], header: Sequence[str], families: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        fields = [
            pa.field(name, _arrow_type(pa, f)) for name, f in zip(header, families, strict=True)
        ]
        self._schema = pa.schema(fields)
        self._families = list(families)
        self._writer = pq.ParquetWriter(stream, self._schema, compression="zstd")
        self._group = max(1024, min(ROW_GROUP_ROWS, ROW_GROUP_VALUES // max(1, len(header))))
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def write(self, columns: Columns) -> None:
        pa = self._pa
        arrays = [
            _arrow_array(pa, column, family, field.type)
            for column, family, field in zip(columns, self._families, self._schema, strict=True)
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= self._group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = self._pa.Table.from_batches(self._pending, schema=self._schema)
            self._writer.write_table(table, row_group_size=self._group)
            self._pending, self._rows = [], 0

    def finish(self) -> None:
        self._flush()
        self._writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


def _arrow_type(pa: Any, family: str) -> pa.DataType:
    """The Parquet column type of a file column of `family` (JSON, mixed and unknown: text)."""
    if family == "epoch_us":
        return pa.timestamp("us", tz="UTC")
    types = {"float": pa.float64(), "value": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
    return types.get(family, pa.string())


def _arrow_array(pa: Any, values: Sequence[Any], family: str, kind: pa.DataType) -> pa.Array:
    if family == "epoch_us":  # integer microseconds (no cast: it would load Arrow's compute
        return pa.array(values, type=kind)  # functions, ~50 MB of memory)
    if family == "value":  # the long layout's number (bools as 1.0 / 0.0)
        return pa.array(
            [float(v) if type(v) in (float, int, bool) else None for v in values],
            type=kind,
        )
    if family == "value_text":  # the long layout's other values
        return pa.array(
            [None if v is None or type(v) in (float, int, bool) else _text(v) for v in values],
            type=kind,
        )
    if family in ("json", "mixed"):
        values = [None if v is None else json_text(v) for v in values]
    elif family not in ("float", "int", "bool", "text"):
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=kind)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json_text(value)


# -- targets ------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_sink(
    target: Any, fmt: str, header: Sequence[str], families: Sequence[str], *, head: int
) -> Iterator[Sink]:
    """A sink writing `fmt` to `target`: a path (written to a temporary file next to it and
    renamed when complete, gzip-compressed for a ``.gz`` suffix) or an open file object
    (text or binary; left open). The first `head` columns are the run's."""
    binary = fmt == "parquet"
    with _stream(target, binary=binary) as stream:
        sink: Sink
        if fmt == "parquet":
            sink = _ParquetSink(stream, header, families)
        else:
            sink = TextSink(stream, header, families, head=head, jsonl=fmt == "jsonl")
        try:
            yield sink
        except BaseException:
            sink.abort()
            raise
        sink.finish()


def require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(MISSING_PYARROW) from exc


@contextlib.contextmanager
def _stream(target: Any, *, binary: bool) -> Iterator[Any]:
    if isinstance(target, (str, os.PathLike)):
        with _file(Path(target), binary=binary) as stream:
            yield stream
        return
    if not callable(getattr(target, "write", None)):
        raise ConfigurationError(
            f"export target {target!r:.80} is a {type(target).__name__}; expected a path or a "
            "file object opened for writing"
        )
    if isinstance(target, io.TextIOBase):
        if not binary:
            yield target
            target.flush()
            return
        buffer = getattr(target, "buffer", None)
        if buffer is None:
            raise ConfigurationError(
                f"Parquet is binary and {target!r:.80} is a text file; open it with 'wb'"
            )
        target.flush()
        yield buffer
        buffer.flush()
        return
    if binary:
        yield target
        return
    text = io.TextIOWrapper(target, encoding="utf-8", newline="", write_through=True)
    try:
        yield text
        text.flush()
    finally:
        text.detach()  # the caller's file stays open


@contextlib.contextmanager
def _file(path: Path, *, binary: bool) -> Iterator[Any]:
    """A new file at `path`, complete or not there: written under a temporary name, renamed."""
    temporary = path.with_name(f".{path.name}.{uuid_module.uuid4().hex[:8]}.tmp")
    compressed = path.suffix == ".gz"
    if compressed and binary:
        raise ConfigurationError(
            f"{str(path)!r}: Parquet compresses its own columns (zstd); drop the .gz suffix"
        )
    try:
        stream = (
            open(temporary, "wb")  # noqa: SIM115 - closed below, then renamed
            if binary
            else gzip.open(temporary, "wt", encoding="utf-8", newline="")  # noqa: SIM115
            if compressed
            else open(temporary, "w", encoding="utf-8", newline="")  # noqa: SIM115
        )
    except OSError as exc:
        raise ConfigurationError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    try:
        with stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
