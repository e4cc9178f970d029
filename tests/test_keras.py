"""SQLTrackKerasCallback with real (tiny) Keras 3 models on the torch backend, on both backends."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from _integration import links, query, run_example, run_python

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError
from sqltrack_core.errors import SQLTrackWarning
from sqltrack_integrations.keras import SQLTrackKerasCallback, read_keras_token

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

X = np.random.RandomState(0).randn(64, 8).astype("float32")
Y = X @ np.linspace(-1, 1, 8, dtype="float32")[:, None]


def build(head: int = 1, seed: int = 0, compile: bool = True) -> Any:
    """A backbone of two Dense layers and a head, initialised from `seed`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="tanh", name="backbone_1")(inputs)
    x = keras.layers.Dense(16, activation="tanh", name="backbone_2")(x)
    model = keras.Model(inputs, keras.layers.Dense(head, name="head")(x))
    if compile:
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


def fit(model: Any, url: str, experiment: str = "exp", **kwargs: Any) -> SQLTrackKerasCallback:
    callback_kwargs = kwargs.pop("callback_kwargs", {})
    callback = kwargs.pop("callback", None) or SQLTrackKerasCallback(
        experiment, url, **callback_kwargs
    )
    extra = kwargs.pop("callbacks", [])
    options: dict[str, Any] = {"epochs": 2, "batch_size": 16, "verbose": 0}
    options.update(kwargs)
    model.fit(X, Y, callbacks=[callback, *extra], **options)
    return callback


def pretrain(url: str, tmp_path: Path) -> tuple[SQLTrackKerasCallback, Any]:
    model = build()
    callback = fit(model, url, "pretrain", epochs=3)
    model.save(tmp_path / "base.keras")
    model.save_weights(tmp_path / "base.weights.h5")
    return callback, model


# -- the run, params and metrics ----------------------------------------------------------------


def test_epochs_land_as_typed_columns_with_params(db_url: str) -> None:
    """Verify epoch logs (train and validation) are columns at step = epoch, with params."""
    callback = fit(build(), db_url, validation_split=0.25, callback_kwargs={"tags": ["k"]})
    with sqltrack.connect(db_url) as tracker:
        info = tracker.run_info(callback.run_uuid)
        frame = tracker.metrics(info["id"])
    assert info["status"] == "completed" and info["tags"] == ["k"]
    assert info["params.fit.epochs"] == 2 and info["params.optimizer.name"].startswith("sgd")
    assert info["params.optimizer.learning_rate"] == pytest.approx(0.05)
    assert list(frame["step"]) == [0, 1] and list(frame["epoch"]) == [0, 1]
    assert frame[["loss", "mae", "val_loss", "val_mae"]].notna().all().all()
    types = dict(query(db_url, "SELECT key, sql_type FROM metric_columns"))
    assert types["loss"] in ("REAL", "DOUBLE PRECISION") and types["epoch"] == "BIGINT"


def test_initial_epoch_and_consecutive_fits_keep_steps_growing(db_url: str) -> None:
    """Verify one callback over several fit() calls continues the run and its steps."""
    model = build()
    callback = fit(model, db_url)
    fit(model, db_url, callback=callback)  # counts epochs from 0 again
    fit(model, db_url, callback=callback, initial_epoch=4, epochs=6)
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(callback.run_id)  # type: ignore[arg-type]
    assert list(frame["step"]) == [0, 1, 2, 3, 4, 5]
    assert list(frame["epoch"]) == [0, 1, 0, 1, 4, 5]
    assert query(db_url, "SELECT status FROM runs") == [("completed",)]


def test_per_batch_logging_uses_the_batch_count(db_url: str) -> None:
    """Verify log_every_n_batches logs every n-th batch at the global batch count."""
    callback = fit(build(), db_url, callback_kwargs={"log_every_n_batches": 2})
    with sqltrack.connect(db_url) as tracker:
        frame = tracker.metrics(callback.run_id)  # type: ignore[arg-type]
    # 64 samples / 16 = 4 batches per epoch: batches 2, 4 | 6, 8; epoch rows at 4 and 8
    assert list(frame["step"]) == [2, 4, 6, 8]
    assert list(frame.dropna(subset=["epoch"])["step"]) == [4, 8]


def test_saved_files_are_registered_and_carry_a_token(db_url: str, tmp_path: Path) -> None:
    """Verify ModelCheckpoint's and the user's files are registered, with a token inside."""
    model = build()
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch}.keras"))
    callback = fit(model, db_url, callbacks=[checkpoint])
    model.save_weights(tmp_path / "after.weights.h5")  # after fit: registered, run not reopened
    for name in ("ck-1.keras", "ck-2.keras", "after.weights.h5"):
        assert read_keras_token(tmp_path / name)["run_uuid"] == callback.run_uuid  # type: ignore[index]
    paths = {
        Path(p).name
        for (p,) in query(db_url, "SELECT path FROM checkpoints WHERE path IS NOT NULL")
    }
    assert paths == {"ck-1.keras", "ck-2.keras", "after.weights.h5"}
    assert query(db_url, "SELECT status FROM runs") == [("completed",)]
    reloaded = keras.saving.load_model(tmp_path / "ck-2.keras")  # the token does not disturb it
    np.testing.assert_allclose(
        reloaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-5
    )


# -- provenance links -----------------------------------------------------------------------------


def test_load_model_and_load_weights_link_finetuned_from(db_url: str, tmp_path: Path) -> None:
    """Verify load_model(.keras) and load_weights(.weights.h5), renamed, link finetuned_from."""
    base, _ = pretrain(db_url, tmp_path)
    renamed = tmp_path / "moved" / "model.keras"
    renamed.parent.mkdir()
    shutil.move(tmp_path / "base.keras", renamed)
    loaded = keras.saving.load_model(renamed)
    first = fit(loaded, db_url, "finetune")
    weights = build(seed=5)
    weights.load_weights(tmp_path / "base.weights.h5")
    second = fit(weights, db_url, "finetune")
    for callback in (first, second):
        found = links(db_url, callback.run_id)
        assert list(found) == [("finetuned_from", base.run_id)]
        assert found[("finetuned_from", base.run_id)]["fraction"] == 1.0


def test_a_new_head_links_by_fraction(db_url: str, tmp_path: Path) -> None:
    """Verify a pre-trained backbone under a new head links finetuned_from with its share."""
    base, trained = pretrain(db_url, tmp_path)
    model = build(head=3, seed=9)
    for name in ("backbone_1", "backbone_2"):
        model.get_layer(name).set_weights(trained.get_layer(name).get_weights())
    callback = fit(model, db_url, "finetune")
    found = links(db_url, callback.run_id)
    assert list(found) == [("finetuned_from", base.run_id)]
    # backbone 8x16+16 + 16x16+16 of that plus the head's 16x3 (its 3 biases are too small)
    assert found[("finetuned_from", base.run_id)]["fraction"] == pytest.approx(416 / 464, abs=1e-6)


def test_partial_load_links_initialized_from(db_url: str, tmp_path: Path) -> None:
    """Verify loading only the first layer links initialized_from with the fraction."""
    base, trained = pretrain(db_url, tmp_path)
    model = build(seed=9)
    model.get_layer("backbone_1").set_weights(trained.get_layer("backbone_1").get_weights())
    callback = fit(model, db_url, "partial")
    found = links(db_url, callback.run_id)
    # backbone_1 (8x16 + 16) of it, backbone_2's kernel (16x16) and the head's (16x1): the
    # fresh zero biases are constant, so not fingerprinted
    assert list(found) == [("initialized_from", base.run_id)]
    assert found[("initialized_from", base.run_id)]["fraction"] == pytest.approx(
        144 / 416, abs=1e-6
    )


def test_fresh_models_and_same_seed_runs_link_nothing(db_url: str) -> None:
    """Verify a fresh model, and a second model from the same seed, link nothing."""
    first = fit(build(seed=3), db_url)
    second = fit(build(seed=3), db_url)
    assert links(db_url, first.run_id) == {} and links(db_url, second.run_id) == {}


def test_resume_with_initial_epoch_links_resumed_from(db_url: str, tmp_path: Path) -> None:
    """Verify fit(initial_epoch=...) from a loaded checkpoint links resumed_from."""
    base, _ = pretrain(db_url, tmp_path)
    model = keras.saving.load_model(tmp_path / "base.keras")
    callback = fit(model, db_url, "resume", initial_epoch=3, epochs=5)
    assert list(links(db_url, callback.run_id)) == [("resumed_from", base.run_id)]
    with sqltrack.connect(db_url) as tracker:
        assert list(tracker.metrics(callback.run_id)["step"]) == [3, 4]  # type: ignore[arg-type]


def test_a_second_fit_with_a_new_callback_resumes(db_url: str) -> None:
    """Verify fit() again on the same model with a new callback links resumed_from the first."""
    model = build()
    first = fit(model, db_url)
    second = fit(model, db_url)
    assert list(links(db_url, second.run_id)) == [("resumed_from", first.run_id)]


# -- wiring ---------------------------------------------------------------------------------------


def test_the_module_imports_without_choosing_a_backend() -> None:
    """Verify importing the integration imports neither keras nor a backend."""
    code = (
        "import sys; import sqltrack_integrations.keras as k; "
        "assert 'keras' not in sys.modules, 'keras imported'; "
        "k.SQLTrackKerasCallback('e', 'sqlite:///x.db'); "
        "assert 'keras' not in sys.modules, 'keras imported by the callback'"
    )
    done = run_python("-c", code, env={"KERAS_BACKEND": ""})
    assert done.returncode == 0, done.stderr


def test_bad_arguments_are_refused_at_the_call_site() -> None:
    """Verify bad arguments fail in __init__ with an error naming the value."""
    with pytest.raises(ConfigurationError, match="log_every_n_batches=0 must be a positive int"):
        SQLTrackKerasCallback("exp", "sqlite:///x.db", log_every_n_batches=0)
    with pytest.raises(ConfigurationError, match="experiment '' must be a non-empty str"):
        SQLTrackKerasCallback("", "sqlite:///x.db")


def test_unreachable_database_warns_and_training_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Verify fit() completes with a warning when the database cannot be reached."""
    url = f"sqlite:///{tmp_path}/missing/dir/sqltrack.db"
    monkeypatch.setenv("SQLTRACK_FINISH_TIMEOUT", "1")  # then the run waits in the spool
    model = build()
    with pytest.warns(SQLTrackWarning, match="reach"):
        callback = fit(model, url)
    assert callback.run_id is None and len(model.history.history["loss"]) == 2
    assert "send it with: sqltrack sync" in caplog.text


def test_the_example_prints_a_lineage_of_three_runs(db_url: str, tmp_path: Path) -> None:
    """Verify examples/keras_pretrain_finetune.py links its three runs with the right kinds."""
    _, rows = run_example("keras_pretrain_finetune.py", db_url, tmp_path)
    assert rows == [
        ("new-head", "finetuned_from", "backbone"),
        ("new-head (resumed)", "resumed_from", "new-head"),
    ]
