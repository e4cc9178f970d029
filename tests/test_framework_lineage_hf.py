"""Lineage through the ways Hugging Face users load weights (issue 14), with real Trainers.

Every run is a real `Trainer.train()` with `SQLTrackCallback`, on SQLite and on PostgreSQL; the
links are read back from ``run_links``. Covered: a half-precision fine-tune of bare fp32 weights
whose token was lost, sharded safetensors (through `from_pretrained` and loaded by hand), LoRA
adapters with real `peft` (on an fp32 and on a bf16 base), and same-seed fresh models that must
not link. The cast keys themselves are tested in test_provenance_casts.py.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("safetensors")

import torch
from _hf_models import TokenData, tiny_config, training_args
from _integration import links, query
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import BertForMaskedLM, Trainer

from sqltrack_core.provenance import TensorFingerprint, fingerprint_state_dict
from sqltrack_integrations.transformers import SQLTrackCallback

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

#: a BERT of about 300 KB of float32 weights: four shards at max_shard_size="100KB"
WIDER = {"hidden_size": 64, "intermediate_size": 128}
#: the attention projections of BertSelfAttention, for LoRA
LORA_TARGETS = ["query", "value"]


@dataclass
class Pretrained:
    """A tracked masked-LM pre-training run and the weights it started from and ended with."""

    run_id: int
    run_uuid: str
    model: BertForMaskedLM  # trained
    trainer: Trainer
    initial: list[TensorFingerprint]

    def produced_cast_keys(self) -> set[str]:
        """The `bf16_hash` of every tensor pre-training changed (what it *produced*): a copy of
        one of them in float32 or bfloat16 has the same key."""
        before = {fp.hash for fp in self.initial}
        after = fingerprint_state_dict(self.model.state_dict())
        return {str(fp.bf16_hash) for fp in after if fp.hash not in before}


def run_id(callback: SQLTrackCallback) -> int:
    found = callback.run_id
    assert found is not None
    return found


def train(
    model: Any, url: str, output_dir: Path, experiment: str, **args: Any
) -> tuple[SQLTrackCallback, Trainer]:
    """One epoch (4 steps, a checkpoint at the last) of masked-LM training, tracked."""
    callback = SQLTrackCallback(experiment, url)
    settings: dict[str, Any] = {"num_train_epochs": 1, **args}
    trainer = Trainer(
        model=model,
        args=training_args(output_dir, **settings),
        train_dataset=TokenData("mlm"),
        callbacks=[callback],
    )
    trainer.train()
    return callback, trainer


def pretrain(tmp_path: Path, url: str, **config: Any) -> Pretrained:
    """Fresh fp32 weights from seed 0, pre-trained with the callback."""
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(**config))
    initial = fingerprint_state_dict(model.state_dict())
    callback, trainer = train(model, url, tmp_path / "pre-out", "pretrain")
    return Pretrained(run_id(callback), str(callback.run_uuid), model, trainer, initial)


def share(fingerprints: list[TensorFingerprint], keys: set[str], *, cast: bool = True) -> float:
    """The share of the fingerprinted elements whose `bf16_hash` (or exact hash) is in `keys`."""
    total = sum(fp.numel for fp in fingerprints)
    matched = sum(fp.numel for fp in fingerprints if (fp.bf16_hash if cast else fp.hash) in keys)
    return matched / total


def produced_names(url: str, run: int) -> set[str]:
    rows = query(
        url,
        "SELECT DISTINCT f.name FROM tensor_fingerprints f "
        f"JOIN checkpoints c ON c.id = f.checkpoint_id WHERE c.run_id = {int(run)} AND f.produced",
    )
    return {str(name) for (name,) in rows}


def finite_losses(trainer: Trainer) -> list[float]:
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    return losses


# -- casts: the token is lost, the weights are loaded in half precision -------------------------


@pytest.mark.parametrize(
    ("dtype", "cast", "argument"),
    [
        (torch.bfloat16, "float32->bfloat16", "dtype"),
        (torch.float16, "float32->float16", "dtype"),
        (torch.bfloat16, "float32->bfloat16", "torch_dtype"),  # the older spelling
    ],
    ids=["bf16", "fp16", "torch_dtype-bf16"],
)
def test_a_half_precision_finetune_of_bare_weights_links_by_cast(
    db_url: str, tmp_path: Path, dtype: torch.dtype, cast: str, argument: str
) -> None:
    """Verify that only model.safetensors of an fp32 pre-training, next to a config.json
    without the token, loaded with from_pretrained(dtype= or torch_dtype= bf16 or fp16) and
    trained on the CPU, links finetuned_from the pre-training run through the cast."""
    base = pretrain(tmp_path, db_url)
    base.trainer.save_model(str(tmp_path / "base"))
    assert json.loads((tmp_path / "base" / "config.json").read_text())["sqltrack"]
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tmp_path / "base" / "model.safetensors", bare)
    tiny_config().save_pretrained(bare)  # a config of its own: the token is lost
    assert "sqltrack" not in json.loads((bare / "config.json").read_text())

    model = BertForMaskedLM.from_pretrained(bare, **{argument: dtype})
    assert model.dtype == dtype and getattr(model.config, "sqltrack", None) is None
    callback, trainer = train(model, db_url, tmp_path / "ft", "finetune")
    assert model.dtype == dtype and len(finite_losses(trainer)) == 4

    found = links(db_url, run_id(callback))
    assert list(found) == [("finetuned_from", base.run_id)]
    evidence = found[("finetuned_from", base.run_id)]
    assert evidence["method"] == "fingerprint" and evidence["casts"] == [cast]
    assert evidence["elements_matched_by_cast"] == evidence["elements_matched"] > 0
    assert evidence["fraction"] == pytest.approx(1.0)


# -- sharded safetensors -----------------------------------------------------------------------


def save_sharded(base: Pretrained, folder: Path) -> list[Path]:
    """save_pretrained in 100 KB shards; return the shard files the index names."""
    base.model.save_pretrained(folder, max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted({folder / name for name in index["weight_map"].values()})
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()
    return shards


def test_from_pretrained_of_sharded_weights_links_finetuned_from(
    db_url: str, tmp_path: Path
) -> None:
    """Verify that from_pretrained of a sharded save_pretrained folder (an index and several
    safetensors shards) carries the token in config.json and links finetuned_from."""
    base = pretrain(tmp_path, db_url, **WIDER)
    save_sharded(base, tmp_path / "sharded")
    model = BertForMaskedLM.from_pretrained(tmp_path / "sharded")
    assert model.config.sqltrack["run_uuid"] == base.run_uuid
    callback, _ = train(model, db_url, tmp_path / "ft", "finetune")
    found = links(db_url, run_id(callback))
    assert list(found) == [("finetuned_from", base.run_id)]
    assert found[("finetuned_from", base.run_id)]["fraction"] == pytest.approx(1.0)


def test_shards_loaded_by_hand_into_a_fresh_model_link_by_fingerprint(
    db_url: str, tmp_path: Path
) -> None:
    """Verify that every shard read with safetensors' load_file, merged into one dict and
    loaded with load_state_dict(strict=False) into a model built from a token-less config,
    links finetuned_from by fingerprint (the tied decoder weight is absent from the shards)."""
    base = pretrain(tmp_path, db_url, **WIDER)
    merged: dict[str, torch.Tensor] = {}
    for shard in save_sharded(base, tmp_path / "sharded"):
        merged.update(load_file(str(shard)))
    torch.manual_seed(7)
    model = BertForMaskedLM(tiny_config(**WIDER))
    result = model.load_state_dict(merged, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {
        "cls.predictions.decoder.weight",
        "cls.predictions.decoder.bias",
    }
    callback, _ = train(model, db_url, tmp_path / "ft", "finetune")
    found = links(db_url, run_id(callback))
    assert list(found) == [("finetuned_from", base.run_id)]
    evidence = found[("finetuned_from", base.run_id)]
    assert evidence["method"] == "fingerprint" and evidence["casts"] == []
    assert evidence["fraction"] == pytest.approx(1.0)


# -- PEFT / LoRA ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "casts"),
    [(torch.float32, []), (torch.bfloat16, ["float32->bfloat16"])],
    ids=["fp32-base", "bf16-base"],
)
def test_lora_adapters_link_to_the_base_and_then_to_the_adapter_run(
    db_url: str, tmp_path: Path, dtype: torch.dtype, casts: list[str]
) -> None:
    """Verify that LoRA training on a pre-trained base (run B) links finetuned_from the base's
    run A with the base's share of the elements, and that a run C that loads the base plus B's
    saved adapter links finetuned_from A and initialized_from B, the shares summing to 1; with
    the base loaded in bf16 (adapters kept in fp32) the links to A name the cast."""
    base = pretrain(tmp_path, db_url)
    base.trainer.save_model(str(tmp_path / "base"))
    from_base = base.produced_cast_keys()

    # B: adapters on the base, only they train
    model = get_peft_model(
        BertForMaskedLM.from_pretrained(tmp_path / "base", dtype=dtype),
        LoraConfig(r=4, target_modules=LORA_TARGETS),
    )
    start = fingerprint_state_dict(model.state_dict())
    lora = {fp.name for fp in start if "lora_" in fp.name}
    assert lora and {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {
        torch.float32
    }
    expected = share(start, from_base)
    assert 0.5 < expected < 1
    # the elements the base does not account for are the adapters' (lora_B starts at zero,
    # which is not fingerprinted)
    assert sum(fp.numel for fp in start if fp.name in lora) == pytest.approx(
        (1 - expected) * sum(fp.numel for fp in start)
    )
    adapter_run, trainer = train(model, db_url, tmp_path / "b-out", "lora")
    finite_losses(trainer)
    found = links(db_url, run_id(adapter_run))
    assert list(found) == [("finetuned_from", base.run_id)]
    evidence = found[("finetuned_from", base.run_id)]
    assert evidence["fraction"] == pytest.approx(expected, abs=1e-6)
    assert evidence["casts"] == casts
    assert (evidence["elements_matched_by_cast"] > 0) == bool(casts)
    produced = produced_names(db_url, run_id(adapter_run))
    assert produced and all("lora_" in name for name in produced)  # the frozen base is A's

    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(str(adapter_dir))
    assert (adapter_dir / "adapter_model.safetensors").exists()
    assert not (adapter_dir / "model.safetensors").exists()
    from_adapter = {
        fp.hash
        for fp in fingerprint_state_dict(load_file(str(adapter_dir / "adapter_model.safetensors")))
    }

    # C: the base again, plus B's adapter, trained further
    resumed = PeftModel.from_pretrained(
        BertForMaskedLM.from_pretrained(tmp_path / "base", dtype=dtype),
        adapter_dir,
        is_trainable=True,
    )
    start = fingerprint_state_dict(resumed.state_dict())
    expected_base = share(start, from_base)
    expected_adapter = share(start, from_adapter, cast=False)
    assert expected_base + expected_adapter == pytest.approx(1.0)
    continued, _ = train(resumed, db_url, tmp_path / "c-out", "lora-continued")
    found = links(db_url, run_id(continued))
    assert set(found) == {
        ("finetuned_from", base.run_id),
        ("initialized_from", run_id(adapter_run)),
    }
    to_base = found[("finetuned_from", base.run_id)]
    to_adapter = found[("initialized_from", run_id(adapter_run))]
    assert to_base["fraction"] == pytest.approx(expected_base, abs=1e-6)
    assert to_adapter["fraction"] == pytest.approx(expected_adapter, abs=1e-6)
    assert to_base["fraction"] + to_adapter["fraction"] == pytest.approx(1.0, abs=1e-5)
    assert to_base["casts"] == casts and to_adapter["casts"] == []


# -- no false links --------------------------------------------------------------------------------


def test_same_seed_fresh_bf16_models_link_nothing(db_url: str, tmp_path: Path) -> None:
    """Verify that three runs that start from the same fresh seed-0 weights cast to bf16 (two
    trained the same way first, then a third) link to none of each other."""
    runs = []
    for name in ("first", "second", "third"):
        torch.manual_seed(0)
        model = BertForMaskedLM(tiny_config()).bfloat16()  # model.to(torch.bfloat16)
        callback, trainer = train(model, db_url, tmp_path / name, name)
        assert model.dtype == torch.bfloat16
        finite_losses(trainer)
        runs.append(run_id(callback))
    starts = query(
        db_url,
        "SELECT c.run_id, f.name, f.hash, f.dtype FROM tensor_fingerprints f "
        "JOIN checkpoints c ON c.id = f.checkpoint_id WHERE c.kind = 'initial'",
    )
    by_run: dict[int, set[tuple[str, str]]] = {run: set() for run in runs}
    for run, name, hash_, dtype in starts:
        assert dtype == "bfloat16"
        by_run[int(run)].add((name, hash_))
    assert by_run[runs[0]] and by_run[runs[0]] == by_run[runs[1]] == by_run[runs[2]]
    assert all(produced_names(db_url, run) for run in runs)  # training changed the weights
    assert query(db_url, "SELECT from_run_id, kind, to_run_id FROM run_links") == []
