"""``maskclf ablate``: seed-repeated runs on the same persons, effects with intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from tests.helpers.cli_result import TINY, assert_clear_error_or_works

GOOD_LR, BAD_LR = 0.01, 1e-9


@pytest.fixture(scope="module")
def ablation_data(tmp_path_factory):
    """24 persons, half of them validating: enough for the tiny network to learn in three
    epochs at a working rate (accuracy about 0.26 against 0.03 at a rate too small)."""
    from maskclf.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("ablation-data") / "data", persons=24,
                          eval_persons=2, seed=0)


@pytest.fixture(scope="module")
def ablation(ablation_data, tmp_path_factory):
    data = ablation_data
    out = tmp_path_factory.mktemp("ablation") / "study"
    args = ["ablate", "--data", str(data), *TINY, "-o", "train.epochs=3",
            "-o", "data.val_ratio=0.5",
            "--vary", f"optim.lr={GOOD_LR},{BAD_LR}",
            "--vary", "model.outside_batchnorm=shared,split",  # split needs outside data
            "--repeats", "2", "--out", str(out), "--draws", "200", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return args, out, json.loads(result.stdout)


@pytest.mark.slow
def test_every_combination_trains_each_seed_on_the_same_persons(ablation):
    _, out, result = ablation
    runs = pd.read_csv(out / "ablation" / "runs.csv")
    assert sorted(runs["unit"]) == ["c00-r0", "c00-r1", "c02-r0", "c02-r1"]
    assert sorted(set(runs["seed"])) == [42, 43]
    assert [Path(p).name for p in runs["run"]] == [f"ablation-{u}" for u in runs["unit"]]
    validated = [set(pd.read_csv(Path(run) / "oof.csv")["ImageID"]) for run in runs["run"]]
    assert all(ids == validated[0] for ids in validated)
    seeds = [pd.read_csv(Path(run) / "oof.csv").filter(like="class_").to_numpy()
             for run in runs["run"][:2]]
    assert abs(seeds[0] - seeds[1]).max() > 1e-3  # the seed changed the training
    assert list(result["refused"]) == [f"optim.lr={GOOD_LR}, model.outside_batchnorm=\"split\"",
                                       f"optim.lr={BAD_LR}, model.outside_batchnorm=\"split\""]
    assert "outside" in next(iter(result["refused"].values()))


@pytest.mark.slow
def test_each_value_gets_its_mean_and_its_paired_difference(ablation):
    _, out, result = ablation
    table = pd.DataFrame(result["effects"])
    lr = table[(table["setting"] == "optim.lr") & (table["metric"] == "macro_f1")]
    first, second = lr.iloc[0], lr.iloc[1]
    assert (first["value"], second["value"]) == (str(GOOD_LR), str(BAD_LR))
    assert pd.isna(first["difference"]) and first["runs"] == 2
    assert second["difference"] == pytest.approx(second["mean"] - first["mean"])
    assert second["difference_low"] <= second["difference"] <= second["difference_high"]
    assert second["verdict"] == "worse"  # a rate too small to learn, beyond noise
    assert first["low"] <= first["mean"] <= first["high"]
    assert (out / "ablation" / "effects.png").read_bytes()[:4] == b"\x89PNG"
    assert "vs first [CI]" in (out / "ablation" / "effects.md").read_text()


@pytest.mark.slow
def test_the_same_command_continues_the_study_and_another_grid_is_refused(ablation):
    args, out, _ = ablation
    before = {p.name: p.stat().st_mtime for p in (out / "runs").iterdir()}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime for p in (out / "runs").iterdir()} == before
    other = list(args)
    other[other.index("--repeats") + 1] = "3"
    assert_clear_error_or_works(CliRunner().invoke(app, other), 2, "begun with another")
    # a second study in the folder reuses the runs whose config, seed and data it shares
    other = [*args[:args.index("--vary")], "--vary", f"optim.lr={GOOD_LR},0.02",
             "--repeats", "1", "--study", "second", "--out", str(out), "--draws", "200"]
    second = CliRunner().invoke(app, other)
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([*before,
                                                                        "second-c01-r0"])
    assert "ablation-c00-r0" in pd.read_csv(out / "second" / "runs.csv")["run"].iloc[0]


@pytest.mark.slow
def test_without_vary_it_measures_the_seed_noise_of_one_config(ablation_data, tmp_path):
    result = CliRunner().invoke(app, ["ablate", "--data", str(ablation_data), *TINY,
                                      "-o", "data.val_ratio=0.5", "--repeats", "2",
                                      "--out", str(tmp_path), "--draws", "200", "--json"])
    assert result.exit_code == 0, result.output
    effects = pd.DataFrame(json.loads(result.stdout)["effects"])
    assert list(effects["metric"]) == ["macro_f1", "mask_f1", "gender_f1", "age_f1",
                                       "accuracy"]
    assert set(effects["value"]) == {"(base)"} and set(effects["runs"]) == {2}
    assert effects["difference"].isna().all()
    runs = pd.read_csv(tmp_path / "ablation" / "runs.csv")
    assert list(runs["seed"]) == [42, 43]
    for row in effects.itertuples():  # the mean of the two seeds, inside its interval
        assert row.mean == pytest.approx(runs[row.metric].mean(), abs=1e-4)
        assert row.low <= row.mean <= row.high


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--vary", "optim.lrr=0.1,0.2"], "optim.lrr"),
    (["--vary", "optim.lr=0.1,fast"], "optim.lr"),
    (["--vary", "seed=1,2"], "--vary seed"),
    (["--vary", "optim.lr"], "KEY=V1,V2"),
    (["--vary", "optim.lr=0.1,0.1"], "twice"),
    (["--vary", "model.outside_batchnorm=split"], "every combination is refused"),
    (["-o", "data.val_ratio=0"], "validation persons"),
])
def test_bad_requests_are_one_line_and_write_nothing(synthetic_root, tmp_path, flags,
                                                     fragment):
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["ablate", "--data", str(synthetic_root), *TINY,
                                      "--out", str(out), *flags])
    assert_clear_error_or_works(result, 2, fragment)
    assert not out.exists()


def test_shown_values_tell_files_of_one_name_apart_by_their_folder():
    from maskclf.train.ablate import _short

    assert _short('data.corrections="/tmp/s/unknown/corrections.yaml"') == (
        "data.corrections=unknown/corrections.yaml")
    assert _short('data.corrections="/tmp/s/flips/corrections.yaml"') == (
        "data.corrections=flips/corrections.yaml")
    assert _short('data.external=[{path: "/data/external/faces", share: 0.4}]') == (
        "data.external=[{faces, share: 0.4}]")
