import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclf.config import LossConfig
from maskclf.models.losses import class_weights, create_loss, list_losses

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
TARGETS = torch.tensor([0, 2, 1])


def _loss(**kwargs):
    return create_loss(LossConfig(**kwargs))


def test_registry_lists_every_loss():
    assert list_losses() == ["cross_entropy", "focal", "label_smoothing", "soft_f1"]


@pytest.mark.parametrize("num_classes", [2, 3, 18])
def test_cross_entropy_matches_torch_for_any_class_count(num_classes):
    logits = torch.randn(6, num_classes, generator=torch.Generator().manual_seed(num_classes))
    targets = torch.arange(6) % num_classes
    expected = F.cross_entropy(logits, targets)
    torch.testing.assert_close(_loss(name="cross_entropy")(logits, targets), expected)


def test_focal_with_gamma_zero_is_cross_entropy():
    torch.testing.assert_close(_loss(name="focal", gamma=0.0)(LOGITS, TARGETS),
                               F.cross_entropy(LOGITS, TARGETS))


def test_focal_hand_computed():
    p = torch.softmax(LOGITS, 1)[torch.arange(3), TARGETS]
    expected = (0.25 * (1 - p) ** 2 * -torch.log(p)).mean()
    torch.testing.assert_close(_loss(name="focal", gamma=2.0, alpha=0.25)(LOGITS, TARGETS),
                               expected)


def test_label_smoothing_matches_torch():
    for eps in (0.1, 0.3):
        torch.testing.assert_close(
            _loss(name="label_smoothing", label_smoothing=eps)(LOGITS, TARGETS),
            F.cross_entropy(LOGITS, TARGETS, label_smoothing=eps))


def test_soft_f1_is_zero_for_perfect_and_hand_computed_otherwise():
    perfect = torch.full((3, 3), -50.0)
    perfect[torch.arange(3), TARGETS] = 50.0
    assert _loss(name="soft_f1")(perfect, TARGETS).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(3, 3)  # p = 1/3 everywhere; per class tp=1/3, fp=2/3, fn=2/3
    f1 = 2 * (1 / 3) / (2 * (1 / 3) + 2 / 3 + 2 / 3)
    assert _loss(name="soft_f1")(uniform, TARGETS).item() == pytest.approx(1 - f1, abs=1e-6)


def test_weighted_sum_of_losses():
    combined = _loss(name={"cross_entropy": 1.0, "soft_f1": 0.5})(LOGITS, TARGETS)
    expected = _loss(name="cross_entropy")(LOGITS, TARGETS) + 0.5 * _loss(name="soft_f1")(
        LOGITS, TARGETS)
    torch.testing.assert_close(combined, expected)


def test_class_weights_weight_each_term():
    weights = torch.tensor([2.0, 1.0, 0.5])
    loss = create_loss(LossConfig(name="cross_entropy"), class_weights=weights)
    per_row = F.cross_entropy(LOGITS, TARGETS, reduction="none")
    torch.testing.assert_close(loss(LOGITS, TARGETS), (per_row * weights[TARGETS]).mean())


def test_soft_targets_accepted():
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    log_p = torch.log_softmax(LOGITS, 1)
    expected = -(soft * log_p).sum(1).mean()
    torch.testing.assert_close(_loss(name="cross_entropy")(LOGITS, soft), expected)
    hard = _loss(name="cross_entropy")(LOGITS, TARGETS)
    assert not math.isclose(hard.item(), expected.item())


def test_unknown_loss_suggests_a_name():
    with pytest.raises(ValueError, match="Did you mean 'focal'"):
        _loss(name="focla")


def test_inverse_weights_on_a_known_table():
    np.testing.assert_allclose(class_weights([10, 0, 5], "inverse"), [2 / 3, 0, 4 / 3])


def test_effective_number_weights_on_a_known_table():
    beta = 0.9
    raw = np.array([(1 - beta) / (1 - beta**10), (1 - beta) / (1 - beta**2)])
    expected = raw * 2 / raw.sum()
    np.testing.assert_allclose(class_weights([10, 2], "effective", beta), expected)
    assert class_weights([10, 2], "none") is None
