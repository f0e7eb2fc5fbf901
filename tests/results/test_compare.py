"""``maskclf compare``: paired over persons, on the images every input shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from maskclf.atomic import write_csv
from maskclf.cli import app
from maskclf.errors import InputFileError, UsageError
from maskclf.results.compare import compare
from maskclf.results.submission import prediction_table
from tests.helpers.cli_result import assert_clear_error_or_works
from tests.helpers.fake_runs import fake_run, labelled_persons, probabilities

PERSONS, IMAGES = 80, 7


@pytest.fixture
def two_runs(tmp_path):
    rng, ids, truth, person = labelled_persons()
    weak = fake_run(tmp_path / "weak", ids, probabilities(rng, truth, 0.4), truth, person)
    strong = fake_run(tmp_path / "strong", ids, probabilities(rng, truth, 0.8), truth, person)
    return weak, strong


def test_runs_compare_on_their_own_labels_and_a_clear_gain_is_better(two_runs, tmp_path):
    weak, strong = two_runs
    result = compare([weak, strong, weak], draws=300, plot=tmp_path / "forest.png")
    assert (result["images"], result["persons"], result["reference"]) == (
        PERSONS * IMAGES, PERSONS, "weak")
    assert set(result["systems"][1]["verdict"].values()) == {"better"}
    assert set(result["systems"][2]["verdict"].values()) == {"within noise"}  # itself
    gain = result["systems"][1]["difference"]["macro_f1"]
    assert 0 < gain["low"] < gain["value"] < gain["high"]
    assert (tmp_path / "forest.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_on_other_persons_are_compared_where_they_overlap(tmp_path):
    rng, ids, truth, person = labelled_persons()
    half = len(ids) // 2
    a = fake_run(tmp_path / "a", ids, probabilities(rng, truth, 0.6), truth, person)
    b = fake_run(tmp_path / "b", ids[half:], probabilities(rng, truth, 0.6)[half:], truth[half:],
                 person[half:])
    result = compare([a, b], draws=200)
    assert result["images"] == len(ids) - half
    assert any("not in every input" in note for note in result["notes"])
    c = fake_run(tmp_path / "c", ids[:half], probabilities(rng, truth, 0.6)[:half], truth[:half],
                 person[:half])
    with pytest.raises(InputFileError, match="no image is in every input"):
        compare([b, c], draws=200)


def test_prediction_files_need_labels_with_persons(tmp_path):
    rng, ids, truth, person = labelled_persons()
    files = []
    for name, right in (("a.csv", 0.4), ("b.csv", 0.8)):
        write_csv(prediction_table(ids, probabilities(rng, truth, right)), tmp_path / name)
        files.append(tmp_path / name)
    with pytest.raises(UsageError, match="--labels"):
        compare(files, draws=200)
    labels = pd.DataFrame({"ImageID": ids, "class": truth, "person_id": person})
    write_csv(labels, tmp_path / "labels.csv")
    result = compare(files, tmp_path / "labels.csv", draws=200)
    assert result["systems"][1]["verdict"]["macro_f1"] == "better"
    write_csv(labels.drop(columns="person_id"), tmp_path / "nobody.csv")
    with pytest.raises(InputFileError, match="names no persons"):
        compare(files, tmp_path / "nobody.csv", draws=200)


def test_the_command_prints_the_table_and_refuses_bad_requests(two_runs, tmp_path):
    weak, strong = two_runs
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(weak), str(strong), "--draws", "200"])
    assert result.exit_code == 0, result.output
    assert "better" in result.output and "vs first" in result.output
    no_oof = tmp_path / "no-oof"
    no_oof.mkdir()
    (no_oof / "config.yaml").write_text("seed: 1\n")
    for args, fragment in (([str(weak)], "at least two"),
                           ([str(weak), str(no_oof)], "no validation rows"),
                           ([str(weak), str(strong), "--draws", "5"], "--draws 5"),
                           ([str(weak), str(tmp_path / "absent")], "does not exist"),
                           ([str(weak), str(strong), "--plot", str(tmp_path)], "is a folder")):
        outcome = runner.invoke(app, ["compare", *args])
        assert_clear_error_or_works(outcome, 2, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-oof", "strong", "weak"]


def test_score_gives_intervals_when_the_labels_name_persons(tmp_path):
    from maskclf.metrics import score_files

    rng, ids, truth, person = labelled_persons()
    classes = np.where(rng.random(len(ids)) < 0.7, truth, 0)
    write_csv(pd.DataFrame({"ImageID": ids, "ans": classes}), tmp_path / "submission.csv")
    labels = pd.DataFrame({"ImageID": ids, "class": truth, "person_id": person})
    write_csv(labels, tmp_path / "labels.csv")
    scores = score_files(tmp_path / "submission.csv", tmp_path / "labels.csv")
    interval = scores["interval"]
    assert interval["persons"] == PERSONS
    assert interval["macro_f1"]["low"] < scores["macro_f1"] < interval["macro_f1"]["high"]
    write_csv(labels.drop(columns="person_id"), tmp_path / "anonymous.csv")
    assert score_files(tmp_path / "submission.csv", tmp_path / "anonymous.csv")[
        "interval"] is None
    shown = CliRunner().invoke(app, ["score", str(tmp_path / "submission.csv"), "--labels",
                                     str(tmp_path / "labels.csv")])
    assert f"95% CI ({PERSONS} persons)" in shown.output


def test_oof_files_carry_their_own_labels(two_runs):
    weak, strong = two_runs
    result = compare([weak / "oof.csv", strong / "oof.csv"], draws=200)
    assert result["systems"][1]["verdict"]["macro_f1"] == "better"


def test_files_of_one_name_are_told_apart_by_their_folder_and_unknown_labels_leave_out(
        tmp_path):
    """Two runs' submission.csv are named by their folders; a labels file's ``unknown``
    column (gender and age of a photo of someone else: 6) leaves those rows out of the
    gender and age figures, as score_composite does."""
    rng, ids, truth, person = labelled_persons()
    files = []
    for run, right in (("run-a", 0.4), ("run-b", 0.8)):
        (tmp_path / run).mkdir()
        write_csv(prediction_table(ids, probabilities(rng, truth, right)),
                  tmp_path / run / "submission.csv")
        files.append(tmp_path / run / "submission.csv")
    predicted = pd.read_csv(files[0])[[f"class_{i}" for i in range(18)]].to_numpy().argmax(1)
    wrong_gender = (predicted // 3 % 2) != (truth // 3 % 2)
    labels = pd.DataFrame({"ImageID": ids, "class": truth, "person_id": person,
                           "unknown": np.where(wrong_gender, 6, 0)})
    write_csv(labels, tmp_path / "labels.csv")
    result = compare(files, tmp_path / "labels.csv", draws=200)
    assert [s["name"] for s in result["systems"]] == ["run-a/submission.csv",
                                                      "run-b/submission.csv"]
    assert result["systems"][0]["scores"]["gender_f1"]["value"] == 1.0
    labels.assign(unknown=9).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputFileError, match="unknown must be 0-7"):
        compare(files, tmp_path / "bad.csv", draws=200)
