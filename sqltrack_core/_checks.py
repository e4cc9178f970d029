"""Checks of what users hand a run, each raising an error that names the bad value."""

from __future__ import annotations

import math
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from typing import Any

from . import _json
from .errors import ConfigurationError, MetricTypeError

__all__ = [
    "MAX_INT64",
    "MIN_INT64",
    "check_description",
    "check_step",
    "check_tags",
    "check_timestamp",
    "check_uuid",
    "convert",
]

#: the range of a step (and of an int column): 64-bit signed
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1


def convert(key: Any, value: Any) -> Any:
    """The slow path of `Run.log`: validate the key and convert the value (plain ones stay)."""
    if not isinstance(key, str) or not key:
        raise MetricTypeError(
            f"metric key {key!r} is a {type(key).__name__}; expected a non-empty str"
        )
    _json.check_metric_key(key)
    value = _json.scalar(value)
    if isinstance(value, str):
        _json.check_text(value, f"metric {key!r}", MetricTypeError)
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return _json.metric_json(value, repr(key))
    _json.metric_json(value, repr(key))  # raises MetricTypeError naming key and type
    raise AssertionError("unreachable")


def check_step(step: Any) -> int:
    step = _json.scalar(step)
    if isinstance(step, bool) or not isinstance(step, int):
        raise MetricTypeError(f"step {step!r} is a {type(step).__name__}; expected an int")
    if not MIN_INT64 <= step <= MAX_INT64:
        raise MetricTypeError(f"step {step!r} is out of range; expected a 64-bit integer")
    return int(step)


def check_timestamp(timestamp: Any) -> float:
    if (
        isinstance(timestamp, (int, float))
        and not isinstance(timestamp, bool)
        and math.isfinite(timestamp)
    ):
        return float(timestamp)
    raise MetricTypeError(f"timestamp {timestamp!r} must be a finite number of epoch seconds")


def check_description(
    experiment: object, name: object, comment: object, tags: Iterable[str] | None
) -> list[str]:
    """Check what describes a run (as `Tracker.start_run` takes it); return the tags, deduplicated.

    Raises:
        ConfigurationError: naming the bad value.
    """
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigurationError(f"experiment {experiment!r} must be a non-empty str")
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"run name {name!r} is a {type(name).__name__}; expected a str")
    if comment is not None and not isinstance(comment, str):
        raise ConfigurationError(
            f"comment {comment!r:.80} is a {type(comment).__name__}; expected a str"
        )
    for what, text in (("experiment", experiment), ("run name", name), ("comment", comment)):
        if text is not None:
            _json.check_text(text, what, ConfigurationError)
    return check_tags(tags or [])


def check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise ConfigurationError(
            f"tags {tags!r} is a str; expected a list of str such as [{tags!r}]"
        )
    checked = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(
                f"tag {tag!r} is a {type(tag).__name__}; expected a non-empty str"
            )
        _json.check_text(tag, "tag", ConfigurationError)
        if tag not in checked:
            checked.append(tag)
    return checked


def check_uuid(value: uuid_module.UUID | str) -> uuid_module.UUID:
    if isinstance(value, uuid_module.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid_module.UUID(value)
        except ValueError:
            pass
    raise ConfigurationError(f"uuid {value!r} is not a UUID such as '{uuid_module.uuid4()}'")
