"""JSON conversion: logged values and params to plain JSON, and back, NaN and ±inf included."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from .errors import MetricTypeError

# JSON has no NaN or infinities and PostgreSQL's jsonb rejects the tokens Python would
# write, so a non-finite float inside JSON is stored as this one-key object and decoded back.
FLOAT_TAG = "$float"
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_to_json(value: float) -> Any:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return {FLOAT_TAG: "NaN"}
    return {FLOAT_TAG: "Infinity" if value > 0 else "-Infinity"}


def scalar(value: Any) -> Any:
    """Return the Python scalar a numpy scalar or 0-d array/tensor stands for, else `value`."""
    module = type(value).__module__
    if module.startswith(("numpy", "torch", "jax", "tensorflow")):
        shape = getattr(value, "shape", ())
        if shape == () or shape is None:
            item = getattr(value, "item", None)
            if item is not None:
                return item()
    return value


def metric_json(value: Any, path: str) -> Any:
    """Convert a dict/list metric value to plain JSON types, or raise `MetricTypeError`.

    `path` names the value in the error message, e.g. ``'val/confusion'[0]``.
    """
    value = scalar(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _float_to_json(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise MetricTypeError(
                    f"metric {path} has a dict key {k!r} of type {type(k).__name__}; "
                    "JSON objects need str keys"
                )
            out[k] = metric_json(v, f"{path}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [metric_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise MetricTypeError(
        f"metric {path} is a {type(value).__module__}.{type(value).__qualname__} ({value!r:.80}); "
        "expected bool, int, float, str, None, a dict or list of those, a numpy scalar "
        "or a 0-d tensor (call .item() or .tolist() on arrays)"
    )


def jsonable(value: Any) -> Any:
    """Convert params and other free-form data to plain JSON types, never failing.

    Dataclasses, namespaces and mappings become objects; sets, tuples and arrays lists; enums
    their value; paths and anything unknown their ``str()``.
    """
    value = scalar(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _float_to_json(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__.startswith(("numpy", "torch")):
        return jsonable(tolist())
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return jsonable(vars(value))
    return str(value)


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and FLOAT_TAG in obj:
        tagged = obj[FLOAT_TAG]
        if isinstance(tagged, str) and tagged in _NONFINITE:
            return _NONFINITE[tagged]
    return obj


def dumps(value: Any) -> str:
    """Serialise already-converted JSON data compactly."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Parse JSON written by `dumps`, turning tagged non-finite floats back into floats."""
    return json.loads(text, object_hook=_decode_hook)


def decode(value: Any) -> Any:
    """Decode a JSON column value: SQLite returns text; psycopg already parsed it with `loads`."""
    if isinstance(value, (str, bytes)):
        return loads(value)
    return value
