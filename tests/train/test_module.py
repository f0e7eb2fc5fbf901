import pytest

from maskclf.config import SchedConfig
from maskclf.train.module import lr_multiplier


def test_cosine_with_warmup():
    cfg = SchedConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.0)
    total, per_epoch = 100, 10
    assert lr_multiplier(0, total, per_epoch, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, total, per_epoch, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, total, per_epoch, cfg) == pytest.approx(1.0)
    assert lr_multiplier(55, total, per_epoch, cfg) == pytest.approx(0.5)
    assert lr_multiplier(100, total, per_epoch, cfg) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule():
    cfg = SchedConfig(name="step", step_epochs=2, gamma=0.5)
    assert lr_multiplier(19, 100, 10, cfg) == 1.0
    assert lr_multiplier(20, 100, 10, cfg) == 0.5
    assert lr_multiplier(45, 100, 10, cfg) == 0.25


def test_constant_schedule():
    assert lr_multiplier(50, 100, 10, SchedConfig(name="none")) == 1.0


def test_mixup_yields_soft_targets():
    import torch

    from maskclf.config import AugConfig
    from maskclf.train.module import build_mixup

    assert build_mixup(AugConfig()) is None
    mixup = build_mixup(AugConfig(mixup_alpha=0.4, mix_prob=1.0))
    torch.manual_seed(0)
    images = torch.rand(4, 3, 8, 8)
    mixed, targets = mixup(images.clone(), torch.tensor([0, 5, 11, 17]))
    assert targets.shape == (4, 18)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert ((targets > 0).sum(1) == 2).all()  # each row mixes two classes
    assert not torch.equal(mixed, images)


@pytest.mark.parametrize("name", ["lamb", "lion", "adan"])
def test_any_timm_optimizer_with_layer_decay(name):
    from maskclf.models.factory import build_net
    from maskclf.models.spec import resolve_specs
    from maskclf.train.module import build_module
    from tests.conftest import tiny_config

    spec = resolve_specs(tiny_config(f"optim.name={name}", "optim.layer_decay=0.5",
                                     "sched.name=plateau"))[0]  # plateau needs no Trainer
    module = build_module(spec, build_net(spec))
    optimizer = module.configure_optimizers()["optimizer"]
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert type(optimizer).__name__.lower().startswith(name)
    assert len(scales) > 2 and scales[-1] == 1.0 and scales[0] < 0.5  # earlier layers slower


def test_ema_updates_once_per_optimizer_step_with_accumulation():
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from maskclf.models.factory import build_net
    from maskclf.models.spec import resolve_specs
    from maskclf.train.module import build_module
    from tests.conftest import tiny_config

    spec = resolve_specs(tiny_config("train.ema=true", "train.accumulate=2",
                                     "sched.name=none"))[0]
    module = build_module(spec, build_net(spec))
    updates = []
    real_update = module.ema.update
    module.ema.update = lambda net: (updates.append(1), real_update(net))
    images = torch.randint(0, 255, (5 * 4, 64, 48, 3), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.arange(20) % 18), batch_size=4)
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=2, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, loader)
    assert trainer.global_step == 3  # 5 batches, 2 per step: 2 full steps and the last batch
    assert len(updates) == trainer.global_step
