"""JSON conversion: logged values and params to plain JSON, and back, NaN and ±inf included.

Text is checked on the way in: a NUL character (PostgreSQL cannot store it in text) or a lone
surrogate (not valid Unicode, so no driver can encode it as UTF-8) is refused here, naming the
key, rather than failing later in the database or the writer thread.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import types
from collections import UserString
from collections.abc import Mapping, Sequence, Set
from typing import Any, TypeAlias

from .errors import ConfigurationError, MetricTypeError

# JSON has no NaN or infinities and PostgreSQL's jsonb rejects the tokens Python would
# write, so a non-finite float inside JSON is stored as this one-key object and decoded back.
FLOAT_TAG = "$float"
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# Nesting depth of dict/list values and params accepted: the value passed to `metric_json`
# or `jsonable` counts as level 1 if it is a container, and a container nested deeper than
# this is refused with an error naming its key. This also stops a container that holds
# itself, and keeps the recursion far from Python's RecursionError.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")

# The keys leading to a value, innermost last, as a linked list (parent, key) built only
# while descending and formatted only for an error message, so the happy path stays cheap.
_Trail: TypeAlias = "tuple[_Trail, object] | None"


def _text_ok(text: str) -> bool:
    """Whether `text` is free of NUL characters and lone surrogates (cheap for ASCII)."""
    if text.isascii():
        return "\x00" not in text
    return "\x00" not in text and _SURROGATE.search(text) is None


def check_text(text: str, what: str, error: type[Exception]) -> None:
    """Raise `error` naming `what` if `text` holds a NUL character or a lone surrogate."""
    if text.isascii() and "\x00" not in text:
        return
    if "\x00" in text:
        raise error(
            f"{what} {text!r:.80} holds a NUL character (\\x00), which PostgreSQL cannot "
            "store in text; remove it or encode the value (e.g. .hex())"
        )
    match = _SURROGATE.search(text)
    if match is not None:
        ch = match.group()
        raise error(
            f"{what} {text!r:.80} holds a lone surrogate ({ch!r}), which is not valid "
            "Unicode and cannot be stored; decode the bytes it came from with "
            "errors='replace'"
        )


def check_metric_key(key: str) -> None:
    """Raise `MetricTypeError` if the metric `key` holds a NUL character or a lone surrogate."""
    check_text(key, "metric key", MetricTypeError)


def _path(root: str, trail: _Trail) -> str:
    """`root` followed by the keys of `trail` as subscripts; long paths keep both ends."""
    keys: list[object] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    parts = [f"[{_cut(repr(key), 40)}]" for key in reversed(keys)]
    if len(parts) > 8:
        parts = [*parts[:4], "...", *parts[-3:]]
    return root + "".join(parts)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _too_deep(what: str, error: type[Exception]) -> Exception:
    return error(
        f"{what} is nested more than {MAX_DEPTH} levels deep (or contains itself); "
        f"flatten it to at most {MAX_DEPTH} levels of dicts and lists"
    )


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

    `path` names the value in the error message, e.g. ``'val/confusion'[0]``. Text holding a
    NUL character or a lone surrogate, and nesting deeper than `MAX_DEPTH`, are refused.
    """
    return _metric_json(value, path, None, 0)


def _metric_json(value: Any, root: str, trail: _Trail, depth: int) -> Any:
    value = scalar(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        if not _text_ok(value):
            check_text(value, f"metric {_path(root, trail)}", MetricTypeError)
        return value
    if isinstance(value, float):
        return _float_to_json(value)
    if isinstance(value, (Mapping, list, tuple)):
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep(f"metric {_path(root, trail)}", MetricTypeError)
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise MetricTypeError(
                        f"metric {_path(root, trail)} has a dict key {k!r} of type "
                        f"{type(k).__name__}; JSON objects need str keys"
                    )
                if not _text_ok(k):
                    check_text(k, f"metric {_path(root, trail)} dict key", MetricTypeError)
                out[k] = _metric_json(v, root, (trail, k), depth)
            return out
        return [_metric_json(v, root, (trail, i), depth) for i, v in enumerate(value)]
    raise MetricTypeError(
        f"metric {_path(root, trail)} is a {type(value).__module__}.{type(value).__qualname__} "
        f"({value!r:.80}); expected bool, int, float, str, None, a dict or list of those, a "
        "numpy scalar or a 0-d tensor (call .item() or .tolist() on arrays)"
    )


def jsonable(value: Any, *, what: str = "params") -> Any:
    """Convert params and other free-form data to plain JSON types.

    Dataclasses, attrs classes, pydantic models, namespaces, omegaconf configs and mappings
    become objects; sequences (tuples, omegaconf lists), sets and arrays lists; enums their
    value; paths and anything unknown their ``str()``. Unknown types never fail, but
    text (values, keys, ``str()`` results) holding a NUL character or a lone surrogate, and
    nesting deeper than `MAX_DEPTH`, raise `ConfigurationError` naming the key under `what`,
    e.g. ``params['model']['name']``.
    """
    return _jsonable(value, what, None, 0)


def _jsonable(value: Any, what: str, trail: _Trail, depth: int) -> Any:
    kind = type(value)
    if kind is str:  # the common cases first, without the scalar() call
        if not _text_ok(value):
            check_text(value, _path(what, trail), ConfigurationError)
        return value
    if value is None or kind is int or kind is bool:
        return value
    if kind is float:
        return _float_to_json(value)
    value = scalar(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        if not _text_ok(value):
            check_text(value, _path(what, trail), ConfigurationError)
        return value
    if isinstance(value, float):
        return _float_to_json(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, what, trail, depth)
    if kind is not dict and kind is not list:
        plain = _structure(value)
        if plain is not value:
            return _jsonable(plain, what, trail, depth)
    is_dataclass = dataclasses.is_dataclass(value) and not isinstance(value, type)
    if is_dataclass or isinstance(value, (Mapping, list, tuple, Set)):
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep(_path(what, trail), ConfigurationError)
        if is_dataclass:
            return {
                f.name: _jsonable(getattr(value, f.name), what, (trail, f.name), depth)
                for f in dataclasses.fields(value)
            }
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                key = k if type(k) is str else str(k)
                if not _text_ok(key):
                    check_text(key, f"{_path(what, trail)} key", ConfigurationError)
                kind = type(v)
                if (
                    (kind is str and v.isascii() and "\x00" not in v)
                    or kind is int
                    or (kind is float and math.isfinite(v))
                ):
                    out[key] = v  # inlined leaves: typical params are mostly these
                else:
                    out[key] = _jsonable(v, what, (trail, key), depth)
            return out
        if isinstance(value, (list, tuple)):
            return [_jsonable(v, what, (trail, i), depth) for i, v in enumerate(value)]
        return sorted((_jsonable(v, what, trail, depth) for v in value), key=repr)
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and not _text_ok(path):
            check_text(path, _path(what, trail), ConfigurationError)
        return path
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__.startswith(("numpy", "torch")):
        return _jsonable(tolist(), what, trail, depth)
    text = str(value)
    if not _text_ok(text):
        check_text(text, _path(what, trail), ConfigurationError)
    return text


def _structure(value: Any) -> Any:
    """The plain containers a configuration object holds, or `value` itself if it is none of
    them: omegaconf configs (interpolations resolved where they can be), pydantic models, attrs
    classes, argparse/jsonargparse/simple namespaces, and sequences that are not lists."""
    kind = type(value)
    if kind.__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # only here when the value came from omegaconf

        if OmegaConf.is_config(value):
            try:
                return OmegaConf.to_container(value, resolve=True)
            except Exception:  # an interpolation that cannot resolve: keep it as written
                return OmegaConf.to_container(value, resolve=False)
    dump = getattr(value, "model_dump", None)  # pydantic 2
    if callable(dump) and hasattr(kind, "model_fields"):
        return dump()
    fields = getattr(kind, "__attrs_attrs__", None)
    if fields is not None and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in fields}
    if isinstance(value, types.SimpleNamespace) or (
        hasattr(value, "__dict__") and kind.__name__ == "Namespace"
    ):
        return vars(value)
    if isinstance(value, Sequence) and not isinstance(
        value, (str, bytes, bytearray, list, tuple, range, UserString)
    ):
        return list(value)
    return value


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


def deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Merge `new` into `into` in place: nested dicts key by key, anything else replaced."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
