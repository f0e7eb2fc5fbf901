"""Each head mode trains a tiny model and predicts 18-class probabilities; EMA is saved."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from maskclf.labels import CLASS_COLUMNS
from maskclf.models.factory import build_net, load_net
from maskclf.models.spec import resolve_specs
from maskclf.predict.workflows import predict_run
from maskclf.train.execute import train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains real (tiny) models end to end


@pytest.mark.parametrize("head", ["single", "multihead", "per_attribute"])
def test_head_mode_trains_and_predicts_distributions(head, synthetic_root, tmp_path):
    overrides = [f"model.head={head}", "train.epochs=2", "data.val_ratio=0.3"]
    if head == "per_attribute":
        overrides.append("per_attribute={age: {data: {image_size: [48, 40]}, train: {epochs: 1}}}")
    result = train_run(tiny_config(*overrides), synthetic_root, tmp_path, head,
                       interactive=False)
    predicted = predict_run(result.run, synthetic_root)
    table = pd.read_csv(predicted.predictions)
    probs = table[CLASS_COLUMNS].to_numpy()
    assert probs.shape == (14, 18)
    assert abs(probs.sum(axis=1) - 1).max() < 1e-4
    oof = pd.read_csv(result.run / "oof.csv")
    assert abs(oof[CLASS_COLUMNS].sum(axis=1) - 1).max() < 1e-4
    if head == "per_attribute":
        for attribute in ("mask", "gender", "age"):
            assert (result.run / attribute / "fold0/checkpoints/best.ckpt").is_file()
        listed = result.summary["folds"][0]["checkpoints"]
        assert [Path(c).parts[-4] for c in listed] == ["mask", "gender", "age"]
        age_metrics = pd.read_csv(result.run / "age" / "fold0" / "metrics.csv")
        assert age_metrics["epoch"].max() == 0  # its own epochs


def test_ema_weights_differ_and_are_the_ones_used(synthetic_root, tmp_path):
    cfg = tiny_config("train.ema=true", "train.ema_decay=0.5", "train.epochs=2",
                      "data.val_ratio=0.3")
    result = train_run(cfg, synthetic_root, tmp_path, "ema", interactive=False)
    checkpoint = result.run / "fold0/checkpoints/best.ckpt"
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    raw = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    ema = {k.removeprefix("ema.module."): v for k, v in state.items()
           if k.startswith("ema.module.")}
    assert raw.keys() == ema.keys()
    floats = [k for k, v in raw.items() if v.is_floating_point()]
    assert any(not torch.equal(raw[k], ema[k]) for k in floats)
    loaded = load_net(checkpoint).net.state_dict()
    for key in floats:
        torch.testing.assert_close(loaded[key], ema[key])


def test_training_tricks_run_together(synthetic_root, tmp_path):
    cfg = tiny_config("aug.mixup_alpha=0.4", "aug.cutmix_alpha=1.0", "aug.mix_off_epoch=1",
                      "model.freeze_epochs=1", "train.accumulate=2", "train.grad_clip=1.0",
                      "sched.name=plateau", "optim.name=sgd", "train.epochs=2",
                      "loss.name={focal: 1.0, soft_f1: 0.5}", "data.val_ratio=0.3")
    result = train_run(cfg, synthetic_root, tmp_path, "tricks", interactive=False)
    metrics = pd.read_csv(result.run / "fold0" / "metrics.csv")
    assert metrics["val/f1"].notna().sum() == 2
    assert any(c.startswith("lr-") for c in metrics.columns)


def test_frozen_backbone_does_not_move_but_head_does(synthetic_root, tmp_path):
    import lightning as L

    cfg = tiny_config("model.freeze_epochs=1", "data.val_ratio=0")
    L.seed_everything(cfg.seed, verbose=False)
    initial = dict(build_net(resolve_specs(cfg)[0]).named_parameters())
    result = train_run(cfg, synthetic_root, tmp_path, "frozen", interactive=False)
    trained = load_net(result.run / "fold0/checkpoints/last.ckpt").net
    head = {f"{trained.default_cfg['classifier']}.{name}"
            for name, _ in trained.get_classifier().named_parameters()}
    for name, parameter in trained.named_parameters():
        moved = not torch.equal(parameter.detach(), initial[name].detach())
        assert moved == (name in head), name
