"""Provenance core: tensor fingerprints, checkpoint tokens, the registry and link inference."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, NotFoundError
from sqltrack_core.provenance import (
    MIN_NUMEL,
    checkpoint_token,
    fingerprint_state_dict,
    read_token,
)

torch = pytest.importorskip("torch")
nn = torch.nn

from _weights import head, links_of, mlp, pretrain, state, train  # noqa: E402

# -- helpers ---------------------------------------------------------------------------------


def fingerprinted_numel(model: Any, names: Iterable[str] | None = None) -> int:
    sd = model.state_dict()
    return sum(fp.numel for fp in fingerprint_state_dict(sd) if names is None or fp.name in names)


# -- fingerprints ----------------------------------------------------------------------------


def test_equal_tensors_hash_equal_and_a_changed_value_does_not() -> None:
    """Verify that equal tensors hash equal, and one changed element changes the hash."""
    torch.manual_seed(0)
    a = torch.randn(8, 8)
    b = a.clone()
    (fa,) = fingerprint_state_dict({"w": a})
    (fb,) = fingerprint_state_dict({"other_name": b})
    assert fa.hash == fb.hash
    assert (fa.name, fa.dtype, fa.shape, fa.numel, fa.sampled) == (
        "w",
        "float32",
        (8, 8),
        64,
        False,
    )
    b[3, 4] += 1e-6
    (fc,) = fingerprint_state_dict({"w": b})
    assert fc.hash != fa.hash


def test_shape_and_dtype_are_part_of_the_hash() -> None:
    """Verify that the same bytes under another shape or dtype hash differently."""
    a = torch.randn(8, 8)
    hashes = {
        fingerprint_state_dict({"w": t})[0].hash for t in (a, a.reshape(4, 16), a.view(torch.int32))
    }
    assert len(hashes) == 3


def test_non_contiguous_tensor_hashes_like_its_contiguous_copy() -> None:
    """Verify that a transposed view hashes like its contiguous copy, and a Parameter like a tensor."""
    a = torch.randn(8, 16)
    t = fingerprint_state_dict({"w": a.t()})[0].hash
    assert t == fingerprint_state_dict({"w": a.t().contiguous()})[0].hash
    assert fingerprint_state_dict({"w": nn.Parameter(a)})[0].hash == (
        fingerprint_state_dict({"w": a})[0].hash
    )


@pytest.mark.parametrize(
    "dtype",
    ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool"],
)
def test_every_dtype_hashes(dtype: str) -> None:
    """Verify that tensors of each dtype hash, with their dtype recorded, and differ on change."""
    torch.manual_seed(0)
    t = (torch.randn(64) * 50).to(getattr(torch, dtype))
    if dtype == "bool":
        t = torch.arange(64) % 3 == 0
    (fp,) = fingerprint_state_dict({"w": t})
    assert fp.dtype == dtype and fp.numel == 64 and len(fp.hash) == 32
    assert fingerprint_state_dict({"w": t.clone()})[0].hash == fp.hash
    changed = t.clone()
    changed[0] = not bool(changed[0]) if dtype == "bool" else changed[0] + 1
    assert fingerprint_state_dict({"w": changed})[0].hash != fp.hash


def test_tiny_constant_and_non_tensor_values_are_skipped() -> None:
    """Verify that tiny and constant tensors and non-tensor values are not fingerprinted."""
    sd = {
        "zeros": torch.zeros(64),
        "ones": torch.ones(8, 8),
        "sevens": torch.full((100,), 7, dtype=torch.int64),
        "tiny": torch.arange(MIN_NUMEL - 1, dtype=torch.float32),
        "scalar": torch.tensor(3.0),
        "num_batches_tracked": torch.tensor(5),
        "empty": torch.empty(0),
        "step": 12,
        "name": "resnet",
        "big_enough": torch.arange(MIN_NUMEL, dtype=torch.float32),
    }
    assert [fp.name for fp in fingerprint_state_dict(sd)] == ["big_enough"]
    assert fingerprint_state_dict({"t": torch.arange(4.0)}, min_numel=2)[0].numel == 4


def test_numpy_arrays_hash_like_torch_tensors() -> None:
    """Verify that numpy arrays hash, equal to a torch tensor with the same dtype and content."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 8)).astype(np.float32)
    (fa,) = fingerprint_state_dict({"w": a})
    assert (fa.dtype, fa.shape, fa.numel) == ("float32", (16, 8), 128)
    assert fa.hash == fingerprint_state_dict({"w": torch.from_numpy(a.copy())})[0].hash
    assert fa.hash == fingerprint_state_dict({"w": np.asfortranarray(a)})[0].hash
    assert fingerprint_state_dict({"w": np.zeros(100), "i": np.arange(4)}) == []
    b = a.copy()
    b[0, 0] = 0.5
    assert fingerprint_state_dict({"w": b})[0].hash != fa.hash


def test_sampled_mode_hashes_a_strided_subset() -> None:
    """Verify that sample_above hashes a deterministic strided subset, flagged as sampled."""
    torch.manual_seed(0)
    big = torch.randn(1000)
    (full,) = fingerprint_state_dict({"w": big})
    (s1,) = fingerprint_state_dict({"w": big}, sample_above=100)
    (s2,) = fingerprint_state_dict({"w": big.clone()}, sample_above=100)
    assert s1.sampled and not full.sampled and s1.hash == s2.hash != full.hash
    assert s1.numel == 1000 and s1.shape == (1000,)
    changed = big.clone()
    changed[0] += 1  # element 0 is always in the sample
    assert fingerprint_state_dict({"w": changed}, sample_above=100)[0].hash != s1.hash
    small = torch.randn(50)
    assert not fingerprint_state_dict({"w": small}, sample_above=100)[0].sampled


@pytest.mark.parametrize("bad", [[1, 2], "weights", None])
def test_a_non_mapping_state_dict_is_refused(bad: Any) -> None:
    """Verify that a state dict that is not a mapping raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match="expected a mapping"):
        fingerprint_state_dict(bad)


def test_bad_sample_above_is_refused() -> None:
    """Verify that sample_above must be a positive int."""
    with pytest.raises(ConfigurationError, match="sample_above"):
        fingerprint_state_dict({}, sample_above=0)


# -- tokens ----------------------------------------------------------------------------------


def test_token_roundtrips_torch_save_with_weights_only(tmp_path: Path) -> None:
    """Verify that a token inside a checkpoint survives torch.load(weights_only=True)."""
    token = checkpoint_token(uuid.uuid4(), uuid.uuid4(), 7)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": mlp(0).state_dict(), "sqltrack": token}, path)
    loaded = torch.load(path, weights_only=True)["sqltrack"]
    assert loaded == token
    assert read_token(loaded) == token
    assert all(type(v) in (str, int) for v in token.values())


@pytest.mark.parametrize(
    "value",
    [
        None,
        "token",
        {"run_uuid": "x", "checkpoint_uuid": str(uuid.uuid4()), "step": 1},
        {"run_uuid": str(uuid.uuid4()), "checkpoint_uuid": str(uuid.uuid4())},
        {"run_uuid": str(uuid.uuid4()), "checkpoint_uuid": str(uuid.uuid4()), "step": "1"},
    ],
)
def test_read_token_rejects_what_is_not_a_token(value: Any) -> None:
    """Verify that read_token returns None for values that are not checkpoint tokens."""
    assert read_token(value) is None


# -- registry and link inference, on both backends -------------------------------------------


def test_register_checkpoint_writes_the_registry(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that a registered checkpoint and its fingerprints are stored, produced when changed."""
    model, run_id, token = pretrain(tracker, tmp_path)
    assert set(token) == {"run_uuid", "checkpoint_uuid", "step"} and token["step"] == 3
    ckpts = tracker.query(
        "SELECT uuid, kind, step, path, token FROM checkpoints WHERE run_id = ? ORDER BY id",
        [run_id],
    )
    assert list(ckpts["kind"]) == ["initial", "checkpoint"]
    row = ckpts.iloc[1]
    assert str(row["uuid"]) == token["checkpoint_uuid"] and int(row["step"]) == 3
    assert row["path"] == str(tmp_path / "base.pt")
    stored = row["token"] if isinstance(row["token"], dict) else json.loads(row["token"])
    assert stored == token
    fps = tracker.query(
        "SELECT f.name, f.hash, f.dtype, f.shape, f.numel, f.produced, c.kind "
        "FROM tensor_fingerprints f JOIN checkpoints c ON c.id = f.checkpoint_id "
        "WHERE c.run_id = ? ORDER BY c.id, f.name",
        [run_id],
    )
    expected = {fp.name: fp for fp in fingerprint_state_dict(model.state_dict())}
    saved = fps[fps["kind"] == "checkpoint"]
    assert (
        set(saved["name"])
        == set(expected)
        == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight"}
    )
    for name, hash_, dtype, shape, numel, produced, _ in saved.itertuples(index=False):
        assert (hash_, dtype, int(numel)) == (expected[name].hash, "float32", expected[name].numel)
        assert (
            tuple(shape if isinstance(shape, list) else json.loads(shape)) == expected[name].shape
        )
        assert bool(produced)
    assert not any(bool(p) for p in fps[fps["kind"] == "initial"]["produced"])


def test_finetune_from_a_checkpoint_links_finetuned_from(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that loading a pre-trained state dict links finetuned_from with fraction 1.0."""
    base, base_id, token = pretrain(tracker, tmp_path)
    model = mlp(5)
    model.load_state_dict(state(base))
    with tracker.start_run("finetune") as run:
        links = run.link_from_weights(model.state_dict())
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base_id)]
    evidence = links_of(tracker, run)[("finetuned_from", base_id)]
    assert evidence["method"] == "fingerprint"
    assert evidence["fraction"] == pytest.approx(1.0)
    assert evidence["tensors_matched"] == evidence["tensors_total"] == 5
    assert evidence["checkpoint_uuids"] == [token["checkpoint_uuid"]]
    assert links[0].run_uuid == token["run_uuid"]


def test_new_head_on_a_pretrained_backbone_links_finetuned_from(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that a backbone with a new head (most elements loaded) links finetuned_from."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    model = mlp(5, head=10)
    backbone = {k: v for k, v in state(base).items() if not k.startswith("4.")}
    model.load_state_dict(backbone, strict=False)
    with tracker.start_run("finetune") as run:
        links = run.link_from_weights(model.state_dict())
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base_id)]
    fraction = links_of(tracker, run)[("finetuned_from", base_id)]["fraction"]
    expected = fingerprinted_numel(base, backbone) / fingerprinted_numel(model)
    assert fraction == pytest.approx(expected, abs=1e-6)
    assert 0.5 <= fraction < 1.0


def test_loading_a_small_part_links_initialized_from(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that loading under half of the elements links initialized_from, with the fraction."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    model = mlp(5)
    first = {k: v for k, v in state(base).items() if k.startswith("0.")}
    model.load_state_dict(first, strict=False)
    with tracker.start_run("finetune") as run:
        links = run.link_from_weights(model.state_dict())
    assert [(link.kind, link.run_id) for link in links] == [("initialized_from", base_id)]
    evidence = links_of(tracker, run)[("initialized_from", base_id)]
    expected = fingerprinted_numel(base, first) / fingerprinted_numel(model)
    assert evidence["fraction"] == pytest.approx(expected, abs=1e-6) and expected < 0.5
    assert evidence["tensors_matched"] == 2 and evidence["tensors_total"] == 5


def test_a_fresh_model_links_nothing(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that fresh weights (another seed) link to no run."""
    pretrain(tracker, tmp_path)
    with tracker.start_run("fresh") as run:
        assert run.link_from_weights(mlp(1).state_dict()) == []
    assert links_of(tracker, run) == {}


def test_same_seed_without_a_checkpoint_between_links_nothing(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that two runs from the same seed, checkpointing unchanged weights, are not linked."""
    runs = []
    for i in range(2):
        model = mlp(0)
        with tracker.start_run("same-seed") as run:
            assert run.link_from_weights(model.state_dict()) == []
            run.register_checkpoint(tmp_path / f"{i}.pt", model.state_dict(), step=0)
            run.register_checkpoint(None, model.state_dict(), step=1, kind="final")
        runs.append(run)
    assert links_of(tracker, runs[0]) == links_of(tracker, runs[1]) == {}
    assert (
        tracker.query("SELECT count(*) AS n FROM tensor_fingerprints WHERE produced")["n"][0] == 0
    )
    with tracker.start_run("third") as run:
        assert run.link_from_weights(mlp(0).state_dict()) == []


def test_frozen_backbone_credits_the_pretraining_run(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that fine-tunes sharing a frozen backbone link to its producer, not to each other."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    finetunes = []
    for seed in (1, 2):
        model = mlp(seed, head=10)
        model.load_state_dict({k: v for k, v in state(base).items() if not head(k)}, strict=False)
        with tracker.start_run("finetune") as run:
            links = run.link_from_weights(model.state_dict())
            assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base_id)]
            train(model, only=head, seed=seed)
            run.register_checkpoint(None, model.state_dict(), step=3)
        finetunes.append((run, state(model)))
    (ft1, ft1_state), (ft2, _) = finetunes
    assert set(links_of(tracker, ft2)) == {("finetuned_from", base_id)}

    model = mlp(7, head=10)
    model.load_state_dict(ft1_state)
    with tracker.start_run("third") as run:
        links = {link.run_id: link for link in run.link_from_weights(model.state_dict())}
    assert set(links) == {base_id, ft1.id}
    assert links[base_id].kind == "finetuned_from"
    assert links[ft1.id].kind == "initialized_from"
    assert links[ft1.id].evidence["tensors_matched"] == 1  # the head's weight; its bias is tiny
    total = links[base_id].evidence["fraction"] + links[ft1.id].evidence["fraction"]
    assert total == pytest.approx(1.0)
    assert set(links_of(tracker, run)) == {
        ("finetuned_from", base_id),
        ("initialized_from", ft1.id),
    }


def test_chain_of_three_generations_links_direct_parents(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that each generation links only to the run that changed the weights it loads."""
    model, g1, _ = pretrain(tracker, tmp_path)
    ids = [g1]
    for generation in (2, 3):
        child = mlp(10 + generation)
        child.load_state_dict(state(model))
        with tracker.start_run(f"gen{generation}") as run:
            links = run.link_from_weights(child.state_dict())
            assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", ids[-1])]
            train(child, seed=generation)
            run.register_checkpoint(None, child.state_dict(), step=3)
        ids.append(run.id)
        model = child
    # A fourth run from generation 3's weights links to generation 3 only.
    with tracker.start_run("gen4") as run:
        fresh = mlp(4)
        fresh.load_state_dict(state(model))
        assert [link.run_id for link in run.link_from_weights(fresh.state_dict())] == [ids[2]]
    assert len(set(ids)) == 3


def test_link_from_token(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that a token links resumed_from (or finetuned_from) with token evidence."""
    _, base_id, token = pretrain(tracker, tmp_path)
    path = tmp_path / "copied" / "renamed.pt"
    with tracker.start_run("resume") as run:
        link = run.link_from_token(token, path=path)
        ft = run.link_from_token(token, kind="finetuned_from")
    assert (link.kind, link.run_id, ft.kind) == ("resumed_from", base_id, "finetuned_from")
    evidence = links_of(tracker, run)[("resumed_from", base_id)]
    assert evidence == {
        "method": "token",
        "checkpoint_uuid": token["checkpoint_uuid"],
        "step": 3,
        "path": str(path),
    }


def test_link_from_token_errors(tracker: sqltrack.Tracker) -> None:
    """Verify that junk tokens, unknown runs and bad kinds are refused with clear errors."""
    with tracker.start_run("resume") as run:
        with pytest.raises(ConfigurationError, match="not a sqltrack checkpoint token"):
            run.link_from_token({"run_uuid": "nope"})
        unknown = checkpoint_token(uuid.uuid4(), uuid.uuid4(), 1)
        with pytest.raises(NotFoundError):
            run.link_from_token(unknown)
        with pytest.raises(ConfigurationError, match="link kind"):
            run.link_from_token(checkpoint_token(run.uuid, uuid.uuid4(), 1), kind="child_of")


def test_register_checkpoint_errors(tracker: sqltrack.Tracker) -> None:
    """Verify that a bad kind is refused, and registering after finish writes at once."""
    run = tracker.start_run("errors")
    with pytest.raises(ConfigurationError, match="checkpoint kind"):
        run.register_checkpoint("x.pt", {}, step=1, kind="best")
    token = run.register_checkpoint("x.pt", None, step=None)
    assert token["step"] is None
    run.finish()
    run.register_checkpoint("after.pt", {"w": torch.randn(8, 8)}, step=1)
    assert sorted(tracker.query("SELECT path FROM checkpoints")["path"]) == ["after.pt", "x.pt"]
    assert len(tracker.query("SELECT hash FROM tensor_fingerprints")) == 1
    assert tracker.run_info(run.id)["status"] == "completed"


def test_deleting_a_run_deletes_its_checkpoints(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that checkpoints and fingerprints cascade with their run."""
    _, base_id, _ = pretrain(tracker, tmp_path)
    with tracker.backend.transaction():
        tracker.backend.execute(tracker.backend.sql("DELETE FROM runs WHERE id = ?"), (base_id,))
    assert len(tracker.query("SELECT * FROM checkpoints")) == 0
    assert len(tracker.query("SELECT * FROM tensor_fingerprints")) == 0
