"""A run keeps the corrections it started with: resuming, continuing or refitting it while
``maskclf review`` goes on changing the file trains on the labels it began with."""

import logging

import pytest

from maskclf.data.layout import read_tables
from maskclf.runs.directory import RunDir
from maskclf.train.execute import train_run
from maskclf.train.plan import plan_continue, plan_resume, refit_config
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains a tiny model


def _changed_persons(plan) -> set[str]:
    return set(plan.corrections.changes["person"])


def test_resume_continue_and_refit_read_the_labels_the_run_started_with(
        synthetic_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="maskclf")
    records, _ = read_tables(synthetic_root)
    first, second = sorted(records["id"].astype(str).unique())[:2]
    persons = {pid: sorted(records.loc[records["id"].astype(str) == pid, "person"].unique())
               for pid in (first, second)}
    file = tmp_path / "corrections.yaml"
    file.write_text(f"gender_wrong: ['{first}']\n")
    run = train_run(tiny_config(f"data.corrections={file}"), synthetic_root, tmp_path / "runs",
                    "kept", interactive=False).run
    copy = run / RunDir.APPLIED_CORRECTIONS
    assert copy.read_text().startswith("# data.corrections as this run read it")

    # the review goes on: only its progress changes, then a decision
    file.write_text(f"gender_wrong: ['{first}']\nreviewed: ['{second}']\n")
    plan_continue(run, 2)
    assert "has changed since" not in caplog.text
    file.write_text(f"gender_wrong: ['{first}', '{second}']\n")
    continued = plan_continue(run, 2)
    assert _changed_persons(continued) == set(persons[first])
    assert f"data.corrections {file} has changed since {run}" in caplog.text
    assert continued.cfg.data.corrections == copy  # the continuation keeps them too
    assert refit_config(run)[0].data.corrections == copy

    (run / RunDir.SUMMARY).unlink()  # as if it had been interrupted
    resumed = plan_resume(run)
    assert _changed_persons(resumed) == set(persons[first])
    file.unlink()  # moved or deleted since: the copy still holds the labels
    assert _changed_persons(plan_resume(run)) == set(persons[first])

    # a new run reads the file as it is now
    file.write_text(f"gender_wrong: ['{first}', '{second}']\n")
    fresh = train_run(tiny_config(f"data.corrections={file}"), synthetic_root,
                      tmp_path / "runs", "fresh", interactive=False)
    assert set(fresh.corrections.changes["person"]) == {*persons[first], *persons[second]}
