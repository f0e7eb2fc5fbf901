import pytest

from maskclf.config import SchedConfig
from maskclf.training import lr_multiplier


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
    from maskclf.training import build_mixup

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
    from maskclf.models import build_net, resolve_specs
    from maskclf.training import build_module

    from .conftest import tiny_config

    spec = resolve_specs(tiny_config(f"optim.name={name}", "optim.layer_decay=0.5",
                                     "sched.name=plateau"))[0]  # plateau needs no Trainer
    module = build_module(spec, build_net(spec))
    optimizer = module.configure_optimizers()["optimizer"]
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert type(optimizer).__name__.lower().startswith(name)
    assert len(scales) > 2 and scales[-1] == 1.0 and scales[0] < 0.5  # earlier layers slower
