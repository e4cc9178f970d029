"""Text and nesting that no database can store are refused by the _json helpers, naming the key."""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from sqltrack_core import ConfigurationError, MetricTypeError
from sqltrack_core._json import (
    MAX_DEPTH,
    check_metric_key,
    check_text,
    jsonable,
    metric_json,
)

NUL = "bad\x00text"
SURROGATE = "bad\ud800text"
HOSTILE = [
    pytest.param(NUL, "NUL", id="nul"),
    pytest.param(SURROGATE, "surrogate", id="surrogate"),
]
ORDINARY = ["plain", "", "é", "naïve café", "训练损失", "🚀🔥", "mixed é 训练 🚀 text", "a\tb\nc"]


def nested(depth: int, leaf: Any = 1) -> Any:
    """`depth` dicts, each holding the next under key "a", with `leaf` innermost."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def self_dict() -> Any:
    value: dict[str, Any] = {"x": 1}
    value["self"] = value
    return value


def self_list() -> Any:
    value: list[Any] = [1]
    value.append(value)
    return value


class Color(enum.Enum):
    RED = "red\x00"


@dataclasses.dataclass
class Model:
    name: str


class Opaque:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


# -- check_text and check_metric_key ------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), HOSTILE)
@pytest.mark.parametrize("error", [MetricTypeError, ConfigurationError, ValueError])
def test_check_text_refuses(text: str, problem: str, error: type[Exception]) -> None:
    """Verify that check_text raises the given error naming what holds a NUL or surrogate."""
    with pytest.raises(error, match=f"^the thing .*{problem}") as info:
        check_text(text, "the thing", error)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ORDINARY)
def test_check_text_accepts_ordinary_unicode(text: str) -> None:
    """Verify that check_text passes ordinary ASCII and non-ASCII text."""
    check_text(text, "the thing", ValueError)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("\x00" + "x" * 500, 80), ("\udfff" + "y" * 500, 80)],
)
def test_check_text_cuts_long_values(text: str, shown: int) -> None:
    """Verify that check_text shows at most about 80 characters of a long bad value."""
    with pytest.raises(ValueError) as info:
        check_text(text, "v", ValueError)
    assert repr(text)[:shown] in str(info.value)
    assert repr(text)[: shown + 1] not in str(info.value)


@pytest.mark.parametrize(("key", "problem"), HOSTILE)
def test_metric_key_refused(key: str, problem: str) -> None:
    """Verify that check_metric_key refuses a key holding a NUL or surrogate, showing it."""
    with pytest.raises(MetricTypeError, match=f"^metric key .*{problem}") as info:
        check_metric_key(key)
    assert repr(key) in str(info.value)


@pytest.mark.parametrize("key", [k for k in ORDINARY if k])
def test_metric_key_accepts_ordinary_unicode(key: str) -> None:
    """Verify that check_metric_key accepts ordinary unicode keys."""
    check_metric_key(key)


# -- metric_json ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), HOSTILE)
@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda t: t, "metric 'x' "),
        (lambda t: {"a": t}, "metric 'x'['a'] "),
        (lambda t: [0, {"a": [t]}], "metric 'x'[1]['a'][0] "),
        (lambda t: {t: 1}, "metric 'x' dict key "),
        (lambda t: {"a": {t: 1}}, "metric 'x'['a'] dict key "),
    ],
    ids=["value", "nested-value", "nested-list", "dict-key", "nested-dict-key"],
)
def test_metric_json_refuses_text(
    make: Callable[[str], Any], where: str, text: str, problem: str
) -> None:
    """Verify that metric_json refuses NUL or surrogate text anywhere, naming its path."""
    with pytest.raises(MetricTypeError, match=problem) as info:
        metric_json(make(text), "'x'")
    assert str(info.value).startswith(where + repr(text))


@pytest.mark.parametrize("text", ORDINARY)
def test_metric_json_keeps_ordinary_unicode(text: str) -> None:
    """Verify that metric_json returns ordinary unicode values and keys unchanged."""
    value = {text: [text, {"k": text}]}
    assert metric_json(value, "'x'") == value


@pytest.mark.parametrize("make", [nested, nested_list], ids=["dict", "list"])
def test_metric_json_depth_limit(make: Callable[[int], Any]) -> None:
    """Verify that metric_json accepts MAX_DEPTH levels of nesting and refuses one more."""
    assert MAX_DEPTH == 64
    assert metric_json(make(MAX_DEPTH), "'x'") == make(MAX_DEPTH)
    with pytest.raises(MetricTypeError, match=r"^metric 'x'.* more than 64 levels"):
        metric_json(make(MAX_DEPTH + 1), "'x'")


@pytest.mark.parametrize(
    "value",
    [nested(1000), nested_list(1000), self_dict(), self_list()],
    ids=["dict-1000", "list-1000", "self-dict", "self-list"],
)
def test_metric_json_refuses_deep_and_cyclic(value: Any) -> None:
    """Verify that very deep or self-referencing metric values raise MetricTypeError, not RecursionError."""
    with pytest.raises(MetricTypeError, match=r"^metric 'x'.* more than 64 levels") as info:
        metric_json(value, "'x'")
    assert len(str(info.value)) < 400  # the path display is cut


def test_metric_json_still_refuses_bad_types() -> None:
    """Verify that metric_json still names the path of a value of an unsupported type."""
    with pytest.raises(MetricTypeError, match=r"^metric 'x'\['a'\]\[0\] is a builtins.object"):
        metric_json({"a": [object()]}, "'x'")
    with pytest.raises(MetricTypeError, match=r"^metric 'x' has a dict key 1 of type int"):
        metric_json({1: 2}, "'x'")


# -- jsonable -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), HOSTILE)
@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda t: {"a": t}, "params['a'] "),
        (lambda t: {"model": {"layers": [1, t]}}, "params['model']['layers'][1] "),
        (lambda t: {t: 1}, "params key "),
        (lambda t: {"model": {t: 1}}, "params['model'] key "),
        (lambda t: {"tags": {t}}, "params['tags'] "),
        (lambda t: {"m": Model(t)}, "params['m']['name'] "),
        (lambda t: {"p": pathlib.PurePosixPath("/data") / t}, "params['p'] "),
    ],
    ids=["value", "nested-value", "key", "nested-key", "set", "dataclass", "path"],
)
def test_jsonable_refuses_text(
    make: Callable[[str], Any], where: str, text: str, problem: str
) -> None:
    """Verify that jsonable refuses NUL or surrogate text in params, naming the key."""
    with pytest.raises(ConfigurationError, match=problem) as info:
        jsonable(make(text))
    assert str(info.value).startswith(where)


@pytest.mark.parametrize(("text", "problem"), HOSTILE)
def test_jsonable_checks_str_of_unknown_objects(text: str, problem: str) -> None:
    """Verify that jsonable checks the str() of an unknown object, and of a stringified key."""
    with pytest.raises(ConfigurationError, match=rf"^params\['obj'\] .*{problem}"):
        jsonable({"obj": Opaque(text)})
    with pytest.raises(ConfigurationError, match=rf"^params key .*{problem}"):
        jsonable({Opaque(text): 1})


def test_jsonable_checks_enum_values() -> None:
    """Verify that jsonable checks the value of an enum member."""
    with pytest.raises(ConfigurationError, match=r"^params\['color'\] 'red\\x00' holds a NUL"):
        jsonable({"color": Color.RED})


@pytest.mark.parametrize("what", ["evidence", "hparams"])
def test_jsonable_names_what(what: str) -> None:
    """Verify that jsonable's `what` argument starts the path in its error messages."""
    with pytest.raises(ConfigurationError, match=rf"^{what}\['a'\] "):
        jsonable({"a": NUL}, what=what)
    with pytest.raises(ConfigurationError, match=rf"^{what}\['a'\].* more than 64"):
        jsonable({"a": nested(MAX_DEPTH)}, what=what)


@pytest.mark.parametrize("text", ORDINARY)
def test_jsonable_keeps_ordinary_unicode(text: str) -> None:
    """Verify that jsonable returns ordinary unicode values and keys unchanged."""
    value = {text: [text, {"k": text}], "obj": Opaque(text)}
    assert jsonable(value) == {text: [text, {"k": text}], "obj": text}


@pytest.mark.parametrize("make", [nested, nested_list], ids=["dict", "list"])
def test_jsonable_depth_limit(make: Callable[[int], Any]) -> None:
    """Verify that jsonable accepts MAX_DEPTH levels of nesting and refuses one more."""
    assert jsonable({"model": make(MAX_DEPTH - 1)}) == {"model": make(MAX_DEPTH - 1)}
    with pytest.raises(ConfigurationError, match=r"^params\['model'\].* more than 64 levels"):
        jsonable({"model": make(MAX_DEPTH)})


@pytest.mark.parametrize("make", [nested, nested_list], ids=["dict", "list"])
def test_jsonable_depth_limit_at_top(make: Callable[[int], Any]) -> None:
    """Verify that the params value itself counts as the first of the MAX_DEPTH levels."""
    assert jsonable(make(MAX_DEPTH)) == make(MAX_DEPTH)
    with pytest.raises(ConfigurationError, match=r"^params\[.* more than 64 levels"):
        jsonable(make(MAX_DEPTH + 1))


def test_jsonable_cuts_long_keys_in_paths() -> None:
    """Verify that a long key is shortened in the path of an error message."""
    with pytest.raises(ConfigurationError, match=r"^params\['a{36}\.\.\.\] 'x\\x00'"):
        jsonable({"a" * 100: "x\x00"})


@pytest.mark.parametrize(
    "value",
    [nested(1000), nested_list(1000), self_dict(), self_list()],
    ids=["dict-1000", "list-1000", "self-dict", "self-list"],
)
def test_jsonable_refuses_deep_and_cyclic(value: Any) -> None:
    """Verify that very deep or self-referencing params raise ConfigurationError, not RecursionError."""
    with pytest.raises(ConfigurationError, match=r"^params\['model'\].* more than 64") as info:
        jsonable({"model": value})
    assert len(str(info.value)) < 400  # the path display is cut
    assert re.search(r"\.\.\.", str(info.value))


def test_jsonable_still_never_fails_on_unknown_types() -> None:
    """Verify that jsonable still turns unknown objects into their str()."""
    marker = object()
    assert jsonable({"o": marker, 3: Opaque("é")}) == {"o": str(marker), "3": "é"}
