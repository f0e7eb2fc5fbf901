"""Checkpoint averaging: a fold's best epochs averaged (uniform or greedy), kept only when the
soup scores at least as well as the best epoch, and the summary says which was used."""

import json

import pytest
import torch

from maskclf.config import ConfigError, load_config
from maskclf.train.soup import average_states
from tests.conftest import tiny_config


def test_an_average_is_the_mean_of_weights_and_keeps_counters():
    states = [{"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)},
              {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}]
    mean = average_states(states)
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and int(mean["n"]) == 5


def test_averaging_needs_validation():
    with pytest.raises(ConfigError, match="train.average_checkpoints picks epochs"):
        load_config(None, ["train.average_checkpoints=3", "data.val_ratio=0", "data.folds=0"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["uniform", "greedy"])
def test_a_soup_is_used_only_when_it_scores_at_least_as_well(mode, synthetic_root, tmp_path):
    from maskclf.models.spec import resolve_specs
    from maskclf.runs.directory import RunDir
    from maskclf.train.execute import train_run

    cfg = tiny_config("train.epochs=4", "train.average_checkpoints=3",
                      f"train.average_mode={mode}")
    result = train_run(cfg, synthetic_root, tmp_path, mode, interactive=False)
    fold = result.summary["folds"][0]
    soup = fold["checkpoint_average"]
    tops = sorted(p.name for p in (result.run / "fold0" / "checkpoints").glob("top-*.ckpt"))
    assert len(tops) == 3 and set(soup["members"]) <= set(tops)
    if mode == "uniform":
        assert len(soup["members"]) == 3
    folder = RunDir(result.run).fold(resolve_specs(cfg)[0], 0)
    assert soup["used"] == (soup["f1_soup"] >= soup["f1_best"] and len(soup["members"]) > 1)
    assert folder.averaged.is_file() == soup["used"]
    assert folder.checkpoint() == (folder.averaged if soup["used"] else folder.best)
    assert fold["checkpoints"] == [str(folder.checkpoint())]
    record = json.loads((result.run / "fold0" / "result.json").read_text())
    assert record["soup"] == soup
    if mode == "uniform":  # a refit has no validation to average by: it trains without
        from maskclf.train.plan import refit_config

        refit, _, _ = refit_config(result.run)
        assert refit.train.average_checkpoints == 0 and refit.data.val_ratio == 0


@pytest.mark.slow
@pytest.mark.parametrize("soup_better", [True, False])
def test_the_soup_is_the_mean_of_its_epochs_and_kept_only_when_it_scores_higher(
        soup_better, synthetic_root, tmp_path, monkeypatch):
    from maskclf.models.factory import load_net
    from maskclf.models.spec import resolve_specs
    from maskclf.runs.directory import RunDir
    from maskclf.train import soup
    from maskclf.train.execute import train_run

    scores = iter([0.5, 0.6 if soup_better else 0.4])  # the best epoch, then the soup
    monkeypatch.setattr(soup.SoupScorer, "__call__", lambda self, state: next(scores))
    cfg = tiny_config("train.epochs=3", "train.average_checkpoints=3")
    result = train_run(cfg, synthetic_root, tmp_path, "soup", interactive=False)
    folder = RunDir(result.run).fold(resolve_specs(cfg)[0], 0)
    record = result.summary["folds"][0]["checkpoint_average"]
    assert record == {"used": soup_better, "members": record["members"], "f1_best": 0.5,
                      "f1_soup": 0.6 if soup_better else 0.4}
    assert folder.averaged.is_file() == soup_better
    assert folder.checkpoint() == (folder.averaged if soup_better else folder.best)
    if soup_better:  # the kept network's weights are the mean of the three epochs'
        members = [load_net(folder.checkpoints / name).net.state_dict()
                   for name in record["members"]]
        averaged = load_net(folder.averaged).net.state_dict()
        for key, value in averaged.items():
            if value.is_floating_point() and "running_" not in key:  # BN stats: recomputed
                torch.testing.assert_close(value, torch.stack([m[key] for m in members])
                                           .mean(0))


@pytest.mark.slow
def test_the_soup_is_scored_on_the_rows_whose_label_knows_what_validation_scores(
        synthetic_root, tmp_path):
    """A review made half the persons' gender unknown: the soup's score leaves their photos
    out, as the fold's validation F1 does (scored by their folder labels before)."""
    from maskclf.data.datamodule import FoldDataModule
    from maskclf.data.layout import read_tables
    from maskclf.labels import NUM_CLASSES
    from maskclf.metrics import known_macro_f1, macro_f1
    from maskclf.models.factory import load_net
    from maskclf.predict.module import predict_probs
    from maskclf.train.execute import train_run
    from maskclf.train.plan import plan_new
    from maskclf.train.soup import SoupScorer

    records, _ = read_tables(synthetic_root)
    ids = sorted(records["id"].astype(str).unique())
    file = tmp_path / "corrections.yaml"
    file.write_text(f"gender_unknown: {ids[::2]}\n")
    cfg = tiny_config(f"data.corrections={file}", "train.epochs=2")
    run = train_run(cfg, synthetic_root, tmp_path / "runs", "doubted", interactive=False).run
    plan = plan_new(cfg, synthetic_root)
    data = FoldDataModule(plan.cfg, synthetic_root, plan.records, 0)
    template = load_net(run / "fold0" / "checkpoints" / "best.ckpt")
    scorer = SoupScorer(template, data)
    truth = data.val_rows["truth"].to_numpy()
    known = truth < NUM_CLASSES  # no unknown bits
    assert 0 < known.sum() < len(truth) and len(scorer.truth) == known.sum()
    predicted = predict_probs(template, data.dataset(data.val_rows, False), []).argmax(axis=1)
    assert scorer(template.net.state_dict()) == known_macro_f1(truth, predicted)
    assert known_macro_f1(truth, predicted) == macro_f1(truth[known], predicted[known])
