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
    build_task,
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


# rows that know only some attributes (outside data, ``data.external``)

def _spec(head: str):
    """Specs of ``head`` with one outside source (source 1, loss weight 1)."""
    from maskclf.config import load_config
    from maskclf.models.spec import resolve_specs

    return resolve_specs(load_config(None, [f"model.head={head}", "data.external=[x]"]))


def test_the_18_way_partial_loss_is_cross_entropy_on_fully_labelled_rows():
    from maskclf.models.heads import partial_nll

    logits = torch.randn(6, 18, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([0, 5, 17, 3, 9, 12])
    one_hot = torch.nn.functional.one_hot(classes, 18).bool()
    torch.testing.assert_close(partial_nll(logits, one_hot),
                               torch.nn.functional.cross_entropy(logits, classes,
                                                                 reduction="none"))
    nothing = partial_nll(logits, torch.ones(6, 18, dtype=torch.bool))
    assert torch.isfinite(nothing).all() and nothing.abs().max() < 1e-5  # teaches nothing


def test_a_partial_row_is_scored_by_the_classes_its_attributes_allow():
    task = build_task(_spec("single")[0])
    logits = torch.randn(3, 18, generator=torch.Generator().manual_seed(1))
    known_age_gender = labels.partial_code(labels.UNKNOWN, 1, 2, source=1)  # female, >=60
    targets = torch.tensor([4, known_age_gender, labels.partial_code(-1, -1, -1, 1)])
    p = torch.softmax(logits, dim=1)
    allowed = [labels.encode_class(m, 1, 2) for m in range(3)]  # 3 classes: mask unknown
    expected = (torch.nn.functional.cross_entropy(logits[:1], targets[:1])
                - torch.log(p[1, allowed].sum()) + 0.0) / 3
    torch.testing.assert_close(task.loss(logits, targets), expected)
    # competition rows alone: exactly the configured loss, as before
    plain = torch.tensor([4, 7, 11])
    torch.testing.assert_close(task.loss(logits, plain),
                               torch.nn.functional.cross_entropy(logits, plain))


@pytest.mark.parametrize("head", ["multihead", "single"])
def test_rows_of_a_mask_only_source_leave_gender_and_age_untouched(head):
    """The gradient a mask-only row sends through the 18-way head moves only the mask
    marginal; through the multi-head model, only the mask head."""
    task = build_task(_spec(head)[0])
    outputs = torch.randn(4, task.num_outputs, generator=torch.Generator().manual_seed(2),
                          requires_grad=True)
    targets = torch.tensor([labels.partial_code(m, labels.UNKNOWN, labels.UNKNOWN, 1)
                            for m in (0, 1, 2, 0)])
    task.loss(outputs, targets).backward()
    if head == "multihead":
        assert outputs.grad[:, :3].abs().sum() > 0
        assert outputs.grad[:, 3:].abs().sum() == 0  # gender and age heads
    else:  # d loss / d logits within each mask value's six classes is proportional to p
        p = torch.softmax(outputs.detach(), dim=1).reshape(4, 3, 6)
        grad = outputs.grad.reshape(4, 3, 6)
        ratio = grad / p
        torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))


def _fit_linear(task, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """A linear network fitted to the task's loss on (x, y): 200 Adam steps, seeded."""
    torch.manual_seed(0)
    net = torch.nn.Linear(x.shape[1], task.num_outputs)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        task.loss(net(x), y).backward()
        optimizer.step()
    return net


@pytest.mark.parametrize("head", ["multihead", "single", "age"])
def test_an_age_only_source_teaches_an_age_group_the_competition_data_lacks(head):
    """Features show mask, gender and age; the competition rows have no one of 60 or more.
    With an age-only source that holds such people (their mask and gender shown but not
    labelled), the network predicts >= 60 for them; without it, never."""
    rng = np.random.default_rng(0)

    def features(mask, gender, age):
        onehots = [np.eye(n)[v] for n, v in zip((3, 2, 3), (mask, gender, age), strict=True)]
        return np.concatenate([*onehots, rng.normal(0, 0.1, 4)]).astype(np.float32)

    competition = [((m, g, a), (m, g, a), 0)
                   for m in range(3) for g in range(2) for a in range(2)] * 8
    outside = [((int(rng.integers(3)), int(rng.integers(2)), 2),
                (labels.UNKNOWN, labels.UNKNOWN, 2), 1) for _ in range(24)]
    old = torch.tensor(np.stack([features(m, g, 2) for m in range(3) for g in range(2)]))

    def predicted_ages(rows) -> np.ndarray:
        specs = _spec("per_attribute" if head == "age" else head)
        task = build_task(specs[-1] if head == "age" else specs[0])
        x = torch.tensor(np.stack([features(*shown) for shown, _, _ in rows]))
        y = torch.tensor([int(labels.partial_code(*known, source))
                          for _, known, source in rows])
        net = _fit_linear(task, x, y)
        probs = task.probs(net(old)).detach()
        ages = probs if head == "age" else labels.attribute_marginals(probs)["age"]
        return ages.argmax(dim=1).numpy()

    assert (predicted_ages(competition + outside) == 2).all()
    assert (predicted_ages(competition) != 2).all()


# competition rows whose label ``data.corrections`` made unknown (source 0, partial codes)

def _plain_spec(head: str):
    from maskclf.config import load_config
    from maskclf.models.spec import resolve_specs

    return resolve_specs(load_config(None, [f"model.head={head}"]))


@pytest.mark.parametrize("head", ["multihead", "single"])
def test_mislabelled_rows_made_gender_unknown_stop_teaching_the_wrong_gender(head):
    """Features show the gender; two thirds of the women are labelled men. Trained on those
    labels, the network calls women men; with the wrong labels made unknown (the rows still
    teach mask and age), it calls them women."""
    rows = [(m, g, a) for m in range(3) for g in range(2) for a in range(3)] * 6
    x = torch.tensor(np.stack([np.concatenate([np.eye(3)[m], np.eye(2)[g], np.eye(3)[a]])
                               for m, g, a in rows]), dtype=torch.float32)
    women = [i for i, (_, g, _) in enumerate(rows) if g == 1]
    wrong = set(women[: 2 * len(women) // 3])

    def predicted_gender(unknown: bool) -> float:
        task = build_task(_plain_spec(head)[0], partial=unknown)
        y = torch.tensor([int(labels.partial_code(m, labels.UNKNOWN if unknown else 0, a))
                          if i in wrong else labels.encode_class(m, g, a)
                          for i, (m, g, a) in enumerate(rows)])
        net = _fit_linear(task, x, y)
        gender = labels.attribute_marginals(task.probs(net(x[women])).detach())["gender"]
        return float((gender.argmax(dim=1) == 1).float().mean())

    assert predicted_gender(unknown=False) == 0.0
    assert predicted_gender(unknown=True) == 1.0
