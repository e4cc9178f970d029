"""Lineage through dtype casts (issue 14): cast keys, cast-aware `produced`, the links, and
weights linked with the token of the checkpoint they were loaded from.

Real tensors, real training steps and a real registry on both backends; the frameworks' own
casts are tested in test_framework_lineage_*.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sqltrack_core as sqltrack
from sqltrack_core import ConfigurationError, offline
from sqltrack_core.provenance import CAST_DTYPES, checkpoint_token, fingerprint_state_dict

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

from _weights import head, links_of, mlp, pretrain, state, train  # noqa: E402

F32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16

#: what a child tensor went through on its way from the registered one; every path is recognised
#: but the two that go bfloat16 -> float16 from a float32 source (UNRECOGNISED)
PATHS: dict[str, list[Any]] = {
    "same": [],
    "fp32": [F32],
    "bf16": [BF16],
    "fp16": [FP16],
    "bf16->fp32": [BF16, F32],
    "fp16->fp32": [FP16, F32],
    "fp16->bf16": [FP16, BF16],
    "bf16->fp16": [BF16, FP16],
    "fp16->fp32->bf16": [FP16, F32, BF16],
    "bf16->fp16->fp32": [BF16, FP16, F32],
}
UNRECOGNISED = {("float32", "bf16->fp16"), ("float32", "bf16->fp16->fp32")}


def weights(seed: int = 0, scale: float = 0.02) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(96, 64, generator=generator) * scale


def cast(tensor: Any, path: list[Any]) -> Any:
    for dtype in path:
        tensor = tensor.to(dtype)
    return tensor


def keys(tensor: Any, **kwargs: Any) -> set[str | None]:
    (fp,) = fingerprint_state_dict({"w": tensor}, **kwargs)
    return {fp.bf16_hash, fp.bf16_via_fp16_hash} - {None}


def lookup(tensor: Any, **kwargs: Any) -> str | None:
    (fp,) = fingerprint_state_dict({"w": tensor}, **kwargs)
    return fp.bf16_hash


def as_numpy(tensor: Any) -> Any:
    if tensor.dtype == BF16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


# -- cast keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "path"),
    [
        (source, path)
        for source in ("float32", "bfloat16", "float16")
        for path in PATHS
        if (source, path) not in UNRECOGNISED
    ],
)
def test_a_cast_copy_finds_its_source_by_cast_key(source: str, path: str) -> None:
    """Verify that a child's bf16_hash is among its source's cast keys for every recognised
    cast path, for ordinary and for tiny weights (most of them float16-subnormal)."""
    for scale in (0.02, 1e-4):
        parent = weights(scale=scale).to(getattr(torch, source))
        assert lookup(cast(parent, PATHS[path])) in keys(parent)


@pytest.mark.parametrize("path", ["bf16->fp16", "bf16->fp16->fp32"])
def test_fp32_through_bf16_then_fp16_is_not_recognised(path: str) -> None:
    """Verify the documented gap: float32 weights cast to bfloat16 and then to float16 lose
    float16-subnormal bits twice over and match no cast key of the float32 source."""
    parent = weights(scale=1e-4)
    assert lookup(cast(parent, PATHS[path])) not in keys(parent)


def test_cast_keys_leave_the_exact_hash_alone() -> None:
    """Verify that the exact hash still tells dtypes apart while the cast keys do not."""
    parent = weights()
    (fp32,) = fingerprint_state_dict({"w": parent})
    (bf16,) = fingerprint_state_dict({"w": parent.to(BF16)})
    (fp16,) = fingerprint_state_dict({"w": parent.to(FP16)})
    assert len({fp32.hash, bf16.hash, fp16.hash}) == 3
    assert fp32.bf16_hash == bf16.bf16_hash
    assert fp16.bf16_hash == fp32.bf16_via_fp16_hash != fp32.bf16_hash
    assert fp16.bf16_via_fp16_hash is None  # float16 through float16 is the same


def test_only_float32_float16_and_bfloat16_get_cast_keys() -> None:
    """Verify that float64, integer and bool tensors get no cast keys (see CAST_DTYPES)."""
    assert CAST_DTYPES == ("float32", "float16", "bfloat16")
    w = weights()
    state_dict = {
        "f64": w.double(),
        "int": torch.arange(100),
        "bool": torch.arange(100) % 3 == 0,
        "f32": w,
    }
    by_name = {fp.name: fp for fp in fingerprint_state_dict(state_dict)}
    assert by_name["f32"].bf16_hash is not None
    for name in ("f64", "int", "bool"):
        assert by_name[name].bf16_hash is None and by_name[name].bf16_via_fp16_hash is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_numpy_and_torch_cast_keys_agree_bit_for_bit(dtype: str) -> None:
    """Verify that numpy arrays (Keras weights) get the same cast keys as torch tensors, with
    rounding ties, subnormals, float16 overflow, infinities and signed zeros in them."""
    w = weights(3).reshape(-1)
    special = [1e-7, -1e-8, 6e-5, 7e4, -7e4, 65504.0, 65520.0, 3.0e38, float("inf"), -0.0, 0.0]
    w[: len(special)] = torch.tensor(special)
    # float32 values exactly half-way between two bfloat16 values: ties go to even
    w[20:28] = (torch.arange(8, dtype=torch.int32) * 2**16 + 0x3F808000).view(F32)
    tensor = w.to(getattr(torch, dtype))
    (t,) = fingerprint_state_dict({"w": tensor})
    (n,) = fingerprint_state_dict({"w": as_numpy(tensor)})
    assert (t.hash, t.bf16_hash, t.bf16_via_fp16_hash) == (
        n.hash,
        n.bf16_hash,
        n.bf16_via_fp16_hash,
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cast_keys_do_not_depend_on_the_block_size(
    monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """Verify that casting a tensor a block at a time (a few MB of scratch memory, however
    large the tensor) gives the keys of one whole-tensor cast, for torch and numpy, with a
    block boundary inside the tensor and a short last block."""
    from sqltrack_core import _cast_keys

    tensor = weights(6).to(getattr(torch, dtype))
    whole = [fingerprint_state_dict({"w": t})[0] for t in (tensor, as_numpy(tensor))]
    monkeypatch.setattr(_cast_keys, "_TORCH_BLOCK", 1000)  # 6144 elements: 7 blocks
    monkeypatch.setattr(_cast_keys, "_NUMPY_BLOCK", 1000)
    blocks = [fingerprint_state_dict({"w": t})[0] for t in (tensor, as_numpy(tensor))]
    assert blocks == whole
    assert whole[0].bf16_hash == whole[1].bf16_hash


def test_big_endian_arrays_hash_like_native_ones() -> None:
    """Verify that a numpy array stored big-endian hashes by its values, like a native one."""
    native = weights(7).numpy()
    (a,) = fingerprint_state_dict({"w": native})
    (b,) = fingerprint_state_dict({"w": native.astype(">f4")})
    assert (a.hash, a.bf16_hash, a.bf16_via_fp16_hash) == (
        b.hash,
        b.bf16_hash,
        b.bf16_via_fp16_hash,
    )


def test_training_changes_every_cast_key() -> None:
    """Verify that one small optimizer step leaves no cast key of the weights it changed."""
    model = mlp(0)
    before = {fp.name: fp for fp in fingerprint_state_dict(model.state_dict())}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(8, 32)).pow(2).mean().backward()
    opt.step()
    for fp in fingerprint_state_dict(model.state_dict()):
        old = before[fp.name]
        assert fp.bf16_hash not in {old.bf16_hash, old.bf16_via_fp16_hash}


def test_sampled_cast_keys_match_only_sampled_ones() -> None:
    """Verify that sampled cast keys match a cast copy sampled alike, not a full hash."""
    big = weights().reshape(-1)
    assert lookup(big.to(BF16), sample_above=100) in keys(big, sample_above=100)
    assert lookup(big.to(FP16), sample_above=100) in keys(big, sample_above=100)
    assert lookup(big.to(BF16), sample_above=100) not in keys(big)


# -- links -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "casts"),
    [
        ("bf16", ["float32->bfloat16"]),
        ("fp16", ["float32->float16"]),
        ("bf16->fp32", ["float32->float32"]),
        ("fp16->bf16", ["float32->bfloat16"]),
    ],
)
def test_a_cast_fine_tune_links_finetuned_from_with_the_cast(
    tracker: sqltrack.Tracker, tmp_path: Path, path: str, casts: list[str]
) -> None:
    """Verify that a bf16/fp16 copy of fp32 pre-trained weights links finetuned_from, fraction
    1.0, with the cast and the elements it matched in the evidence."""
    base, base_id, token = pretrain(tracker, tmp_path)
    copy = {k: cast(v, PATHS[path]) for k, v in state(base).items()}
    with tracker.start_run("finetune") as run:
        links = run.link_from_weights(copy)
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base_id)]
    evidence = links_of(tracker, run)[("finetuned_from", base_id)]
    assert evidence["fraction"] == pytest.approx(1.0)
    assert evidence["elements_matched_by_cast"] == evidence["elements_matched"] > 0
    assert evidence["casts"] == casts
    assert evidence["checkpoint_uuids"] == [token["checkpoint_uuid"]]


def test_an_exact_match_records_no_cast(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that an fp32 fine-tune of fp32 weights says no cast was needed."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    with tracker.start_run("finetune") as run:
        run.link_from_weights(state(base))
    evidence = links_of(tracker, run)[("finetuned_from", base_id)]
    assert (evidence["elements_matched_by_cast"], evidence["casts"]) == (0, [])


@pytest.mark.parametrize("child", ["fp32", "fp16"])
def test_bf16_pretraining_links_an_upcast_or_fp16_fine_tune(
    tracker: sqltrack.Tracker, child: str
) -> None:
    """Verify that weights trained and saved in bfloat16 link a fine-tune that loads them as
    float32 or float16."""
    model = mlp(0).to(BF16)
    with tracker.start_run("pretrain-bf16") as base:
        base.link_from_weights(model.state_dict())
        train(model)
        base.register_checkpoint(None, model.state_dict(), step=3)
    copy = {k: cast(v, PATHS[child]) for k, v in state(model).items()}
    with tracker.start_run("finetune") as run:
        links = run.link_from_weights(copy)
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base.id)]
    assert links[0].evidence["casts"] == [
        f"bfloat16->{copy['0.weight'].dtype}".replace("torch.", "")
    ]


def test_fresh_same_seed_models_cast_alike_link_nothing(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that same-seed fresh models, cast to bf16 or fp16, never credit each other."""
    runs = []
    for dtype in (BF16, FP16, BF16):
        model = mlp(0)
        with tracker.start_run("same-seed") as run:
            assert run.link_from_weights(model.state_dict()) == []  # recorded in float32
            model.to(dtype)  # cast after the initial weights were recorded
            run.register_checkpoint(None, model.state_dict(), step=1, kind="final")
        runs.append(run)
    assert (
        tracker.query("SELECT count(*) AS n FROM tensor_fingerprints WHERE produced")["n"][0] == 0
    )
    with tracker.start_run("third") as run:
        assert run.link_from_weights(mlp(0).to(FP16).state_dict()) == []
    assert all(links_of(tracker, r) == {} for r in runs)


def test_a_frozen_backbone_saved_in_bf16_still_credits_its_producer(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that a fine-tune that recorded fp32 weights, then trained its head in bf16 and
    saved bf16 weights, does not claim the frozen backbone: a later run that loads that
    checkpoint credits the backbone to the pre-training run and only the head to the fine-tune.
    """
    base, base_id, _ = pretrain(tracker, tmp_path)
    model = mlp(1)
    model.load_state_dict(state(base))
    with tracker.start_run("finetune-bf16") as ft:
        ft.link_from_weights(model.state_dict())
        model.to(BF16)
        train(model, only=head, seed=1)
        ft.register_checkpoint(None, model.state_dict(), step=3)
    produced = tracker.query(
        "SELECT name FROM tensor_fingerprints f JOIN checkpoints c ON c.id = f.checkpoint_id "
        "WHERE c.run_id = ? AND f.produced ORDER BY name",
        [ft.id],
    )["name"].tolist()
    assert produced == ["4.weight"]  # the head; its bias has fewer than MIN_NUMEL elements

    upcast = {k: v.float() for k, v in state(model).items()}
    with tracker.start_run("third") as run:
        links = {link.run_id: link for link in run.link_from_weights(upcast)}
    assert set(links) == {base_id, ft.id}
    assert links[base_id].kind == "finetuned_from"
    assert links[base_id].evidence["casts"] == ["float32->float32"]  # through bfloat16
    assert links[ft.id].kind == "initialized_from"
    assert links[ft.id].evidence["casts"] == ["bfloat16->float32"]


def test_sampled_fingerprints_link_through_a_cast(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that the sampled mode links a bf16 copy when both sides sample alike."""
    model = mlp(0)
    with tracker.start_run("pretrain") as base:
        base.link_from_weights(model.state_dict(), sample_above=500)
        train(model)
        base.register_checkpoint(None, model.state_dict(), step=3, sample_above=500)
    with tracker.start_run("finetune") as run:
        links = run.link_from_weights(model.to(BF16).state_dict(), sample_above=500)
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base.id)]
    assert links[0].evidence["casts"] == ["float32->bfloat16"]


def test_copied_cast_keys_still_link_after_sync(db_url: str, tmp_path: Path) -> None:
    """Verify that `sqltrack sync --from --to` copies the cast keys, so a bf16 fine-tune in
    the target database links to a run made elsewhere."""
    laptop = f"sqlite:///{tmp_path / 'laptop.db'}"
    elsewhere = sqltrack.connect(laptop)
    base, _, _ = pretrain(elsewhere, tmp_path)
    elsewhere.close()
    offline.copy_database(laptop, db_url)
    target = sqltrack.connect(db_url)
    try:
        base_id = target.run_id(str(target.runs(experiment="pretrain")["uuid"][0]))
        with target.start_run("finetune") as run:
            links = run.link_from_weights(base.to(BF16).state_dict())
        assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base_id)]
    finally:
        target.close()


def test_weights_registered_before_cast_keys_still_link_exactly(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that rows without cast keys (written before migration 0004) match exactly as
    before, and only exactly."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    tracker.backend.execute(
        tracker.backend.sql(
            "UPDATE tensor_fingerprints SET bf16_hash = NULL, bf16_via_fp16_hash = NULL"
        )
    )
    with tracker.start_run("exact") as run:
        assert [link.run_id for link in run.link_from_weights(state(base))] == [base_id]
    with tracker.start_run("cast") as run:
        assert run.link_from_weights(base.to(BF16).state_dict()) == []


def test_numpy_weights_link_through_a_cast(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that numpy bf16 arrays (Keras' bfloat16 policy) link to fp32 torch weights."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    arrays = {k: as_numpy(v.to(BF16)) for k, v in state(base).items()}
    assert np.asarray(arrays["0.weight"]).dtype.name == "bfloat16"
    with tracker.start_run("keras-like") as run:
        links = run.link_from_weights(arrays)
    assert [(link.kind, link.run_id) for link in links] == [("finetuned_from", base_id)]


# -- what is not recognised (README: "What a link survives") ---------------------------------


def test_quantised_merged_and_float64_weights_link_only_what_is_unchanged(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify the documented outcomes: an int8-quantised layer and a layer with a LoRA update
    merged into it credit nobody while the untouched layers keep crediting the base with
    their fraction; a float64 copy of the weights links nothing."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    weights_of = state(base)
    quantised = dict(weights_of)
    scale = weights_of["0.weight"].abs().max() / 127
    quantised["0.weight"] = torch.round(weights_of["0.weight"] / scale).to(torch.int8)
    merged = dict(weights_of)
    generator = torch.Generator().manual_seed(4)
    lora_a, lora_b = (
        torch.randn(2, 32, generator=generator),
        torch.randn(64, 2, generator=generator),
    )
    merged["0.weight"] = weights_of["0.weight"] + 0.01 * lora_b @ lora_a
    for name, changed in (("quantised", quantised), ("merged", merged)):
        with tracker.start_run(name) as run:
            links = run.link_from_weights(changed)
        expected = _share(weights_of, lambda key: key != "0.weight")
        assert [(link.run_id, link.evidence["fraction"]) for link in links] == [
            (base_id, pytest.approx(expected, abs=1e-6))
        ]
    with tracker.start_run("float64") as run:
        assert run.link_from_weights({k: v.double() for k, v in weights_of.items()}) == []


def _share(weights_of: dict[str, Any], select: Any) -> float:
    fingerprints = fingerprint_state_dict(weights_of)
    total = sum(fp.numel for fp in fingerprints)
    return sum(fp.numel for fp in fingerprints if select(fp.name)) / total


# -- weights with the token of the checkpoint they were loaded from ---------------------------


def test_weights_with_their_token_link_by_token_with_the_fraction(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that link_from_weights(token=...) makes the link to the token's run by token
    (checkpoint, step) and keeps the fingerprints' kind, fraction and casts beside it."""
    base, base_id, token = pretrain(tracker, tmp_path)
    copy = {k: v.to(BF16) for k, v in state(base).items() if not head(k)}  # a new head
    model = mlp(9)
    model.load_state_dict(copy, strict=False)
    with tracker.start_run("finetune") as run:
        [link] = run.link_from_weights(model.state_dict(), token=token)
    evidence = links_of(tracker, run)[("finetuned_from", base_id)]
    assert link.evidence == evidence
    assert (evidence["method"], evidence["checkpoint_uuid"], evidence["step"]) == (
        "token",
        token["checkpoint_uuid"],
        3,
    )
    assert 0.5 <= evidence["fraction"] < 1.0 and evidence["casts"] == ["float32->float32"]


def test_a_token_alone_links_when_no_fingerprint_matches(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that a token links finetuned_from (resumed_from when resumed) even when the
    weights match nothing (quantised, or trained on since), with no fraction claimed."""
    _, base_id, token = pretrain(tracker, tmp_path)
    for resumed, kind in ((False, "finetuned_from"), (True, "resumed_from")):
        with tracker.start_run("other") as run:
            [link] = run.link_from_weights(mlp(11).state_dict(), token=token, resumed=resumed)
        assert (link.kind, link.run_id) == (kind, base_id)
        evidence = links_of(tracker, run)[(kind, base_id)]
        assert evidence["method"] == "token" and "fraction" not in evidence


def test_a_token_of_a_run_elsewhere_is_ignored_and_a_bad_one_refused(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that a token whose run is not in this database leaves the fingerprints to
    decide, and that something that is not a token is refused at the call site, with the
    initial weights still recorded."""
    base, base_id, _ = pretrain(tracker, tmp_path)
    foreign = checkpoint_token(uuid.uuid4(), uuid.uuid4(), 5)
    with tracker.start_run("finetune") as run:
        for resumed, kind in ((False, "finetuned_from"), (True, "resumed_from")):
            links = run.link_from_weights(state(base), token=foreign, resumed=resumed)
            assert [(link.kind, link.run_id, link.evidence["method"]) for link in links] == [
                (kind, base_id, "fingerprint")
            ]
        with pytest.raises(ConfigurationError, match="not a sqltrack checkpoint token"):
            run.link_from_weights(state(base), token={"run_uuid": "nope"})


def test_a_token_in_safetensors_metadata_travels_with_the_file(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify the README's recipe: a token stored in a safetensors file's metadata, read back
    with safe_open, links by token; the same weights without it link by fingerprint."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open

    base, base_id, token = pretrain(tracker, tmp_path)
    path = tmp_path / "base.safetensors"
    safetensors_torch.save_file(state(base), path, metadata={"sqltrack": json.dumps(token)})
    weights = safetensors_torch.load_file(path)
    with safe_open(path, framework="pt") as file:
        carried = json.loads(file.metadata()["sqltrack"])
    with tracker.start_run("with-token") as run:
        [link] = run.link_from_weights(weights, token=carried)
    assert link.evidence["method"] == "token"
    assert link.evidence["checkpoint_uuid"] == token["checkpoint_uuid"]
    with tracker.start_run("without") as run:
        [link] = run.link_from_weights(weights)
    assert (link.run_id, link.evidence["method"]) == (base_id, "fingerprint")


def test_a_resume_token_names_the_one_parent(tracker: sqltrack.Tracker, tmp_path: Path) -> None:
    """Verify that resuming with a token links resumed_from the token's run alone, even when
    most weights are a frozen backbone another run produced."""
    base, _, _ = pretrain(tracker, tmp_path)
    model = mlp(1)
    model.load_state_dict(state(base))
    with tracker.start_run("finetune") as ft:
        ft.link_from_weights(model.state_dict())
        train(model, only=head, seed=1)
        token = ft.register_checkpoint(None, model.state_dict(), step=3)
    with tracker.start_run("resumed") as run:
        links = run.link_from_weights(state(model), token=token, resumed=True)
    assert [(link.kind, link.run_id) for link in links] == [("resumed_from", ft.id)]
    assert set(links_of(tracker, run)) == {("resumed_from", ft.id)}


def test_a_token_contradicted_by_the_weights_or_its_own_is_ignored(
    tracker: sqltrack.Tracker, tmp_path: Path
) -> None:
    """Verify that a token of run A given with weights the fingerprints credit to run B
    alone (loaded from A, then replaced) links B only, and that a run's own token is no
    parent; with infer=False a token links by itself."""
    _, a_id, a_token = pretrain(tracker, tmp_path / "a", seed=0)
    b_model, b_id, _ = pretrain(tracker, tmp_path / "b", seed=1)
    with tracker.start_run("replaced") as run:
        links = run.link_from_weights(state(b_model), token=a_token)
    assert [(link.run_id, link.evidence["method"]) for link in links] == [(b_id, "fingerprint")]
    with tracker.start_run("own") as run:
        own = run.register_checkpoint(None, state(b_model), step=0)
        links = run.link_from_weights(state(b_model), token=own)
    assert [link.run_id for link in links] == [b_id]
    with tracker.start_run("told") as run:
        [link] = run.link_from_weights(state(b_model), token=a_token, infer=False)
    assert (link.kind, link.run_id, link.evidence["method"]) == ("finetuned_from", a_id, "token")
