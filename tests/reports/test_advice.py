"""The findings a report lists: each fires on the numbers it describes, and only there."""

import json

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.config import dump_config
from maskclf.reports.advice import findings, rarely_predicted, still_improving, train_val_gap
from maskclf.reports.run_report import write_report
from tests.conftest import tiny_config


def _curve(f1, train_acc=None, val_acc=None) -> pd.DataFrame:
    frame = pd.DataFrame({"val/f1": f1})
    if train_acc is not None:
        frame["train/acc"], frame["val/acc"] = train_acc, val_acc
    return frame.rename_axis("epoch")


def test_a_fold_still_improving_at_its_last_epoch_asks_for_more_epochs():
    rising = {"fold0": _curve([0.2, 0.4, 0.5]), "fold1": _curve([0.3, 0.5, 0.45])}
    found = still_improving(rising, "runs/r")
    assert "1 of 2 folds" in found.what and "-o train.epochs=6" in found.remedy
    assert "--resume runs/r" in found.remedy
    assert still_improving({"fold0": _curve([0.2, 0.5, 0.4])}, "runs/r") is None


def test_values_the_model_hardly_predicts_and_zero_f1_classes_are_flagged():
    truth = labels.encode_class(np.repeat([0, 1, 2], 40), np.tile([0, 1], 60),
                                np.tile([0, 1, 2], 40))
    predicted = truth.copy()
    predicted[labels.decode_class(truth)[0] == 1] = labels.encode_class(0, 0, 0)  # no incorrect
    found = rarely_predicted(truth, predicted)
    texts = " ".join(f.what for f in found)
    assert "mask `incorrect` is predicted for 0 images but is true for 40" in texts
    assert "6 of the 18 classes" in texts  # the six incorrect-mask classes
    assert any("class_weights=effective" in f.remedy for f in found)
    assert rarely_predicted(truth, truth) == []


def test_a_large_train_validation_gap_asks_for_regularisation_it_does_not_use_yet():
    curves = {"fold0": _curve([0.5, 0.6], [0.8, 0.99], [0.6, 0.7])}
    gap = train_val_gap(curves, tiny_config())
    assert "0.99 vs validation 0.70" in gap.what and "aug.pipeline=strong" in gap.remedy
    assert "early_stopping_patience=3" in gap.remedy
    used = train_val_gap(curves, tiny_config("aug.pipeline=strong",
                                             "train.early_stopping_patience=2"))
    assert "aug.pipeline" not in used.remedy and "early_stopping" not in used.remedy
    assert train_val_gap({"fold0": _curve([0.5], [0.8], [0.75])}, tiny_config()) is None
    assert train_val_gap({"fold0": _curve([0.5])}, tiny_config()) is None  # mixing: no acc


def test_the_report_starts_with_the_recipe_and_flags_an_under_trained_run(tmp_path):
    """A run built to be under-trained: F1 still rising at its last epoch, one mask value
    never predicted."""
    run = tmp_path / "short"
    (run / "fold0").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(tiny_config("train.epochs=3")))
    pd.DataFrame({"epoch": [0, 1, 2], "step": [3, 7, 11], "val/f1": [0.1, 0.2, 0.3],
                  "val/acc": [0.2, 0.3, 0.4], "train/acc": [0.2, 0.3, 0.4]}
                 ).to_csv(run / "fold0" / "metrics.csv", index=False)
    classes = labels.encode_class(np.repeat([0, 1, 2], 12), np.tile([0, 1], 18),
                                  np.tile([0, 1, 2], 12))
    probs = np.full((36, 18), 0.01)
    probs[np.arange(36), np.where(labels.decode_class(classes)[0] == 1, 0, classes)] = 0.9
    oof = pd.DataFrame(probs / probs.sum(1, keepdims=True),
                       columns=[f"class_{i}" for i in range(18)])
    oof.insert(0, "ImageID", [f"train/images/p{i // 7}/x{i}.jpg" for i in range(36)])
    oof.assign(fold=0, **{"class": classes}).to_csv(run / "oof.csv", index=False)
    summary = {"validation": {"macro_f1": 0.5, "n": 36, "attribute_f1": dict.fromkeys(
        labels.ATTRIBUTES, 0.5)}, "cv": {"macro_f1_mean": 0.5, "macro_f1_std": 0.0},
        "folds": []}
    (run / "summary.json").write_text(json.dumps(summary))
    written = write_report(run, tmp_path / "no-data")
    report = (run / "report" / "report.md").read_text()
    assert report.index("## Recipe") < report.index("## Findings") < report.index("| OOF")
    assert "`test_byobnet`" in report and "3 epochs" in report and "adamw lr 0.001" in report
    assert "still rising at the last epoch" in report and "train.epochs=6" in report
    assert "mask `incorrect` is predicted for 0 images" in report
    assert len(written["findings"]) >= 2
    assert findings({"fold0": _curve([0.5, 0.4])}, None, None, "r", tiny_config()) == []


def test_every_confusion_cell_is_labelled_readably_and_every_bar_has_its_value():
    from matplotlib.figure import Figure

    from maskclf.reports.plots import confusion_figure, draw_bars

    matrix = np.array([[50, 1, 0], [3, 40, 25], [0, 0, 49]])
    ax = Figure().subplots()
    confusion_figure(matrix, ["a", "b", "c"], "t", ax)
    colours = {text.get_text(): text.get_color() for text in ax.texts}
    assert len(ax.texts) == 9  # zeros too
    assert colours["50"] == "white" and colours["1"] == "black" and colours["25"] == "black"
    bars = Figure().subplots()
    draw_bars(bars, [0.9, 0.0, 0.45], ["x", "y", "z"], "f1")
    assert [t.get_text() for t in bars.texts] == ["0.90", "0.00", "0.45"]
