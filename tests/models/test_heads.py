import numpy as np
import torch

from maskclf import labels
from maskclf.config import MultiLossConfig
from maskclf.models.heads import (
    AttributeTask,
    MultiHeadTask,
    attribute_targets,
)
from maskclf.models.losses import create_loss


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
