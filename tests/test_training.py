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
