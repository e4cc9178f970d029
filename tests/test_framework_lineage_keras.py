"""Lineage through Keras' own dtype policies and LoRA adapters (issue 14), on both backends.

Real ``model.fit`` runs with `SQLTrackKerasCallback` on the torch backend, read back from
``run_links``: a fine-tune under ``mixed_bfloat16`` (float32 variables: an exact match), under
``bfloat16`` and ``float16`` (the variables really are cast: a match by cast key), Keras' built-in
LoRA (``Dense.enable_lora``), and fresh same-seed models under a cast policy (no links).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("ml_dtypes")

import keras
import ml_dtypes
from _integration import links, query

from sqltrack_core.provenance import FINETUNE_FRACTION, fingerprint_state_dict
from sqltrack_integrations.keras import SQLTrackKerasCallback, read_keras_token

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings", "float32_policy_after"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

X = np.random.RandomState(0).randn(64, 8).astype("float32")
Y = X @ np.linspace(-1, 1, 8, dtype="float32")[:, None]
DENSE = ("backbone_1", "backbone_2", "head")
LORA_RANK = 2


@pytest.fixture
def float32_policy_after() -> Iterator[None]:
    """Whatever a test does to Keras' global dtype policy, the next test finds it as it was."""
    previous = keras.config.dtype_policy()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def global_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy is `name` inside the block, the previous one after it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build(seed: int = 0, dtype: str | None = None) -> Any:
    """Two Dense layers and a head, initialised from `seed`; `dtype` is every layer's dtype
    policy (None: the global one)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="tanh", name=DENSE[0], dtype=dtype)(inputs)
    x = keras.layers.Dense(16, activation="tanh", name=DENSE[1], dtype=dtype)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name=DENSE[2], dtype=dtype)(x))
    compile_model(model)
    return model


def compile_model(model: Any) -> None:
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")


def fit(model: Any, url: str, experiment: str, **kwargs: Any) -> int:
    """``model.fit`` with a new callback (a new run); returns the run's id."""
    callback = SQLTrackKerasCallback(experiment, url)
    options: dict[str, Any] = {"epochs": 2, "batch_size": 16, "verbose": 0}
    options.update(kwargs)
    model.fit(X, Y, callbacks=[callback], **options)
    assert callback.run_id is not None
    return callback.run_id


def pretrain(url: str, tmp_path: Path) -> tuple[int, Any]:
    """A tracked float32 pre-training run that saves ``base.keras`` and ``base.weights.h5``."""
    model = build(dtype="float32")
    run_id = fit(model, url, "pretrain", epochs=3)
    model.save(tmp_path / "base.keras")
    model.save_weights(tmp_path / "base.weights.h5")
    return run_id, model


def weights(model: Any) -> dict[str, Any]:
    """The model's variables by value, as the callback fingerprints them."""
    return {
        f"{index}:{variable.path}": keras.ops.convert_to_numpy(variable)
        for index, variable in enumerate(model.weights)
    }


def share(model: Any, *sources: Any) -> tuple[list[int], int]:
    """The fingerprinted elements of `model`'s weights first found, by exact hash, among the
    weights of each of `sources` in turn; and the fingerprinted elements in all."""
    fingerprints = fingerprint_state_dict(weights(model))
    seen: set[str] = set()
    found = []
    for source in sources:
        hashes = {fp.hash for fp in fingerprint_state_dict(weights(source))} - seen
        found.append(sum(fp.numel for fp in fingerprints if fp.hash in hashes))
        seen |= hashes
    return found, sum(fp.numel for fp in fingerprints)


def checkpoints_of(url: str, run_id: int) -> set[str]:
    """The UUIDs of the checkpoints run `run_id` registered."""
    rows = query(url, f"SELECT uuid FROM checkpoints WHERE run_id = {int(run_id)}")
    return {str(uuid) for (uuid,) in rows}


# -- dtype policies ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["global", "per-layer"])
def test_mixed_bfloat16_fine_tune_links_finetuned_from_exactly(
    db_url: str, tmp_path: Path, how: str
) -> None:
    """Verify that a fine-tune under the mixed_bfloat16 policy (set globally, or per layer) of
    float32 pre-trained weights links finetuned_from the pre-training run with no cast: its
    variables stay float32, only the computations run in bfloat16."""
    base, _ = pretrain(db_url, tmp_path)
    if how == "global":
        with global_policy("mixed_bfloat16"):
            model = build(seed=5)
    else:
        model = build(seed=5, dtype="mixed_bfloat16")
    assert {layer.dtype_policy.name for layer in model.layers[1:]} == {"mixed_bfloat16"}
    model.load_weights(tmp_path / "base.weights.h5")
    assert {variable.dtype for variable in model.weights} == {"float32"}
    run = fit(model, db_url, "finetune")
    found = links(db_url, run)
    assert list(found) == [("finetuned_from", base)]
    evidence = found[("finetuned_from", base)]
    assert evidence["fraction"] == 1.0 and evidence["tensors_matched"] == 5  # not the head bias
    assert (evidence["elements_matched_by_cast"], evidence["casts"]) == (0, [])


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_a_cast_policy_fine_tune_links_finetuned_from_with_the_cast(
    db_url: str, tmp_path: Path, policy: str
) -> None:
    """Verify that a model built under the bfloat16 or float16 policy, whose variables Keras
    casts when it loads the float32 weights file, links finetuned_from the pre-training run by
    cast key, with the cast and the elements it matched in the evidence."""
    base, trained = pretrain(db_url, tmp_path)
    with global_policy(policy):
        model = build(seed=5)
        model.load_weights(tmp_path / "base.weights.h5")
        arrays = weights(model)
        # on the torch backend Keras hands the callback numpy arrays of the policy's dtype:
        # ml_dtypes' bfloat16 for bfloat16
        assert {str(array.dtype) for array in arrays.values()} == {policy}
        if policy == "bfloat16":
            assert all(array.dtype == ml_dtypes.bfloat16 for array in arrays.values())
        for array, source in zip(arrays.values(), weights(trained).values(), strict=True):
            np.testing.assert_array_equal(array, source.astype(array.dtype))  # a plain cast
        run = fit(model, db_url, "finetune")
    found = links(db_url, run)
    assert list(found) == [("finetuned_from", base)]
    evidence = found[("finetuned_from", base)]
    assert evidence["fraction"] == 1.0 and evidence["tensors_matched"] == 5  # not the head bias
    assert evidence["elements_matched_by_cast"] == evidence["elements_matched"] > 0
    assert evidence["casts"] == [f"float32->{policy}"]
    assert set(evidence["checkpoint_uuids"]) <= checkpoints_of(db_url, base)


def test_fresh_same_seed_models_under_bfloat16_link_nothing(db_url: str) -> None:
    """Verify that fresh same-seed models trained under the bfloat16 policy in two runs, and a
    third same-seed model (float32 this time, whose cast keys equal the bf16 initial weights'),
    link nothing: initial weights are produced by no run."""
    runs = []
    with global_policy("bfloat16"):
        for _ in range(2):
            model = build(seed=3)
            assert {variable.dtype for variable in model.weights} == {"bfloat16"}
            runs.append(fit(model, db_url, "same-seed"))
    third = build(seed=3, dtype="float32")
    runs.append(fit(third, db_url, "same-seed"))
    assert all(links(db_url, run) == {} for run in runs)
    assert query(db_url, "SELECT count(*) FROM run_links") == [(0,)]
    # each run did produce weights of its own: there was something to match, wrongly
    produced = query(
        db_url,
        "SELECT count(*) FROM tensor_fingerprints f JOIN checkpoints c ON c.id = f.checkpoint_id "
        "WHERE f.produced",
    )
    assert produced[0][0] > 0


# -- LoRA adapters (Dense.enable_lora) -----------------------------------------------------------


def lora_model(path: Path) -> Any:
    """The model saved at `path`, with LoRA adapters on every Dense layer, compiled again."""
    model = keras.saving.load_model(path)
    for name in DENSE:
        model.get_layer(name).enable_lora(LORA_RANK)
    compile_model(model)
    return model


def lora_fine_tune(url: str, tmp_path: Path) -> tuple[int, Any, int, Any]:
    """A pre-training run A, and a LoRA fine-tune B of its saved model: (A, its model, B, its
    model). Asserts that B links finetuned_from A with the share of the frozen kernels and
    the biases, as fingerprinting B's starting weights says."""
    base, trained = pretrain(url, tmp_path)
    model = lora_model(tmp_path / "base.keras")
    frozen = [variable.path for variable in model.weights if not variable.trainable]
    assert frozen == [f"{name}/kernel" for name in DENSE]
    (from_base,), total = share(model, trained)
    adapters = sum(
        fp.numel for fp in fingerprint_state_dict(weights(model)) if "/lora_kernel_" in fp.name
    )
    assert adapters > 0 and from_base + adapters == total
    run = fit(model, url, "lora")
    found = links(url, run)
    assert list(found) == [("finetuned_from", base)]
    evidence = found[("finetuned_from", base)]
    assert FINETUNE_FRACTION <= evidence["fraction"] < 1
    assert evidence["fraction"] == pytest.approx(from_base / total, abs=1e-6)
    assert (evidence["elements_matched"], evidence["elements_total"]) == (from_base, total)
    return base, trained, run, model


def test_keras_lora_fine_tune_links_finetuned_from_by_share(db_url: str, tmp_path: Path) -> None:
    """Verify that a fine-tune with Keras' built-in LoRA (frozen pre-trained kernels, fresh
    lora_kernel_a/b) links finetuned_from the pre-training run with the share of the
    fingerprinted elements that came from it, below 1."""
    lora_fine_tune(db_url, tmp_path)


def test_carried_lora_adapters_link_the_base_and_the_adapter_run(
    db_url: str, tmp_path: Path
) -> None:
    """Verify that a run C that loads the pre-trained model, enables LoRA and takes the LoRA
    run B's trained adapters and biases links finetuned_from the pre-training run A (the
    frozen kernels) and initialized_from B (the adapters' share), the fractions summing to 1."""
    base, trained, lora, tuned = lora_fine_tune(db_url, tmp_path)
    model = lora_model(tmp_path / "base.keras")
    model.set_weights(tuned.get_weights())  # the variables unmerged: A's kernels, B's adapters
    (from_base, from_lora), total = share(model, trained, tuned)
    assert from_base + from_lora == total and 0 < from_lora / total < FINETUNE_FRACTION
    run = fit(model, db_url, "lora-again")
    found = links(db_url, run)
    assert sorted(found) == [("finetuned_from", base), ("initialized_from", lora)]
    fractions = {to: evidence["fraction"] for (_, to), evidence in found.items()}
    assert fractions[base] == pytest.approx(from_base / total, abs=1e-6)
    assert fractions[lora] == pytest.approx(from_lora / total, abs=1e-6)
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_saved_lora_model_credits_all_its_weights(db_url: str, tmp_path: Path) -> None:
    """Verify that a run C that loads the model a LoRA run B saved (model.save, registered by
    B's callback, with B's token in it) credits all its fingerprinted weights: to B, which
    produced the merged kernels and the biases the file holds."""
    _, trained, lora, tuned = lora_fine_tune(db_url, tmp_path)
    path = tmp_path / "lora.keras"
    tuned.save(path)  # after fit(): the callback still registers it, for run B
    token = read_keras_token(path)
    assert token is not None
    (registered,) = query(
        db_url, f"SELECT run_id, kind FROM checkpoints WHERE uuid = '{token['checkpoint_uuid']}'"
    )
    assert (int(registered[0]), registered[1]) == (lora, "checkpoint")
    model = keras.saving.load_model(path)
    # what Keras put in the file: merged kernels, neither A's nor B's variables; zero adapters
    layer = model.get_layer(DENSE[0])
    assert layer.lora_enabled and not np.any(keras.ops.convert_to_numpy(layer.lora_kernel_b))
    (from_base, from_lora), total = share(model, trained, tuned)
    assert from_base == 0 and 0 < from_lora < total
    compile_model(model)
    run = fit(model, db_url, "from-saved-lora")
    found = links(db_url, run)
    # the file holds merged kernels: a new set of weights, all of them B's (nothing is A's)
    assert list(found) == [("finetuned_from", lora)]
    assert found[("finetuned_from", lora)]["fraction"] == pytest.approx(1.0)


# -- sharded weights ---------------------------------------------------------------------------


def test_sharded_weights_carry_a_token_and_link(db_url: str, tmp_path: Path) -> None:
    """Verify that save_weights(..., max_shard_size=...) writes the token into the sharded
    weights' index (load_weights still reads it), is registered, and links a run that loads
    it under the bfloat16 policy to the run that saved it."""
    model = build(dtype="float32")
    base = fit(model, db_url, "pretrain")
    index = tmp_path / "sharded.weights.json"
    model.save_weights(index, max_shard_size=0.0000012)  # about 1.2 KB: several shard files
    assert len(list(tmp_path.glob("sharded_*.weights.h5"))) > 1
    token = read_keras_token(index)
    assert token is not None and token["checkpoint_uuid"] in checkpoints_of(db_url, base)
    with global_policy("bfloat16"):
        loaded = build(seed=5)
        loaded.load_weights(index)
        run = fit(loaded, db_url, "finetune")
    evidence = links(db_url, run)[("finetuned_from", base)]
    assert evidence["casts"] == ["float32->bfloat16"] and evidence["fraction"] == 1.0
    # credited to the earliest registration of those weights: the final one, at fit's end
    assert set(evidence["checkpoint_uuids"]) <= checkpoints_of(db_url, base)
