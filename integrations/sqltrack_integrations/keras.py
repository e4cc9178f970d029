"""Keras 3 callback for sqltrack-core, with provenance links from weight fingerprints.

``model.fit(..., callbacks=[SQLTrackKerasCallback("my-experiment")])`` gives a tracked run:
the model's and optimizer's configs and the fit parameters as params, each epoch's logs as
typed columns (step = epoch index, continuing across ``initial_epoch`` and several ``fit()``
calls), optionally every n-th batch's too, and links to the runs the starting weights came
from.

This module never imports Keras at import time, and the callback needs nothing from Keras to
exist: Keras calls callbacks by their methods, so `SQLTrackKerasCallback` is a plain class that
has them all. Keras is imported inside the hooks, when ``fit()`` runs, long after the script
chose its backend (``KERAS_BACKEND``). Per-batch logging is async-safe: Keras may run it off the
training thread, and it never reads a tensor on the training thread.

Provenance (the brief's "Provenance"):

- at the first epoch of a run the model's weights are fingerprinted by value (variable names
  differ between model instances and are only stored, never matched) and matched against the
  registry: ``finetuned_from`` / ``initialized_from``, or ``resumed_from`` when ``fit()``
  resumes (``initial_epoch > 0``) or the model's optimizer goes on from a ``fit()`` this
  process tracked (``optimizer.iterations > 0``, unchanged since). Iterations restored by
  ``load_model`` or ``load_weights`` alone are not a resume: Keras files always carry the
  optimizer state, and loading one to fine-tune is the common case;
- every file the model saves while the callback is attached (``ModelCheckpoint``'s too, full
  models and weights-only) is registered with the weights it holds, and gets a token: a
  ``sqltrack.json`` member inside a ``.keras`` archive, a ``sqltrack`` attribute on the root of
  an ``.h5`` file, so the file names its run offline; the weights at train end are registered
  as the run's final ones.
"""

from __future__ import annotations

import json
import os
import uuid as uuid_module
import weakref
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

from sqltrack_core import RunStatus
from sqltrack_core.integration import to_loggable, to_params
from sqltrack_integrations._session import RunSession, TracksARun, check_positive

__all__ = ["SQLTrackKerasCallback", "read_keras_token"]

ARCHIVE_MEMBER = "sqltrack.json"  # the token's name inside a .keras archive
H5_ATTRIBUTE = "sqltrack"  # the token's attribute on the root group of an .h5 file


class SQLTrackKerasCallback(TracksARun):
    """Track a Keras 3 ``fit()`` in sqltrack-core.

    Args:
        experiment: the run's experiment; default ``$SQLTRACK_EXPERIMENT``, else ``"keras"``.
        url: the database; default ``$SQLTRACK_URL``, else ``sqlite:///sqltrack.db``.
        name: the run's name; default the model's name.
        tags, comment: stored with the run.
        log_every_n_batches: also log every n-th training batch's logs; then the step is the
            number of batches trained (1-based) instead of the epoch index.
        run: continue this existing run (id or UUID).
        sample_above: fingerprint a sample of tensors larger than this (very large models).

    Example::

        model.fit(x, y, epochs=5, validation_split=0.1,
                  callbacks=[SQLTrackKerasCallback("mnist", name="cnn")])

    One callback is one run: passing it to several ``fit()`` calls continues the run.
    """

    #: Keras may run the batch hooks on a worker thread: they touch no tensor there either.
    async_safe = True

    def __init__(
        self,
        experiment: str | None = None,
        url: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        comment: str | None = None,
        log_every_n_batches: int | None = None,
        run: int | str | uuid_module.UUID | None = None,
        sample_above: int | None = None,
    ) -> None:
        check_positive("log_every_n_batches", log_every_n_batches)
        self._session = RunSession(
            experiment,
            url,
            default_experiment="keras",
            name=name,
            tags=tags,
            comment=comment,
            run=run,
            sample_above=sample_above,
        )
        self._every = log_every_n_batches
        self.params: dict[str, Any] = {}
        self.model: Any = None
        self._started = False  # the run's starting weights were recorded
        self._first_epoch: int | None = None  # of the current fit()
        self._offset = 0  # added to Keras' epoch index so that steps keep growing
        self._last_step = -1
        self._batches_done = 0  # batches trained by this run before the current epoch
        self._batches_in_epoch = 0
        self._step = 0  # of the epoch under way (for files saved during it)
        # the last epoch's logs as Keras passed them, the keys logged of them, and its step
        self._epoch_logs: tuple[Mapping[str, Any], frozenset[Any], int] | None = None

    # -- what Keras calls -----------------------------------------------------------------------

    def set_params(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Create the run with its params; wrap the model's save methods."""
        self._first_epoch = None
        model = self.model
        session = self._session
        # Keras skips on_train_end when fit() raises and tells callbacks nothing: a fit() that
        # never reaches it by the time the process exits has failed.
        session.begin_training()
        with session.guard("train begin", strict=False):
            if session.name is None and getattr(model, "name", None):
                session.name = str(model.name)
            params = _params(model, self.params)
            session.do("params", lambda run: run.log_params(params))
            _wrap_saving(model, self)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._log_late_keys()
        if self._first_epoch is None:
            self._first_epoch = epoch
            # a fit() that counts from 0 again goes on after the run's last step; one with
            # initial_epoch past it keeps Keras' numbering
            self._offset = 0 if epoch > self._last_step else self._last_step + 1 - epoch
            if not self._started:
                self._started = True
                self._link_initial_weights(initial_epoch=epoch)
        self._batches_in_epoch = 0
        self._step = epoch + self._offset

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Every n-th batch (with ``log_every_n_batches``): log at the global batch count. Keras
        may call this on a worker thread, with logs already made Python numbers."""
        self._batches_in_epoch = max(self._batches_in_epoch, batch + 1)
        every = self._every
        if every is None or not logs:
            return
        step = self._batches_done + batch + 1
        if step % every == 0:
            with self._session.guard("log", strict=False):
                self._session.log(_loggable(logs), step)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Log the epoch's logs (training and validation), with ``epoch`` as a column; what the
        callbacks after this one add to them follows at the next hook (`_log_late_keys`)."""
        self._batches_done += self._batches_in_epoch
        step = self._batches_done if self._every else epoch + self._offset
        self._last_step = max(self._last_step, epoch + self._offset)
        values = _loggable(logs or {})
        values["epoch"] = epoch
        with self._session.guard("log", strict=False):
            self._session.log(values, step)
        self._epoch_logs = None if logs is None else (logs, frozenset(logs), step)

    def _log_late_keys(self) -> None:
        """Log, at the last epoch's step, the keys that callbacks after this one added to its
        logs (``ReduceLROnPlateau`` adds ``learning_rate``): Keras hands every callback the same
        dict, and `History`, always last, records it as they left it. A value they changed keeps
        the one logged: writing it again would overwrite a value at a step the run already has."""
        pending, self._epoch_logs = self._epoch_logs, None
        if pending is None:
            return
        logs, logged, step = pending
        late = {key: value for key, value in logs.items() if key not in logged}
        if late:
            with self._session.guard("log", strict=False):
                self._session.log(_loggable(late), step)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Register the final weights and finish the run as completed."""
        self._log_late_keys()
        session = self._session
        model = self.model
        with session.guard("checkpoint", strict=False):
            session.register_checkpoint(None, _weights(model), self._last_step, kind="final")
            _TRAINED[id(model)] = (weakref.ref(model), _iterations(model))
        session.end_training()
        session.finish(RunStatus.COMPLETED)

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        """The other hooks Keras calls."""

    on_batch_begin = on_batch_end = on_train_batch_begin = _nothing
    on_test_begin = on_test_end = on_test_batch_begin = on_test_batch_end = _nothing
    on_predict_begin = on_predict_end = on_predict_batch_begin = on_predict_batch_end = _nothing

    # -- provenance ---------------------------------------------------------------------------

    def _link_initial_weights(self, initial_epoch: int) -> None:
        """A resume is ``initial_epoch > 0``, or an optimizer that went on stepping in this
        process; iterations restored from a file are not (see the module docstring)."""
        model = self.model
        session = self._session
        with session.guard("provenance", strict=False):
            trained_here = _TRAINED.get(id(model))
            resumed = initial_epoch > 0 or (
                trained_here is not None
                and trained_here[0]() is model
                and _iterations(model) == trained_here[1] > 0
            )
            session.link_initial_weights(_weights(model), resumed=resumed)

    def file_saved(self, path: str) -> None:
        """Called by the wrapped ``model.save``/``save_weights`` after the model wrote `path`:
        register it and put the token in it."""
        session = self._session
        with session.guard("checkpoint", strict=False):
            absolute = os.path.abspath(path)
            token = session.register_checkpoint(absolute, _saved_weights(self.model), self._step)
            write_keras_token(absolute, token)


# -- helpers ---------------------------------------------------------------------------------------


#: id(model) -> (the model, its optimizer's iterations) after a fit() this process tracked
_TRAINED: dict[int, tuple[weakref.ReferenceType[Any], int]] = {}


def _iterations(model: Any) -> int:
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    return 0 if iterations is None else int(_numpy(iterations))


def _weights(model: Any) -> dict[str, Any]:
    """The model's weights by value, as numpy arrays (names only label them)."""
    return {
        f"{index}:{variable.path}": _numpy(variable) for index, variable in enumerate(model.weights)
    }


def _saved_weights(model: Any) -> dict[str, Any]:
    """What Keras writes into a file for the model: each layer's ``save_own_variables``, which
    for a LoRA-enabled layer is its kernel merged with the adapters (and no adapters: loading
    sets them to zero), so that a run that loads the file finds the weights registered for it.
    Falls back to the variables for a layer Keras cannot walk."""
    walk = getattr(model, "_flatten_layers", None)
    if walk is None:
        return _weights(model)
    saved: dict[str, Any] = {}
    for index, layer in enumerate(walk(include_self=True, recursive=True)):
        store: dict[str, Any] = {}
        layer.save_own_variables(store)
        for key, value in store.items():
            saved[f"{index}:{getattr(layer, 'path', layer.name)}/{key}"] = _numpy(value)
    return saved


def _numpy(variable: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(variable)


def _params(model: Any, fit_params: Mapping[str, Any]) -> dict[str, Any]:
    """The model's and optimizer's configs and the fit parameters, JSON-safe."""
    params: dict[str, Any] = {"fit": dict(fit_params)}
    for key, source in (("model", model), ("optimizer", getattr(model, "optimizer", None))):
        get_config = getattr(source, "get_config", None)
        if get_config is None:
            continue
        try:
            params[key] = get_config()
        except Exception as exc:  # subclassed models without get_config
            params[key] = {"class": type(source).__name__, "config_error": str(exc)}
    plain: dict[str, Any] = to_params(params)
    return plain


def _loggable(logs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): to_loggable(value) for key, value in logs.items()}


def _wrap_saving(model: Any, callback: SQLTrackKerasCallback) -> None:
    """Make ``model.save`` and ``model.save_weights`` report each file to `callback` (once)."""
    for method in ("save", "save_weights"):
        original = getattr(model, method)
        if getattr(original, "_sqltrack_wrapped", False):
            original._sqltrack_callback[0] = callback
            continue
        holder = [callback]

        def wrapper(
            filepath: Any,
            *args: Any,
            _original: Callable[..., Any] = original,
            _holder: list[SQLTrackKerasCallback] = holder,
            **kwargs: Any,
        ) -> Any:
            result = _original(filepath, *args, **kwargs)
            if isinstance(filepath, (str, os.PathLike)):
                _holder[0].file_saved(os.fspath(filepath))
            return result

        wrapper._sqltrack_wrapped = True  # type: ignore[attr-defined]
        wrapper._sqltrack_callback = holder  # type: ignore[attr-defined]
        object.__setattr__(model, method, wrapper)


def write_keras_token(path: str, token: Mapping[str, Any]) -> None:
    """Put `token` into a saved Keras file: a member of a ``.keras`` zip archive, an attribute
    of an ``.h5`` file's root group, or a key of the ``.weights.json`` index of sharded weights
    (``save_weights(..., max_shard_size=...)``; Keras reads only its own keys). Other files are
    left alone."""
    text = json.dumps(dict(token))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path, "a") as archive:
            if ARCHIVE_MEMBER not in archive.namelist():
                archive.writestr(ARCHIVE_MEMBER, text)
    elif path.endswith(".h5"):
        import h5py

        with h5py.File(path, "a") as file:
            file.attrs[H5_ATTRIBUTE] = text
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as file:
            index = json.load(file)
        if isinstance(index, dict) and "weight_map" in index:
            index[H5_ATTRIBUTE] = dict(token)
            with open(path, "w", encoding="utf-8") as file:
                json.dump(index, file, indent=4)


def read_keras_token(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The token in a Keras file written while a `SQLTrackKerasCallback` was attached, or None."""
    from sqltrack_core import provenance

    text = os.fspath(path)
    try:
        if zipfile.is_zipfile(text):
            with zipfile.ZipFile(text) as archive:
                if ARCHIVE_MEMBER not in archive.namelist():
                    return None
                return provenance.read_token(json.loads(archive.read(ARCHIVE_MEMBER)))
        if text.endswith(".h5"):
            import h5py

            with h5py.File(text, "r") as file:
                raw = file.attrs.get(H5_ATTRIBUTE)
            return None if raw is None else provenance.read_token(json.loads(raw))
        if text.endswith(".json"):
            with open(text, encoding="utf-8") as file:
                index = json.load(file)
            return (
                provenance.read_token(index.get(H5_ATTRIBUTE)) if isinstance(index, dict) else None
            )
    except (OSError, ValueError):
        return None
    return None
