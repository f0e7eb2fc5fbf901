"""Fold ensembles, OOF with TTA, pseudo-labels and decision tuning on a real (tiny) run."""

import json

import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.atomic import write_csv
from maskclf.labels import CLASS_COLUMNS
from maskclf.predict.run_backend import RunPredictor, open_predictor
from maskclf.predict.workflows import predict_oof, predict_run
from maskclf.results.pseudo_labels import pseudo_label
from maskclf.results.submission import prediction_table
from maskclf.runs.directory import RunDir
from maskclf.train.execute import train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains real (tiny) models end to end


@pytest.fixture(scope="module")
def two_fold_run(synthetic_root, tmp_path_factory):
    return train_run(tiny_config("data.folds=2", "train.epochs=2"), synthetic_root,
                     tmp_path_factory.mktemp("runs"), "two", interactive=False)


def test_kfold_predict_averages_every_fold_model(two_fold_run, synthetic_root):
    result = predict_run(two_fold_run.run, synthetic_root)
    assert len(result.checkpoints) == 2
    from maskclf.data.layout import read_eval

    predictor = open_predictor(two_fold_run.run, [])
    paths = read_eval(synthetic_root)["path"]
    fold_probs = [predictor.predict(synthetic_root, paths, k) for k in (0, 1)]
    table = pd.read_csv(result.predictions)
    np.testing.assert_allclose(table[CLASS_COLUMNS].to_numpy(), np.mean(fold_probs, axis=0),
                               atol=1e-5)


def test_oof_recompute_matches_training_oof_and_tta_changes_it(two_fold_run, synthetic_root):
    path, plain = predict_oof(two_fold_run.run, synthetic_root, tta=[])
    assert path.name == "oof_plain.csv"
    original = pd.read_csv(two_fold_run.run / "oof.csv")
    again = pd.read_csv(two_fold_run.run / "oof_plain.csv").set_index("ImageID").loc[
        original["ImageID"]]
    np.testing.assert_allclose(again[CLASS_COLUMNS].to_numpy(),
                               original[CLASS_COLUMNS].to_numpy(), atol=1e-5)
    assert plain["macro_f1"] == pytest.approx(two_fold_run.summary["validation"]["macro_f1"])
    predict_oof(two_fold_run.run, synthetic_root, tta=["hflip", "scale"])
    with_tta = pd.read_csv(two_fold_run.run / "oof_hflip-scale.csv")  # plain one kept
    assert not np.allclose(with_tta[CLASS_COLUMNS].to_numpy(),
                           again[CLASS_COLUMNS].to_numpy())


def test_pseudo_labels_select_exactly_the_confident_rows(synthetic_root, tmp_path):
    info = pd.read_csv(synthetic_root / "eval" / "info.csv")
    probs = np.full((len(info), 18), 0.1 / 17)
    confident = [0, 3, 5]
    for row in range(len(info)):
        top = 0.95 if row in confident else 0.9 - 1e-3
        probs[row] = (1 - top) / 17
        probs[row, row % 18] = top
    write_csv(prediction_table(info["ImageID"], probs), tmp_path / "p.csv")
    extra = pseudo_label(tmp_path / "p.csv", synthetic_root, 0.9, tmp_path / "pseudo")
    assert extra["id"].tolist() == info["ImageID"].iloc[confident].tolist()
    assert extra["class"].tolist() == [0, 3, 5]
    assert (tmp_path / "pseudo" / "extra.csv").is_file()


def test_pseudo_labels_train_but_never_validate(synthetic_root, tmp_path):
    info = pd.read_csv(synthetic_root / "eval" / "info.csv")
    probs = np.eye(18)[np.arange(len(info)) % 18]
    write_csv(prediction_table(info["ImageID"], probs), tmp_path / "p.csv")
    pseudo_label(tmp_path / "p.csv", synthetic_root, 0.5, tmp_path / "pseudo")
    result = train_run(tiny_config("data.folds=2", f"data.extra=[{tmp_path / 'pseudo'}]"),
                       synthetic_root, tmp_path / "runs", "pl", interactive=False)
    oof = pd.read_csv(result.run / "oof.csv")
    assert not oof["ImageID"].str.contains("eval/images").any()
    assert len(oof) == 84
    assert result.summary["n_images"] == 84
    folds = pd.read_csv(result.run / "folds.csv")
    assert not folds["person"].str.startswith("pseudo:").any()


def test_tuned_decisions_are_saved_and_applied(two_fold_run, synthetic_root):
    from typer.testing import CliRunner

    from maskclf.cli import app

    result = CliRunner().invoke(app, ["tune-decisions", str(two_fold_run.run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"plain_macro_f1", "tuned_macro_f1", "biases"} <= set(report)
    saved = json.loads((two_fold_run.run / RunDir.BIASES).read_text())["biases"]
    biases = np.asarray(saved)
    plain = predict_run(two_fold_run.run, synthetic_root, tune_decisions=False)
    plain_table = pd.read_csv(plain.predictions)
    probs = plain_table[CLASS_COLUMNS].to_numpy()
    assert set(plain_table["decided_by"]) == {"argmax"}
    tuned = predict_run(two_fold_run.run, synthetic_root, tune_decisions=True)
    expected = np.argmax(np.log(np.clip(probs, 1e-12, 1)) + biases, axis=1)
    assert (pd.read_csv(tuned.submission)["ans"].to_numpy() == expected).all()
    table = pd.read_csv(tuned.predictions)  # untuned probabilities, and what was submitted
    np.testing.assert_allclose(table[CLASS_COLUMNS].to_numpy(), probs, atol=1e-6)
    assert (table["submitted"].to_numpy() == expected).all()
    assert set(table["decided_by"]) == {"decision_biases"}
    assert report["oof_file"] == "oof.csv" and report["views"] == []
    assert report["run"] == str(two_fold_run.run.resolve()) and len(report["oof_sha256"]) == 64


def test_biases_fitted_on_other_views_warn_at_predict_time(two_fold_run, synthetic_root,
                                                           caplog):
    from maskclf.results.decisions import tune_run

    tune_run(two_fold_run.run)  # on oof.csv: no TTA
    with caplog.at_level("WARNING", logger="maskclf"):
        predict_run(two_fold_run.run, synthetic_root, tta=["hflip"], tune_decisions=True)
    assert "oof_hflip.csv" in caplog.text and "views ['hflip']" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="maskclf"):
        predict_run(two_fold_run.run, synthetic_root, tune_decisions=True)
    assert "fitted on" not in caplog.text


def test_tuning_without_biases_fails_before_any_prediction(two_fold_run, synthetic_root,
                                                           tmp_path, monkeypatch):
    import shutil

    from maskclf.errors import MissingFileError

    run = shutil.copytree(two_fold_run.run, tmp_path / "copy")
    (run / RunDir.BIASES).unlink(missing_ok=True)

    def no_work(*args, **kwargs):
        raise AssertionError("predicted before checking the biases")

    monkeypatch.setattr(RunPredictor, "predict", no_work)
    with pytest.raises(MissingFileError, match="tune-decisions"):
        predict_run(run, synthetic_root, tta=["hflip", "scale"], tune_decisions=True)


def test_a_folder_of_images_gets_the_probabilities_eval_gets(two_fold_run, synthetic_root,
                                                             tmp_path):
    from maskclf.predict.workflows import predict_images

    evaluated = pd.read_csv(predict_run(two_fold_run.run, synthetic_root).predictions)
    folder = synthetic_root / "eval" / "images"
    before = sorted(p.name for p in folder.iterdir())
    written = predict_images(two_fold_run.run, [str(folder)], tmp_path / "p.csv",
                             grid=tmp_path / "grid.png")
    table = pd.read_csv(written["predictions"])
    assert written["n_images"] == len(evaluated) == len(table)
    by_path = table.set_index("path").loc[[str((folder / p).resolve())
                                           for p in evaluated["ImageID"]]]
    np.testing.assert_allclose(by_path[CLASS_COLUMNS].to_numpy(),
                               evaluated[CLASS_COLUMNS].to_numpy(), atol=1e-6)
    names = labels.class_names()
    assert (table["label"] == [names[c] for c in table[CLASS_COLUMNS].to_numpy().argmax(1)]).all()
    assert set(table["mask"]) <= set(labels.MASK_NAMES)
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert sorted(p.name for p in folder.iterdir()) == before  # no cache in the user's folder
    one = evaluated["ImageID"].iloc[0]
    glob_and_file = predict_images(two_fold_run.run, [str(folder / one),
                                                      str(folder / "*.jpg")], tmp_path / "g.csv")
    assert glob_and_file["n_images"] == len(evaluated)  # the file is also matched: once


def test_the_person_vote_is_checked_on_oof_rows_and_applied_only_when_it_passes(
        two_fold_run, synthetic_root, monkeypatch):
    from maskclf.intervals import Interval
    from maskclf.predict import workflows as predict
    from maskclf.results.person_vote import VoteCheck, verdict

    plain = pd.read_csv(predict_run(two_fold_run.run, synthetic_root).predictions)
    checked = predict_run(two_fold_run.run, synthetic_root, vote=True).person_vote
    check = checked["check"]
    assert check["rows"] == 84 and 0 < check["purity"] <= 1
    assert checked["applied"] == (checked["reason"] is None)
    expected = verdict(VoteCheck(check["purity"], check["f1_before"], check["f1_after"],
                                 check["rows"], Interval(**check["gain"])), 0.8)
    assert checked["reason"] == expected
    monkeypatch.setattr(predict, "verdict", lambda check, min_purity: None)  # force it
    forced = predict_run(two_fold_run.run, synthetic_root, vote=True)
    assert forced.person_vote["applied"]
    voted = pd.read_csv(forced.predictions)
    mask_columns = [f"mask_{i}" for i in range(3)]
    np.testing.assert_allclose(voted[mask_columns], plain[mask_columns], atol=1e-5)
    for name in ("gender", "age"):  # 14 eval images, 2 groups: two distinct rows at most
        columns = voted.filter(regex=f"^{name}_").round(5)
        assert len(columns.drop_duplicates()) <= 2
    assert not np.allclose(voted[CLASS_COLUMNS], plain[CLASS_COLUMNS])


def test_the_predict_log_line_says_what_predicts_in_a_line(two_fold_run, synthetic_root,
                                                           caplog):
    with caplog.at_level("INFO", logger="maskclf"):
        predict_run(two_fold_run.run, synthetic_root, tta=["hflip"])
    line = next(r.getMessage() for r in caplog.records if "eval images with" in r.getMessage())
    size = "x".join(map(str, tiny_config().data.image_size))
    assert line == (f"predicting 14 eval images with {two_fold_run.run} (run: 2 network(s) of "
                    f"single over fold(s) 0, 1; {size}, center crop, TTA hflip)")
