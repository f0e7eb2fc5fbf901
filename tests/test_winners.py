"""The winners' techniques (boundary ages out of training, ...): each changes what it should
and nothing else; defaults leave results unchanged."""

import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.config import ConfigError
from maskclf.data.datamodule import excluded_from_training, training_rows
from maskclf.data.layout import read_train
from maskclf.labels import CLASS_COLUMNS
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


def _records(ages: list[int], folds: list[int]) -> pd.DataFrame:
    rows = [(f"p{i}/mask{k}.jpg", f"p{i}", age, fold, 0)
            for i, (age, fold) in enumerate(zip(ages, folds, strict=True)) for k in range(7)]
    return pd.DataFrame(rows, columns=["path", "person", "age", "fold", "target"])


def test_boundary_ages_leave_training_but_not_validation():
    records = _records([20, 27, 29, 30, 45, 57, 59, 60, 28, 58], [0, 0, 0, -1, -1, -1, -1, -1,
                                                                  -1, -1])
    cfg = tiny_config("data.exclude_ages=[[27, 29], [57, 59]]")
    trained = set(training_rows(records, 0, cfg)["person"])
    assert trained == {"p3", "p4", "p7"}  # 30, 45, 60 only: 28, 57, 58, 59 are left out
    assert set(records[records["fold"] == 0]["person"]) == {"p0", "p1", "p2"}  # validated
    default = set(training_rows(records, 0, tiny_config())["person"])
    assert default == set(records[records["fold"] != 0]["person"])  # unchanged by default
    assert excluded_from_training(records, cfg.data.exclude_ages) == {
        "ranges": [[27, 29], [57, 59]], "persons": 6, "images": 42}
    assert excluded_from_training(records, []) is None


def test_unknown_ages_of_pseudo_labels_are_never_excluded():
    assert not labels.in_age_ranges(np.array([-1]), [(0, 100)]).any()


def test_a_reversed_range_is_a_config_error():
    with pytest.raises(ConfigError, match="exclude_ages"):
        tiny_config("data.exclude_ages=[[29, 27]]")


@pytest.mark.slow
def test_the_run_summary_says_who_was_left_out(synthetic_root, tmp_path):
    plain = train_run(tiny_config(), synthetic_root, tmp_path, "plain", interactive=False)
    cut = train_run(tiny_config("data.exclude_ages=[[20, 40]]"), synthetic_root, tmp_path,
                    "cut", interactive=False)
    records = read_train(synthetic_root)
    inside = records[records["age"].between(20, 40)]
    assert cut.summary["excluded_from_training"] == {
        "ranges": [[20, 40]], "persons": inside["person"].nunique(), "images": len(inside)}
    assert len(inside) > 0
    assert cut.summary["validation"]["n"] == plain.summary["validation"]["n"]
    assert "excluded_from_training" not in plain.summary


def test_frozen_stages_get_no_gradient_and_keep_their_batchnorm_statistics():
    import torch

    from maskclf.models.factory import build_net, stage_modules
    from maskclf.models.spec import resolve_specs

    spec = resolve_specs(tiny_config("model.freeze_stages=2"))[0]
    net = build_net(spec).train()
    frozen = stage_modules(net, 2)
    assert frozen == ["stem", "stages.0"]
    stats = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
    images = torch.rand(4, 3, 64, 48)
    net(images).sum().backward()
    for name, parameter in net.named_parameters():
        inside = any(name.startswith(f"{m}.") for m in frozen)
        assert (parameter.grad is None) == inside, name
    assert any("Frozen" in type(m).__name__ for m in net.get_submodule("stem").modules())
    for name, before in stats.items():
        changed = not torch.equal(before, dict(net.named_buffers())[name])
        assert changed != any(name.startswith(f"{m}.") for m in frozen), name
    plain = build_net(resolve_specs(tiny_config())[0])
    assert all(p.requires_grad for p in plain.parameters())  # the default freezes nothing


def test_too_many_stages_is_a_config_error_naming_them():
    from maskclf.models.factory import build_net
    from maskclf.models.spec import resolve_specs

    with pytest.raises(ConfigError, match=r"freeze_stages=9.*5 feature stages \(\['stem'"):
        build_net(resolve_specs(tiny_config("model.freeze_stages=9"))[0])


@pytest.mark.slow
def test_frozen_stages_stay_frozen_after_freeze_epochs_and_reload(synthetic_root, tmp_path):
    import timm
    import torch

    from maskclf.models.factory import load_net

    start = timm.create_model("test_byobnet").state_dict()
    torch.save(start, tmp_path / "start.pth")
    cfg = tiny_config("model.freeze_stages=1", "model.freeze_epochs=1", "train.epochs=2",
                      f"model.weights={tmp_path / 'start.pth'}")
    run = train_run(cfg, synthetic_root, tmp_path, "frozen", interactive=False).run
    trained = load_net(run / "fold0" / "checkpoints" / "last.ckpt").net.state_dict()
    stem = [k for k in trained if k.startswith("stem.") and k in start]
    assert stem and all(torch.equal(trained[k], start[k]) for k in stem)  # never moved
    assert any(not torch.equal(trained[k], start[k]) for k in trained
               if k.startswith("stages.") and k in start and start[k].is_floating_point())


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


@pytest.mark.slow
def test_refit_trains_everyone_for_the_folds_best_epochs(synthetic_root, tmp_path):
    import torch

    from maskclf.models.weights import safe_torch_load
    from maskclf.predict.workflows import predict_run
    from maskclf.train.plan import refit_config

    run = train_run(tiny_config("data.folds=2", "train.epochs=3"), synthetic_root, tmp_path,
                    "cv", interactive=False).run
    cfg, best_epochs, data = refit_config(run)
    chosen = [int(safe_torch_load(run / f"fold{k}/checkpoints/best.ckpt")["epoch"]) + 1
              for k in (0, 1)]
    assert best_epochs == chosen and cfg.train.epochs == round(float(np.median(chosen)))
    assert (cfg.data.folds, cfg.data.val_ratio) == (0, 0.0) and data == synthetic_root
    refit = train_run(cfg, data, tmp_path, "cv-refit", interactive=False)
    assert refit.summary["validation"] is None
    folds = pd.read_csv(refit.run / "folds.csv")
    assert len(folds) == 12 and (folds["fold"] == -1).all()  # everyone trains
    last = safe_torch_load(next((refit.run).glob("fold*/checkpoints/last.ckpt")))
    assert last["epoch"] + 1 == cfg.train.epochs and isinstance(last["state_dict"], dict)
    assert predict_run(refit.run, synthetic_root).n_images == 14
    assert torch.is_tensor(next(iter(last["state_dict"].values())))


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


def test_half_face_mix_mixes_ages_with_the_targets_shares():
    import torch

    from maskclf.train.mixing import HalfFaceMix

    torch.manual_seed(0)
    images, targets = _batch()
    ages = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    mixed, soft, mixed_ages = HalfFaceMix(1.0, False, (0.3, 0.3)).mix(images, targets, ages)
    partner = mixed[:, 0, 0, -1].long()
    torch.testing.assert_close(mixed_ages, 0.3 * ages + 0.7 * ages[partner])


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
