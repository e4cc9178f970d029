"""SQLTrackKerasCallback beside Keras' own callbacks: the database against what Keras recorded."""

from __future__ import annotations

import csv
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from _integration import query

import sqltrack_core as sqltrack
from sqltrack_integrations.keras import SQLTrackKerasCallback, read_keras_token

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# 48 samples, batches of 16: 3 batches an epoch; the last 16 samples validate
X = np.random.RandomState(1).randn(64, 4).astype("float32")
Y = (X @ np.array([[0.5], [-1.0], [2.0], [0.25]], dtype="float32")).astype("float32")
TRAIN = (X[:48], Y[:48])
VALIDATION = (X[48:], Y[48:])


def build(seed: int = 0) -> Any:
    """A two-layer regression model with two metrics, initialised from `seed`."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss="mse",
        metrics=["mae", keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    return model


def fit(model: Any, callbacks: list[Any], x: Any = None, y: Any = None, **kwargs: Any) -> Any:
    """``model.fit`` on the training data, quietly, in batches of 16; returns the History."""
    options: dict[str, Any] = {"epochs": 3, "batch_size": 16, "verbose": 0, "shuffle": False}
    options.update(kwargs)
    x, y = TRAIN if x is None else (x, y)
    return model.fit(x, y, callbacks=callbacks, **options)


def tracked(url: str, **kwargs: Any) -> SQLTrackKerasCallback:
    """A new callback (a new run) in the experiment "framework" at `url`."""
    return SQLTrackKerasCallback("framework", url, **kwargs)


def rows(url: str, callback: SQLTrackKerasCallback) -> dict[int, dict[str, Any]]:
    """The run's metrics as step -> {key: value}, as `Tracker.metrics` reads them back."""
    assert callback.run_id is not None
    with sqltrack.connect(url) as tracker:
        frame = tracker.metrics(callback.run_id)
    keys = [c for c in frame.columns if c not in ("run_id", "step", "logged_at")]
    return {
        int(step): {key: frame[key].iloc[i] for key in keys} for i, step in enumerate(frame["step"])
    }


def present(url: str, callback: SQLTrackKerasCallback, key: str) -> dict[int, bool]:
    """step -> whether the run stored a value (NaN included) for `key`, NULL being no value."""
    ((column,),) = query(url, f"SELECT column_name FROM metric_columns WHERE key = '{key}'")
    quoted = '"' + str(column).replace('"', '""') + '"'
    found = query(
        url,
        f"SELECT step, CASE WHEN {quoted} IS NULL THEN 0 ELSE 1 END FROM metrics "
        f"WHERE run_id = {int(callback.run_id)} ORDER BY step",  # type: ignore[arg-type]
    )
    return {int(step): bool(flag) for step, flag in found}


def status(url: str, callback: SQLTrackKerasCallback) -> str:
    """The run's status as the readers report it."""
    with sqltrack.connect(url) as tracker:
        value: str = tracker.run_info(callback.run_uuid)["status"]
    return value


def same(stored: Any, recorded: Any) -> bool:
    """Exact equality: Keras' logs are Python floats (float64), stored and read back as such;
    NaN is equal to NaN here."""
    if isinstance(recorded, float) and math.isnan(recorded):
        return isinstance(stored, float) and math.isnan(stored)
    return bool(stored == recorded) and type(stored) is not str


def assert_holds_history(
    got: dict[int, dict[str, Any]], history: dict[str, list[Any]], steps: list[int]
) -> None:
    """Every key of a History, at every epoch, is the value at that epoch's step."""
    for key, values in history.items():
        assert len(values) == len(steps), key
        for step, value in zip(steps, values, strict=True):
            assert same(got[step][key], value), (key, step, got[step][key], value)


# -- History and CSVLogger ----------------------------------------------------------------------


def test_every_history_value_is_stored_at_its_epoch(db_url: str) -> None:
    """Verify each key of fit()'s History, at each epoch, is stored exactly at step = epoch."""
    callback = tracked(db_url)
    history = fit(build(), [callback], epochs=4, validation_data=VALIDATION)
    assert set(history.history) == {"loss", "mae", "rmse", "val_loss", "val_mae", "val_rmse"}
    got = rows(db_url, callback)
    assert sorted(got) == history.epoch == [0, 1, 2, 3]
    assert_holds_history(got, history.history, history.epoch)
    assert [got[step]["epoch"] for step in got] == history.epoch
    assert set(got[0]) == {*history.history, "epoch"}  # nothing else lands in the rows


def test_csv_logger_rows_match_the_database(db_url: str, tmp_path: Path) -> None:
    """Verify Keras' CSVLogger and the callback, side by side, hold the same rows."""
    callback = tracked(db_url)
    path = tmp_path / "log.csv"
    fit(build(), [callback, keras.callbacks.CSVLogger(str(path))], validation_split=0.25)
    with path.open(newline="") as file:
        logged = list(csv.DictReader(file))
    got = rows(db_url, callback)
    assert [int(row["epoch"]) for row in logged] == sorted(got) == [0, 1, 2]
    for row in logged:
        step = int(row["epoch"])
        assert set(row) == set(got[step])  # the same keys, "epoch" included
        for key, text in row.items():
            # csv writes a float with repr(), which reads back to the very same float
            assert same(got[step][key], int(text) if key == "epoch" else float(text)), key


# -- Keras' callbacks beside ours -----------------------------------------------------------------


def test_early_stopping_completes_the_run_with_the_epochs_trained(db_url: str) -> None:
    """Verify a run stopped early by EarlyStopping is completed and holds just those epochs."""
    callback = tracked(db_url)
    # min_delta so large that no epoch after the first improves: it stops after patience epochs
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=2, min_delta=1e9)
    history = fit(build(), [callback, stopper], epochs=20)
    assert history.epoch == [0, 1, 2] and stopper.stopped_epoch == 2
    got = rows(db_url, callback)
    assert sorted(got) == history.epoch
    assert_holds_history(got, history.history, history.epoch)
    assert status(db_url, callback) == "completed"


@pytest.mark.parametrize("ours", ["first", "last"])
def test_reduce_lr_on_plateau_learning_rate_is_recorded(db_url: str, ours: str) -> None:
    """Verify the learning_rate ReduceLROnPlateau adds to the logs is stored, wherever ours sits."""
    callback = tracked(db_url)
    # every epoch after the first is a plateau: the rate halves each time
    reducer = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1e9
    )
    order = [callback, reducer] if ours == "first" else [reducer, callback]
    history = fit(build(), order, epochs=4)
    rates = history.history["learning_rate"]
    assert len(set(rates)) == 3  # it did reduce it (History holds the rate each epoch ran with)
    got = rows(db_url, callback)
    assert_holds_history(got, history.history, history.epoch)


def test_model_checkpoint_best_only_files_are_registered(db_url: str, tmp_path: Path) -> None:
    """Verify each save of ModelCheckpoint(save_best_only=True) is registered at its epoch."""
    callback = tracked(db_url)
    scores = [3.0, 1.0, 2.0, 0.5, 4.0]  # best at epochs 0, 1 and 3

    def score(epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = scores[epoch]

    path = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(path), monitor="score", mode="min", save_best_only=True
    )
    history = fit(
        build(),
        [callback, keras.callbacks.LambdaCallback(on_epoch_end=score), checkpoint],
        epochs=5,
    )
    assert history.history["score"] == scores
    registered = query(
        db_url,
        "SELECT step, path FROM checkpoints WHERE kind = 'checkpoint' "
        f"AND run_id = {int(callback.run_id)} ORDER BY step",  # type: ignore[arg-type]
    )
    assert registered == [(0, str(path)), (1, str(path)), (3, str(path))]
    token = read_keras_token(path)
    assert token is not None and token["run_uuid"] == callback.run_uuid and token["step"] == 3
    assert_holds_history(rows(db_url, callback), history.history, history.epoch)


def test_terminate_on_nan_stores_the_nan_and_completes(db_url: str) -> None:
    """Verify a NaN loss that TerminateOnNaN stops on is stored as NaN and the run completes."""
    callback = tracked(db_url)
    y = TRAIN[1].copy()
    y[20] = np.nan  # in the second batch of the first epoch
    history = fit(build(), [callback, keras.callbacks.TerminateOnNaN()], TRAIN[0], y, epochs=5)
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    got = rows(db_url, callback)
    assert sorted(got) == [0]
    assert_holds_history(got, history.history, history.epoch)
    assert present(db_url, callback, "loss") == {0: True}  # a NaN, not a missing value
    # TerminateOnNaN stops fit() the way EarlyStopping does: fit() returns and calls
    # on_train_end, so the callback finishes the run as completed (the NaN tells the story)
    assert status(db_url, callback) == "completed"


@pytest.mark.parametrize("ours", ["first", "last"])
def test_callback_order_gives_the_same_data(db_url: str, ours: str) -> None:
    """Verify ours changes no logs others see, and stores keys others add, in any order."""

    def others() -> tuple[list[Any], list[float], list[dict[str, Any]]]:
        """A LambdaCallback that adds a key and rounds a value, then one that copies the logs."""
        unrounded: list[float] = []
        seen: list[dict[str, Any]] = []

        def edit(epoch: int, logs: dict[str, Any]) -> None:
            logs["double_loss"] = 2 * logs["loss"]
            unrounded.append(logs["mae"])
            logs["mae"] = round(logs["mae"], 2)

        def record(epoch: int, logs: dict[str, Any]) -> None:
            seen.append(dict(logs))

        editor = keras.callbacks.LambdaCallback(on_epoch_end=edit)
        return [editor, keras.callbacks.LambdaCallback(on_epoch_end=record)], unrounded, seen

    alone, _, seen_alone = others()
    expected = fit(build(), alone, validation_split=0.25).history  # the same training, untracked
    callback = tracked(db_url)
    beside, unrounded, seen = others()
    order = [callback, *beside] if ours == "first" else [*beside, callback]
    history = fit(build(), order, validation_split=0.25)
    # ours added nothing (no "epoch" key) and changed nothing that others or History see
    assert seen == seen_alone and history.history == expected
    keras_keys = {"loss", "mae", "rmse", "val_loss", "val_mae", "val_rmse"}
    assert set(history.history) == keras_keys | {"double_loss"}
    got = rows(db_url, callback)
    assert {key for key in got[0] if key != "epoch"} == set(history.history)
    # a key added after ours ran is stored all the same; a value changed after ours ran keeps
    # the one ours logged (writing it again would overwrite a stored value)
    stored_mae = unrounded if ours == "first" else history.history["mae"]
    assert_holds_history(got, {**history.history, "mae": stored_mae}, history.epoch)
    if ours == "first":
        assert unrounded != history.history["mae"]  # the rounding did change what History holds


def test_callback_order_stores_identical_runs(db_url: str) -> None:
    """Verify the same training with ours first and ours last stores the same values."""
    stored = []
    for ours_first in (True, False):
        callback = tracked(db_url)
        reducer = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1e9)
        fit(build(), [callback, reducer] if ours_first else [reducer, callback])
        got = rows(db_url, callback)
        stored.append(got)
    first, last = stored
    assert sorted(first) == sorted(last) == [0, 1, 2]
    for step in first:
        assert first[step].keys() == last[step].keys()
        assert all(same(first[step][k], last[step][k]) for k in first[step]), step


# -- batches, several fits, validation frequency ----------------------------------------------


class BatchRecorder(keras.callbacks.Callback):  # type: ignore[misc]
    """Keep a copy of the logs each training batch ends with, by global batch count."""

    def __init__(self, async_safe: bool) -> None:
        super().__init__()
        self.async_safe = async_safe  # True lets Keras run batch hooks on a worker thread
        self.seen: dict[int, dict[str, Any]] = {}
        self.done = 0  # batches of the epochs before
        self.lock = threading.Lock()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.seen[self.done + batch + 1] = dict(logs or {})

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.done = max(self.seen)


@pytest.mark.parametrize("async_safe", [False, True], ids=["sync", "async"])
def test_batch_logs_match_what_keras_passed(db_url: str, async_safe: bool) -> None:
    """Verify log_every_n_batches stores each n-th batch's logs as Keras passed them."""
    callback = tracked(db_url, log_every_n_batches=2)
    recorder = BatchRecorder(async_safe)
    history = fit(build(), [callback, recorder], epochs=3)  # 3 batches an epoch: 9 in all
    assert sorted(recorder.seen) == list(range(1, 10))
    got = rows(db_url, callback)
    epoch_steps = [3, 6, 9]  # epoch rows go at the batch count at the epoch's end
    assert sorted(got) == sorted({2, 4, 6, 8, *epoch_steps})
    for step in (2, 4, 6, 8):
        for key, value in recorder.seen[step].items():
            assert same(got[step][key], value), (step, key)
    assert_holds_history(got, history.history, epoch_steps)
    # at the epoch's last batch the running means are the epoch's values
    for step in epoch_steps:
        assert all(same(got[step][k], v) for k, v in recorder.seen[step].items()), step


def test_fit_twice_with_evaluate_and_predict_between(db_url: str) -> None:
    """Verify a second fit() continues the run after evaluate()/predict() with the callback."""
    callback = tracked(db_url)
    model = build()
    first = fit(model, [callback], epochs=2).history
    x_val, y_val = VALIDATION
    evaluated = model.evaluate(x_val, y_val, callbacks=[callback], verbose=0, return_dict=True)
    predicted = model.predict(x_val, callbacks=[callback], verbose=0)
    assert set(evaluated) == {"loss", "mae", "rmse"} and predicted.shape == (16, 1)
    assert sorted(rows(db_url, callback)) == [0, 1] and status(db_url, callback) == "completed"
    second = fit(model, [callback], epochs=2).history
    got = rows(db_url, callback)
    assert sorted(got) == [0, 1, 2, 3]
    both = {key: first[key] + second[key] for key in first}
    assert_holds_history(got, both, [0, 1, 2, 3])
    assert [got[step]["epoch"] for step in got] == [0, 1, 0, 1]
    assert query(db_url, "SELECT COUNT(*) FROM runs") == [(1,)]
    assert status(db_url, callback) == "completed"


def test_validation_freq_stores_val_keys_only_when_validated(db_url: str) -> None:
    """Verify fit(validation_freq=2) stores val_* only at the epochs Keras validated."""
    callback = tracked(db_url)
    history = fit(build(), [callback], epochs=5, validation_data=VALIDATION, validation_freq=2)
    validated = [epoch for epoch in history.epoch if (epoch + 1) % 2 == 0]
    assert validated == [1, 3] and len(history.history["val_loss"]) == 2
    got = rows(db_url, callback)
    for key in ("loss", "mae", "rmse"):
        assert_holds_history(got, {key: history.history[key]}, history.epoch)
    for key in ("val_loss", "val_mae", "val_rmse"):
        assert present(db_url, callback, key) == {e: e in validated for e in history.epoch}
        assert_holds_history(got, {key: history.history[key]}, validated)
