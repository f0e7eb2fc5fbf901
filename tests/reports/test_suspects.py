"""``maskclf suspects``: labels flipped on purpose rank at the top and are proposed."""

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from maskclf import labels
from maskclf.cli import app
from maskclf.data.corrections import load_corrections
from maskclf.data.layout import read_train
from maskclf.reports.suspects import corrections, find_suspects
from maskclf.results.submission import prediction_table


def flipped_oof(root) -> tuple[pd.DataFrame, dict]:
    """OOF rows for every training image of ``root``: a model that knows the true labels
    (p = 0.8 on them), and given labels with a few persons flipped on purpose."""
    records = read_train(root)
    persons = sorted(records["person"].unique())
    flips = {"gender": persons[:2], "age_young": [p for p in persons
                                                   if records.loc[records.person == p,
                                                                  "age_group"].iloc[0] == 1][:1],
             "mask": persons[3:4]}
    mask, gender, age = (records[c].to_numpy().copy() for c in ("mask", "gender", "age_group"))
    true = labels.encode_class(mask, gender, age)
    given_gender = np.where(records["person"].isin(flips["gender"]), 1 - gender, gender)
    given_age = np.where(records["person"].isin(flips["age_young"]), 0, age)
    swap = records["person"].isin(flips["mask"]) & (mask != 0)
    given_mask = np.where(swap, 3 - mask, mask)  # incorrect (1) <-> not wear (2)
    probs = np.full((len(records), 18), 0.2 / 17)
    probs[np.arange(len(records)), true] = 0.8
    oof = prediction_table(records["path"], probs).assign(
        **{"class": labels.encode_class(given_mask, given_gender, given_age)})
    return oof, flips


def test_flipped_labels_rank_at_the_top_and_become_corrections(synthetic_root):
    oof, flips = flipped_oof(synthetic_root)
    suspects = find_suspects(oof)
    for kind, flipped in (("gender", flips["gender"]), ("age", flips["age_young"])):
        ranked = suspects[(suspects["kind"] == kind)
                          & (suspects["level"] == "person")]["person"].tolist()
        assert set(ranked[:len(flipped)]) == set(flipped), kind
    masked = suspects[suspects["kind"] == "mask"]
    assert (masked["level"] == "photo").all()
    assert set(masked.head(2)["person"]) == set(flips["mask"])
    proposal = corrections(suspects).persons
    ids = {kind: [p.split("_")[0] for p in persons] for kind, persons in flips.items()}
    assert proposal["gender_wrong"] == sorted(set(ids["gender"]))
    assert proposal["mask_swapped"] == ids["mask"]
    assert proposal["age_30_to_59"] == ids["age_young"]  # their truth is 30-59
    assert proposal["age_under_30"] == [] and proposal["age_60_or_over"] == []


def test_the_unknown_proposal_makes_the_flagged_labels_unknown_instead(synthetic_root):
    oof, flips = flipped_oof(synthetic_root)
    proposal = corrections(find_suspects(oof), unknown=True)
    ids = {kind: [p.split("_")[0] for p in persons] for kind, persons in flips.items()}
    assert proposal.persons["gender_unknown"] == sorted(set(ids["gender"]))
    assert proposal.persons["age_unknown"] == ids["age_young"]
    assert not any(proposal.persons[s] for s in ("gender_wrong", "mask_swapped",
                                                  "age_30_to_59"))
    swapped = {key for key, values in proposal.images.items() if values == {"mask": "unknown"}}
    assert swapped and {key.split("/")[0] for key in swapped} == set(flips["mask"])


@pytest.mark.slow
def test_the_command_writes_a_table_a_grid_and_a_corrections_file_that_loads(
        synthetic_root, tmp_path):
    from maskclf.train.execute import train_run
    from tests.conftest import tiny_config

    run = train_run(tiny_config(), synthetic_root, tmp_path, "r", interactive=False).run
    oof, flips = flipped_oof(synthetic_root)
    oof.to_csv(run / "oof.csv", index=False)
    result = CliRunner().invoke(app, ["suspects", str(run), "--top", "8", "--out",
                                      str(tmp_path / "review"), "--json"])
    unknown = CliRunner().invoke(app, ["suspects", str(run), "--unknown", "--out",
                                       str(tmp_path / "unsure"), "--json"])
    assert unknown.exit_code == 0, unknown.output
    unsure = load_corrections(tmp_path / "unsure" / "corrections.yaml")
    assert unsure.persons["gender_unknown"] and not unsure.persons["gender_wrong"]
    assert result.exit_code == 0, result.output
    review = tmp_path / "review"
    assert len(pd.read_csv(review / "suspects.csv")) == 3 * len(oof) + 2 * 12
    assert (review / "suspects.png").stat().st_size > 5_000
    proposal = yaml.safe_load((review / "corrections.yaml").read_text())
    assert proposal["gender_wrong"] == sorted({p.split("_")[0] for p in flips["gender"]})
    assert load_corrections(review / "corrections.yaml")  # data.corrections reads it
