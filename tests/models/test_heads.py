import numpy as np
import pandas as pd
import pytest
import torch

from maskclf import labels
from maskclf.config import ConfigError, MultiLossConfig
from maskclf.labels import CLASS_COLUMNS
from maskclf.models.heads import (
    AttributeTask,
    MultiHeadTask,
    attribute_targets,
)
from maskclf.models.losses import create_loss
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


def test_per_attribute_combination_picks_expected_class():
    mask = torch.tensor([[0.1, 0.8, 0.1]])
    gender = torch.tensor([[0.3, 0.7]])
    age = torch.tensor([[0.2, 0.2, 0.6]])
    joint = labels.combine_attributes(mask, gender, age)
    assert joint.shape == (1, 18)
    assert joint.argmax().item() == labels.encode_class(1, 1, 2)
    assert abs(joint.sum().item() - 1.0) < 1e-6
    assert abs(joint[0, labels.encode_class(1, 1, 2)].item() - 0.8 * 0.7 * 0.6) < 1e-6
    numpy_joint = labels.combine_networks({"mask": [mask.numpy()], "gender": [gender.numpy()],
                                           "age": [age.numpy()]})
    np.testing.assert_allclose(numpy_joint, joint.numpy(), rtol=1e-6)


def test_attribute_targets_are_marginals():
    targets = torch.tensor([labels.encode_class(2, 0, 1)])
    soft = attribute_targets(targets)
    assert soft["mask"].tolist() == [[0, 0, 1]]
    assert soft["gender"].tolist() == [[1, 0]]
    assert soft["age"].tolist() == [[0, 1, 0]]


def test_multihead_probs_are_product_of_softmaxes_and_loss_is_weighted_sum():
    cfg = MultiLossConfig()
    losses = {name: create_loss(cfg) for name in ("mask", "gender", "age")}
    task = MultiHeadTask(losses, {"mask": 2.0, "gender": 1.0, "age": 0.5})
    outputs = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    probs = task.probs(outputs)
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    parts = task.split(outputs)
    expected = labels.combine_attributes(*(torch.softmax(parts[k], 1) for k in labels.ATTRIBUTES))
    torch.testing.assert_close(probs, expected)
    targets = torch.tensor([0, 5, 11, 17])
    ids = {"mask": targets // 6, "gender": (targets // 3) % 2, "age": targets % 3}
    manual = sum(w * torch.nn.functional.cross_entropy(parts[k], ids[k])
                 for k, w in task.weights.items())
    torch.testing.assert_close(task.loss(outputs, targets), manual)


def test_attribute_task_scores_its_attribute():
    task = AttributeTask("age", create_loss(MultiLossConfig()))
    assert task.num_outputs == 3
    assert task.metric_targets(torch.tensor([0, 7, 17])).tolist() == [0, 1, 2]


def test_age_smoothing_moves_mass_only_to_the_adjacent_age_group():
    import torch

    from maskclf.models.losses import age_ordinal_smoothing

    matrix = age_ordinal_smoothing(0.2)
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(18))
    young = labels.encode_class(0, 0, 0)  # wear / male / <30
    middle = labels.encode_class(2, 1, 1)  # not wear / female / 30-59
    expected_young = torch.zeros(18)
    expected_young[young], expected_young[labels.encode_class(0, 0, 1)] = 0.8, 0.2
    torch.testing.assert_close(matrix[young], expected_young)
    expected_middle = torch.zeros(18)
    expected_middle[middle] = 0.8
    expected_middle[labels.encode_class(2, 1, 0)] = expected_middle[
        labels.encode_class(2, 1, 2)] = 0.1
    torch.testing.assert_close(matrix[middle], expected_middle)


@pytest.mark.parametrize("head", ["single", "multihead", "per_attribute"])
def test_age_smoothing_changes_the_age_targets_of_every_head_and_nothing_else(head):
    import torch

    from maskclf.models.heads import attribute_targets, build_task
    from maskclf.models.spec import resolve_specs

    targets = torch.tensor([0, 4, 11, 17])
    for plain, smoothed in zip(resolve_specs(tiny_config(f"model.head={head}")),
                               resolve_specs(tiny_config(f"model.head={head}",
                                                         "loss.age_ordinal_smoothing=0.2")),
                               strict=True):
        plain_task, smooth_task = build_task(plain), build_task(smoothed)
        assert torch.equal(plain_task.training_targets(targets), targets)  # default: as is
        before = attribute_targets(targets)
        after = attribute_targets(smooth_task.training_targets(targets))
        torch.testing.assert_close(after["mask"], before["mask"])
        torch.testing.assert_close(after["gender"], before["gender"])
        torch.testing.assert_close(after["age"][:, 1], torch.tensor([0.2, 0.8, 0.2, 0.2]))
        outputs = torch.randn(4, plain_task.num_outputs)
        same = torch.isclose(plain_task.loss(outputs, targets), smooth_task.loss(outputs, targets))
        assert bool(same) == (plain.task in ("mask", "gender")), plain.task


def test_age_regression_adds_one_output_whose_l1_loss_is_weighted_and_the_rest_unchanged():
    import torch

    from maskclf.models.factory import build_net
    from maskclf.models.heads import AGE_SCALE, build_task
    from maskclf.models.spec import resolve_specs

    plain = resolve_specs(tiny_config("model.head=multihead"))[0]
    spec = resolve_specs(tiny_config("model.head=multihead",
                                     "model.age_regression_weight=0.5"))[0]
    assert (plain.num_outputs, spec.num_outputs) == (8, 9)
    assert build_net(spec).get_classifier().out_features == 9
    task, plain_task = build_task(spec), build_task(plain)
    outputs, targets = torch.randn(4, 9), torch.tensor([0, 4, 11, 17])
    ages = torch.tensor([20.0, 45.0, 61.0, 33.0])
    expected = plain_task.loss(outputs[:, :8], targets) + 0.5 * (
        outputs[:, 8] - ages / AGE_SCALE).abs().mean()
    torch.testing.assert_close(task.loss(outputs, targets, ages), expected)
    torch.testing.assert_close(task.probs(outputs), plain_task.probs(outputs[:, :8]))
    outputs.requires_grad_(True)
    task.loss(outputs, targets, ages).backward()
    assert outputs.grad[:, 8].abs().sum() > 0
    with pytest.raises(ValueError, match="ages"):
        task.loss(outputs, targets)


@pytest.mark.parametrize(("overrides", "match"), [
    (["model.age_regression_weight=1"], "model.head: multihead"),
    (["model.head=multihead", "model.age_regression_weight=1", "aug.mixup_alpha=0.2"],
     "vertical_half"),
])
def test_age_regression_needs_the_multihead_model_and_mixing_it_can_follow(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(*overrides)


@pytest.mark.slow
def test_a_run_with_age_regression_trains_reads_ages_and_predicts(synthetic_root, tmp_path):
    from maskclf.models.factory import load_net
    from maskclf.predict.workflows import predict_run

    cfg = tiny_config("model.head=multihead", "model.age_regression_weight=1.0",
                      "aug.cutmix_mode=vertical_half", "aug.mix_prob=0.5", "train.epochs=2")
    run = train_run(cfg, synthetic_root, tmp_path, "reg", interactive=False).run
    assert load_net(run / "fold0" / "checkpoints" / "best.ckpt").spec.regresses_age
    result = predict_run(run, synthetic_root)
    probs = pd.read_csv(result.predictions)[CLASS_COLUMNS].to_numpy()
    assert probs.shape == (14, 18) and np.allclose(probs.sum(axis=1), 1.0)
