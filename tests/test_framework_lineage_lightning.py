"""Lineage through what Lightning fine-tunes do to weights (issue 14): ``bf16-true`` and
``16-true`` casts, ``load_from_checkpoint`` tokens, frozen backbones, and LoRA adapters (PEFT).

Real Trainers on both backends, read back from ``run_links``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import torch
from _integration import links
from _lightning_models import TinyModel, make_trainer, regression_data
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from sqltrack_core.provenance import fingerprint_state_dict
from sqltrack_integrations.lightning import SQLTrackLogger

pytestmark = [
    pytest.mark.usefixtures("no_sqltrack_warnings"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CASTS = {"bf16-true": "float32->bfloat16", "16-true": "float32->float16"}


def fit(
    root: Path, url: str, model: Any, experiment: str, **trainer_kwargs: Any
) -> tuple[SQLTrackLogger, Trainer]:
    logger = SQLTrackLogger(experiment, url)
    trainer = make_trainer(root, logger, **trainer_kwargs)
    trainer.fit(model, regression_data(), regression_data(seed=1))
    return logger, trainer


def pretrain(root: Path, url: str, seed: int = 0) -> tuple[SQLTrackLogger, str]:
    """An fp32 pre-training run; returns its logger and its best checkpoint's path."""
    seed_everything(seed)
    logger, trainer = fit(root / "pre", url, TinyModel(), "pretrain")
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)
    return logger, str(callback.best_model_path)


def token_of(path: str) -> dict[str, Any]:
    token: dict[str, Any] = torch.load(path, weights_only=True)["sqltrack"]
    return token


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_a_half_precision_fine_tune_of_fp32_weights_links_by_fingerprint(
    db_url: str, tmp_path: Path, precision: str
) -> None:
    """Verify that load_state_dict of an fp32 checkpoint, then a bf16-true or 16-true fit (the
    module is cast before on_fit_start), links finetuned_from with the cast in the evidence."""
    base, path = pretrain(tmp_path, db_url)
    seed_everything(1)
    model = TinyModel()
    model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    logger, _ = fit(tmp_path / "ft", db_url, model, "finetune", precision=precision)
    found = links(db_url, logger.run_id)
    assert list(found) == [("finetuned_from", base.run_id)]
    evidence = found[("finetuned_from", base.run_id)]
    assert evidence["method"] == "fingerprint" and evidence["fraction"] == pytest.approx(1.0)
    assert evidence["casts"] == [CASTS[precision]]
    assert evidence["elements_matched_by_cast"] == evidence["elements_matched"] > 0
    assert evidence["checkpoint_uuids"] == [token_of(path)["checkpoint_uuid"]]


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_load_from_checkpoint_links_by_token_before_the_cast(
    db_url: str, tmp_path: Path, precision: str
) -> None:
    """Verify that Module.load_from_checkpoint(path) of a checkpoint with our token links by
    that token (checkpoint and step), with the fingerprints' fraction and cast beside it."""
    base, path = pretrain(tmp_path, db_url)
    model = TinyModel.load_from_checkpoint(path)
    logger, _ = fit(tmp_path / "ft", db_url, model, "finetune", precision=precision)
    found = links(db_url, logger.run_id)
    assert list(found) == [("finetuned_from", base.run_id)]
    evidence = found[("finetuned_from", base.run_id)]
    token = token_of(path)
    assert evidence["method"] == "token"
    assert (evidence["checkpoint_uuid"], evidence["step"]) == (
        token["checkpoint_uuid"],
        token["step"],
    )
    assert evidence["fraction"] == pytest.approx(1.0) and evidence["casts"] == [CASTS[precision]]


def test_the_token_is_used_by_one_fit_only(db_url: str, tmp_path: Path) -> None:
    """Verify that a second fit of the same loaded module (its weights now its own) does not
    link to the checkpoint it was loaded from again."""
    base, path = pretrain(tmp_path, db_url)
    model = TinyModel.load_from_checkpoint(path)
    first, _ = fit(tmp_path / "ft1", db_url, model, "finetune")
    second, _ = fit(tmp_path / "ft2", db_url, model, "again")
    assert list(links(db_url, first.run_id)) == [("finetuned_from", base.run_id)]
    assert list(links(db_url, second.run_id)) == [("finetuned_from", first.run_id)]
    assert links(db_url, second.run_id)[("finetuned_from", first.run_id)]["method"] == (
        "fingerprint"
    )


class OwnLoadHook(TinyModel):
    """A module that overrides on_load_checkpoint without calling super()."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loaded_keys = sorted(checkpoint)


def test_a_module_with_its_own_load_hook_links_by_fingerprint(db_url: str, tmp_path: Path) -> None:
    """Verify that a module whose on_load_checkpoint keeps no token is still linked through
    a bf16-true cast, by its weights, and that its own hook still ran."""
    seed_everything(0)
    logger, trainer = fit(tmp_path / "pre", db_url, OwnLoadHook(), "pretrain")
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)
    model = OwnLoadHook.load_from_checkpoint(callback.best_model_path)
    assert "sqltrack" in model.loaded_keys
    ft, _ = fit(tmp_path / "ft", db_url, model, "finetune", precision="bf16-true")
    evidence = links(db_url, ft.run_id)[("finetuned_from", logger.run_id)]
    assert evidence["method"] == "fingerprint" and evidence["casts"] == ["float32->bfloat16"]


def test_fresh_same_seed_models_in_bf16_link_nothing(db_url: str, tmp_path: Path) -> None:
    """Verify that fresh models of one seed, each fit in bf16-true, link to nothing."""
    ids = []
    for name in ("a", "b", "c"):
        seed_everything(3)
        logger, _ = fit(tmp_path / name, db_url, TinyModel(), name, precision="bf16-true")
        ids.append(logger.run_id)
    assert all(links(db_url, run_id) == {} for run_id in ids)


def test_frozen_backbone_in_bf16_credits_pretraining(db_url: str, tmp_path: Path) -> None:
    """Verify that two bf16-true fine-tunes sharing a frozen fp32 backbone link to the
    pre-training run, not to each other, and that a run loading the first one's bf16
    checkpoint credits the backbone to pre-training and only the head to that fine-tune."""
    base, path = pretrain(tmp_path, db_url)
    tuned = []
    for name in ("ft1", "ft2"):
        model = TinyModel.load_from_checkpoint(path, freeze_backbone=True)
        logger, trainer = fit(tmp_path / name, db_url, model, name, precision="bf16-true")
        assert list(links(db_url, logger.run_id)) == [("finetuned_from", base.run_id)]
        callback = trainer.checkpoint_callback
        assert isinstance(callback, ModelCheckpoint)
        tuned.append((logger, str(callback.best_model_path)))
    (ft1, ft1_path), _ = tuned

    seed_everything(5)
    model = TinyModel()  # fp32; loads the bf16 weights by upcasting them
    model.load_state_dict(torch.load(ft1_path, weights_only=True)["state_dict"])
    third, _ = fit(tmp_path / "third", db_url, model, "third")
    found = links(db_url, third.run_id)
    assert set(found) == {("finetuned_from", base.run_id), ("initialized_from", ft1.run_id)}
    assert found[("initialized_from", ft1.run_id)]["tensors_matched"] == 1  # head.weight
    total = sum(evidence["fraction"] for evidence in found.values())
    assert total == pytest.approx(1.0)


peft = pytest.importorskip("peft")


class LoraModel(TinyModel):
    """TinyModel whose backbone carries LoRA adapters (real PEFT): the base frozen, the
    adapters trained."""

    def __init__(self, base: dict[str, Any] | None = None, adapters: str | None = None) -> None:
        super().__init__()
        if base is not None:
            self.load_state_dict(base)
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"])
        if adapters is None:
            self.backbone = peft.get_peft_model(self.backbone, config)
        else:
            self.backbone = peft.PeftModel.from_pretrained(
                self.backbone, adapters, is_trainable=True
            )
        self.head.requires_grad_(False)


def test_lora_adapters_link_to_the_base_and_to_the_adapter_run(db_url: str, tmp_path: Path) -> None:
    """Verify that a LoRA fine-tune links finetuned_from the run that produced its base, with
    the base's share of the elements as the fraction, and that a run loading those adapters
    (saved alone, as adapter_model.safetensors) links to the adapter run as well."""
    base, path = pretrain(tmp_path, db_url)
    state = torch.load(path, weights_only=True)["state_dict"]
    seed_everything(1)
    model = LoraModel(state)
    expected = _share(model, lambda name: "lora_" not in name)
    lora, _ = fit(tmp_path / "lora", db_url, model, "lora")
    found = links(db_url, lora.run_id)
    assert list(found) == [("finetuned_from", base.run_id)]
    assert found[("finetuned_from", base.run_id)]["fraction"] == pytest.approx(expected, abs=1e-6)
    assert 0.5 <= expected < 1.0
    adapters = tmp_path / "adapters"
    model.backbone.save_pretrained(adapters)
    assert (adapters / "adapter_model.safetensors").is_file()

    seed_everything(2)
    reloaded = LoraModel(state, adapters=str(adapters))
    trained = _share(reloaded, lambda name: "lora_" in name)  # lora_B is no longer all zeros
    again, _ = fit(tmp_path / "again", db_url, reloaded, "again")
    found = links(db_url, again.run_id)
    assert set(found) == {("finetuned_from", base.run_id), ("initialized_from", lora.run_id)}
    assert found[("initialized_from", lora.run_id)]["fraction"] == pytest.approx(trained, abs=1e-6)
    assert found[("finetuned_from", base.run_id)]["fraction"] == pytest.approx(
        1 - trained, abs=1e-6
    )


def _share(model: Any, select: Any) -> float:
    """The share of the fingerprinted elements of `model` in the tensors `select` keeps."""
    fingerprints = fingerprint_state_dict(model.state_dict())
    total = sum(fp.numel for fp in fingerprints)
    return sum(fp.numel for fp in fingerprints if select(fp.name)) / total
