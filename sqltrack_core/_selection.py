"""Which ``params.*`` columns `Tracker.runs` shows: names and globs in order, and what varies.

Pure functions over the runs a query returned (no database): `flatten` turns each run's params
into ``params.<dotted name>`` cells and remembers each name's JSON path, `choose` applies the
caller's selection (`check_patterns` normalises it first) and ``varying``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._suggest import did_you_mean
from .errors import ConfigurationError, NotFoundError

__all__ = ["PREFIX", "Selection", "check_patterns", "choose", "flatten", "is_glob"]

#: what a param's column label starts with
PREFIX = "params."
_GLOB_CHARS = frozenset("*?[")
_MISSING = object()


def is_glob(pattern: str) -> bool:
    """Whether `pattern` is an fnmatch glob (``*``, ``?`` or ``[...]``) rather than a name."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def check_patterns(params: str | Sequence[str] | None) -> list[str] | None:
    """Normalise a params selection: None (every param), one name or glob, or a sequence.

    Raises:
        ConfigurationError: anything else, or an empty name.
    """
    if params is None:
        return None
    items: Sequence[Any] = [params] if isinstance(params, str) else params
    if not isinstance(items, Sequence):
        raise ConfigurationError(
            f"params {params!r:.80} has type {type(params).__name__}; expected a list of param "
            "names or globs such as ['lr', 'optim.*'], or None for every param"
        )
    patterns = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(
                f"params item {item!r:.80} is not a param name or glob; expected a non-empty "
                "str such as 'lr' or 'optim.*' (the flattened name, without 'params.')"
            )
        patterns.append(item)
    return patterns


def flatten(value: Any, into: dict[str, Any], paths: dict[str, tuple[str, ...]]) -> None:
    """Write a run's params (a JSON object) into `into` as ``params.a.b`` cells; nested objects
    are followed, anything else (lists, empty objects) is one cell. `paths` gets each label's
    keys, the first time the label is seen (``{"a.b": 1}`` and ``{"a": {"b": 1}}`` share one
    label, and the first path wins)."""
    if not isinstance(value, dict):
        return
    stack: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [(PREFIX, (), value)]
    while stack:
        prefix, path, node = stack.pop()
        for key, inner in node.items():
            label, keys = prefix + key, (*path, key)
            if isinstance(inner, dict) and inner:
                stack.append((label + ".", keys, inner))
            else:
                into[label] = inner
                if label not in paths:
                    paths[label] = keys


@dataclass
class Selection:
    """The param columns chosen (labels, in order) and, with ``varying``, the params hidden
    because every run has the same value (label without ``params.`` -> that value)."""

    columns: list[str]
    equal: dict[str, Any] = field(default_factory=dict)


def choose(
    records: Sequence[Mapping[str, Any]],
    available: Sequence[str],
    patterns: list[str] | None,
    *,
    varying: bool,
) -> Selection:
    """Select from `available` labels (``params.*``, sorted) those `patterns` name, in their
    order (a glob's matches sorted, each label once); all of them for None. With `varying`,
    drop those equal in every record (a param missing from some record varies).

    Raises:
        NotFoundError: a name (not a glob) that no record has, when there are records.
    """
    names = [label[len(PREFIX) :] for label in available]
    chosen = names if patterns is None else _select(names, patterns, check=bool(records))
    equal: dict[str, Any] = {}
    if varying and records:
        for name in chosen:
            value = _common(records, PREFIX + name)
            if value is not _MISSING:
                equal[name] = value
        chosen = [name for name in chosen if name not in equal]
    return Selection([PREFIX + name for name in chosen], equal)


def _select(names: list[str], patterns: list[str], *, check: bool) -> list[str]:
    known = set(names)
    chosen: dict[str, None] = {}
    for pattern in patterns:
        matches = _matches(pattern, names, known)
        if not matches and pattern.startswith(PREFIX):  # the column label, typed in full
            matches = _matches(pattern[len(PREFIX) :], names, known)
        if not matches and not is_glob(pattern):
            if check:
                raise NotFoundError(did_you_mean(pattern, names, what="param"))
            matches = [pattern]  # no runs: the column is there, empty
        chosen.update(dict.fromkeys(matches))
    return list(chosen)


def _matches(pattern: str, names: list[str], known: set[str]) -> list[str]:
    if is_glob(pattern):
        return [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    return [pattern] if pattern in known else []


def _common(records: Sequence[Mapping[str, Any]], label: str) -> Any:
    """The value of `label` if every record has it and they are all equal, else `_MISSING`."""
    first = records[0].get(label, _MISSING)
    if first is _MISSING:
        return _MISSING
    for record in records:
        value = record.get(label, _MISSING)
        if value is first:
            continue
        if type(value) is not type(first):  # missing, or 1 vs 1.0 vs True: they differ
            return _MISSING
        if value != first and _canonical(value) != _canonical(first):  # NaN equals NaN here
            return _MISSING
    return first


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
