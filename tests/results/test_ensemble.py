import numpy as np
import pandas as pd
import pytest

from maskclf import labels
from maskclf.atomic import write_csv
from maskclf.labels import CLASS_COLUMNS
from maskclf.results.ensemble import diff, hard_vote, majority, soft_vote, soft_vote_per_attribute
from maskclf.results.submission import prediction_table


def _predictions(tmp_path, name, ids, probs):
    path = tmp_path / name
    write_csv(prediction_table(ids, probs), path)
    return path


def _submission(tmp_path, name, ids, answers):
    path = tmp_path / name
    pd.DataFrame({"ImageID": ids, "ans": answers}).to_csv(path, index=False)
    return path


def test_soft_vote_of_identical_files_returns_them(tmp_path):
    probs = np.random.default_rng(0).dirichlet(np.ones(18), size=5)
    ids = [f"{i}.jpg" for i in range(5)]
    a = _predictions(tmp_path, "a.csv", ids, probs)
    b = _predictions(tmp_path, "b.csv", ids, probs)
    voted = soft_vote([a, b], [0.3, 0.7])
    np.testing.assert_allclose(voted[CLASS_COLUMNS].to_numpy(), probs, atol=1e-6)


def test_soft_vote_aligns_by_id_and_weights(tmp_path):
    one_hot = np.eye(18)
    a = _predictions(tmp_path, "a.csv", ["x", "y"], one_hot[[0, 1]])
    b = _predictions(tmp_path, "b.csv", ["y", "x"], one_hot[[2, 3]])  # other order
    voted = soft_vote([a, b], [3.0, 1.0]).set_index("ImageID")
    assert voted.loc["x", "class_0"] == pytest.approx(0.75)
    assert voted.loc["x", "class_3"] == pytest.approx(0.25)
    assert voted.loc["y", "class_2"] == pytest.approx(0.25)


def test_majority_tie_goes_to_earliest_voter():
    votes = np.array([[4, 7, 7], [4, 7, 9], [9, 4, 7], [1, 1, 2]])
    assert majority(votes).tolist() == [7, 4, 9, 1]


def test_hard_vote_and_per_attribute_vote(tmp_path):
    ids = ["a", "b"]
    files = [_submission(tmp_path, f"s{i}.csv", ids, answers) for i, answers in enumerate([
        [labels.encode_class(0, 0, 0), 0],
        [labels.encode_class(0, 1, 1), 0],
        [labels.encode_class(2, 1, 2), 5],
    ])]
    plain = hard_vote(files)
    assert plain["ans"].tolist() == [labels.encode_class(0, 0, 0), 0]  # 3-way tie -> first
    per_attribute = hard_vote(files, per_attribute=True)
    assert per_attribute["ans"].iloc[0] == labels.encode_class(0, 1, 0)  # mask 0, gender 1,
    # age: three-way tie -> the first file's age (0)


def test_soft_vote_per_attribute_decides_each_marginal(tmp_path):
    probs = np.zeros((1, 18))
    probs[0, labels.encode_class(0, 0, 0)] = 0.4
    probs[0, labels.encode_class(1, 1, 1)] = 0.3
    probs[0, labels.encode_class(1, 1, 2)] = 0.3
    path = _predictions(tmp_path, "p.csv", ["a"], probs)
    # marginals: mask (0.4, 0.6, 0), gender (0.4, 0.6), age (0.4, 0.3, 0.3); the 18-way
    # argmax would be class 0, per-attribute decisions give (1, 1, 0)
    assert soft_vote_per_attribute([path])["ans"].iloc[0] == labels.encode_class(1, 1, 0)


def test_misaligned_inputs_fail_clearly(tmp_path):
    a = _submission(tmp_path, "a.csv", ["x", "y"], [0, 1])
    b = _submission(tmp_path, "b.csv", ["x", "z"], [0, 1])
    with pytest.raises(ValueError, match="different ImageIDs: 1 missing, 1 extra"):
        hard_vote([a, b])
    with pytest.raises(ValueError, match="different ImageIDs"):
        diff(a, b)


def test_diff_counts_on_a_handcrafted_pair(tmp_path):
    ids = list("abcde")
    a = _submission(tmp_path, "a.csv", ids, [0, 0, 6, 17, 3])
    # b: a -> mask change (0->6), b same, c -> gender change (6->9), d same, e -> age (3->4)
    probs = np.eye(18)[[6, 0, 9, 17, 4]]
    b = _predictions(tmp_path, "b.csv", ids[::-1], probs[::-1])
    result = diff(a, b)
    assert result["n"] == 5 and result["changed"] == 3
    assert result["share"] == pytest.approx(0.6)
    assert result["attribute_changed"] == {"mask": 1, "gender": 1, "age": 1}
    assert {(t["from"], t["to"]) for t in result["transitions"]} == {(0, 6), (6, 9), (3, 4)}


def test_ensemble_command_writes_validated_submission_in_info_order(tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    probs = np.eye(18)[[1, 2, 3]]
    a = _predictions(tmp_path, "a.csv", ["x", "y", "z"], probs)
    b = _predictions(tmp_path, "b.csv", ["z", "x", "y"], probs[[2, 0, 1]])
    pd.DataFrame({"ImageID": ["y", "z", "x"], "ans": 0}).to_csv(tmp_path / "info.csv",
                                                              index=False)
    result = CliRunner().invoke(app, ["ensemble", str(a), str(b), "--out", str(tmp_path / "out"),
                                      "--info", str(tmp_path / "info.csv")])
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert submission["ImageID"].tolist() == ["y", "z", "x"]
    assert submission["ans"].tolist() == [2, 3, 1]
    result = CliRunner().invoke(app, ["ensemble", str(a), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "at least two input files" in result.output


def test_ensemble_weights_follow_the_inputs_as_written(tmp_path):
    from typer.testing import CliRunner

    from maskclf.cli import app

    a = _predictions(tmp_path, "a.csv", ["x"], np.eye(18)[[1]])
    b = _predictions(tmp_path, "b.csv", ["x"], np.eye(18)[[2]])
    for args in (["--weights", "3", "1"], ["--weights", "3", "--weights", "1"]):
        out = tmp_path / "w"
        result = CliRunner().invoke(app, ["ensemble", str(a), str(b), *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        averaged = pd.read_csv(out / "predictions.csv")
        assert averaged["class_1"].item() == 0.75 and averaged["class_2"].item() == 0.25
    result = CliRunner().invoke(app, ["ensemble", str(a), str(b), "--weights", "1", "--hard",
                                      "--out", str(tmp_path / "h")])
    assert result.exit_code == 2 and "hard voting counts" in result.output
    result = CliRunner().invoke(app, ["ensemble", str(a), str(b), "--hard", "--out",
                                      str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "h" / "submission.csv")["ans"].tolist() == [1]  # first wins
