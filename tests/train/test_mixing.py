"""Half-face mixing (the 2022 winner's CutMix at the vertical midline)."""

import numpy as np
import pandas as pd
import pytest

from maskclf.config import ConfigError
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


def _batch():
    import torch

    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 4, 10).clone()
    return images, torch.tensor([0, 0, 5, 5, 17, 9])  # image i is filled with the value i


def test_half_face_mix_joins_a_left_and_a_right_part_with_matching_targets():
    import torch

    from maskclf.models.heads import attribute_targets
    from maskclf.train.mixing import HalfFaceMix

    torch.manual_seed(0)
    images, targets = _batch()
    mixed, soft = HalfFaceMix(prob=1.0, within_class=False, lam=(0.5, 0.5))(images, targets)
    left, right = mixed[:, 0, 0, :5], mixed[:, 0, 0, 5:]
    assert (left == torch.arange(6.0)[:, None]).all()  # the left half stays each image's own
    partner = right[:, 0].long()
    assert (right == partner[:, None].float()).all() and not (partner == torch.arange(6)).all()
    expected = 0.5 * torch.nn.functional.one_hot(targets, 18) + 0.5 * torch.nn.functional.one_hot(
        targets[partner], 18)
    torch.testing.assert_close(soft, expected.float())
    marginals = attribute_targets(soft)  # what multihead and attribute heads train on
    torch.testing.assert_close(marginals["mask"].sum(1), torch.ones(6))
    assert torch.equal(HalfFaceMix(0.0, False, (0.5, 0.5))(images, targets)[0], images)


def test_within_class_partners_share_the_class_so_targets_stay_hard():
    import torch

    from maskclf.train.mixing import HalfFaceMix

    torch.manual_seed(1)
    images, targets = _batch()
    mixed, soft = HalfFaceMix(1.0, True, (0.4, 0.6))(images, targets)
    partner = mixed[:, 0, 0, -1].long()
    assert torch.equal(targets[partner], targets)
    torch.testing.assert_close(soft, torch.nn.functional.one_hot(targets, 18).float())
    assert partner[4] == 4 and partner[5] == 5  # alone in its class: its own partner


def test_half_face_mix_is_built_from_the_config_and_default_mixing_is_unchanged():
    from maskclf.train.mixing import HalfFaceMix
    from maskclf.train.module import build_mixup

    cfg = tiny_config("aug.cutmix_mode=vertical_half", "aug.mix_prob=0.3",
                      "aug.cutmix_within_class=true")
    mix = build_mixup(cfg.aug)
    assert isinstance(mix, HalfFaceMix) and (mix.prob, mix.within_class) == (0.3, True)
    assert build_mixup(tiny_config().aug) is None
    with pytest.raises(ConfigError, match="half_lambda"):
        tiny_config("aug.half_lambda=[0.7, 0.2]")


@pytest.mark.slow
def test_a_multihead_run_trains_with_half_face_mixing_and_repeats(synthetic_root, tmp_path):
    cfg = tiny_config("model.head=multihead", "aug.cutmix_mode=vertical_half",
                      "aug.mix_prob=0.5", "train.epochs=2")
    first = train_run(cfg, synthetic_root, tmp_path, "a", interactive=False)
    second = train_run(cfg, synthetic_root, tmp_path, "b", interactive=False)
    assert first.summary["validation"] == second.summary["validation"]  # seeded
    metrics = pd.read_csv(first.run / "fold0" / "metrics.csv")
    assert np.isfinite(metrics["train/loss_epoch"].dropna()).all()


def test_half_face_mix_mixes_ages_with_the_targets_shares():
    import torch

    from maskclf.train.mixing import HalfFaceMix

    torch.manual_seed(0)
    images, targets = _batch()
    ages = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    mixed, soft, mixed_ages = HalfFaceMix(1.0, False, (0.3, 0.3)).mix(images, targets, ages)
    partner = mixed[:, 0, 0, -1].long()
    torch.testing.assert_close(mixed_ages, 0.3 * ages + 0.7 * ages[partner])
