"""The seam for framework integrations: what a logger or callback for any training loop needs
from sqltrack-core, public and documented.

The Lightning, Hugging Face and Keras adapters (`sqltrack_integrations`) use only this module,
the package's public API (`connect`, `Tracker`, `Run`, `RunStatus`, `provenance`) and
`sqltrack_core.errors`; so can an adapter for Accelerate, fastai or your own loop
(``examples/plain_loop_adapter.py`` is one, in 100 lines). What a `Run` offers an integration:

- ``run.log(values, step)``, ``run.next_step`` (the step a log without one takes),
  ``run.log_params``, ``run.finish(status)``, ``run.stop_writer()`` (end the writer thread of a
  run that stays open, e.g. when its owner is dropped);
- ``run.register_checkpoint(path, state_dict, step)`` (fingerprint and register; returns the
  token to save in the file), or ``provenance.fingerprint_state_dict`` on the training thread,
  then ``run.register_fingerprints(token, path, kind, fingerprints)`` with a token from
  ``provenance.checkpoint_token``; ``run.checkpoint_removed(path)`` when the file is deleted;
- ``run.link_from_weights(state_dict)`` / ``run.link_from_fingerprints(fingerprints, resumed=...)``
  at the start of training, ``run.link_from_token(token)`` when resuming from a file that
  carries one (``provenance.read_token`` reads it).

``status_for(exc)`` says how a run ends after an exception (None: completed; KeyboardInterrupt:
cancelled; ``SystemExit(0)``: completed; anything else: failed), as ``with run:`` does.

Training must never stop for tracking: catch `sqltrack_core.errors.SQLTrackError` around
these calls, except the `ConfigurationError`/`MetricTypeError` bad input raises, and tell the
user once with `warn_once`.
"""

from __future__ import annotations

import os
from typing import Any

from ._backends.base import check_scheme, pin_url, resolve_url
from ._checks import check_description
from ._json import jsonable, scalar
from ._status import status_for
from ._warn import warn_once

__all__ = [
    "check_description",
    "database_url",
    "status_for",
    "to_loggable",
    "to_params",
    "warn_once",
]

_PLAIN = (bool, int, float, str)


def database_url(url: str | os.PathLike[str] | None = None) -> str:
    """The database URL an integration's run will use, settled now: `url`, else
    ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db``; a relative SQLite path is made absolute
    against the working directory now (a later ``chdir``, Hydra's, changes nothing).

    Raises:
        UnsupportedURLError: a scheme other than sqlite or postgresql (here, not mid-training).
    """
    pinned = pin_url(resolve_url(url))
    check_scheme(pinned)
    return pinned


def to_params(value: Any, *, what: str = "params") -> Any:
    """`value` (a dict, dataclass, attrs or pydantic model, namespace, omegaconf config, ...) as
    plain JSON types for ``run.log_params``; anything unknown as its ``str()``.

    Raises:
        ConfigurationError: text with NUL or lone surrogates, or nesting past 64 levels, naming
            the key under `what`.
    """
    return jsonable(value, what=what)


def to_loggable(value: Any) -> Any:
    """A value a framework logged, as ``run.log`` takes it: numbers and text as they are,
    numpy and torch scalars as Python numbers, anything else made JSON-safe."""
    if value is None or type(value) in _PLAIN:
        return value
    value = scalar(value)
    if value is None or isinstance(value, _PLAIN):
        return value
    return jsonable(value)
