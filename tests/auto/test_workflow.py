"""``maskclf auto`` end to end on synthetic data: the budget holds, the submission is valid,
the ensemble is at least its best member, the same command resumes, workers share a study."""

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.results.submission import validate_submission
from tests.train.test_tune import _postgres_or_skip

PRESET = """
base: demo
folds: 3
screen_epochs: {screen_epochs}
eta: 2
max_epochs: {max_epochs}
max_final_epochs: {max_final_epochs}
min_final_epochs: 2
survivors: 2
average_checkpoints: 2
ensemble_rounds: 6
reserve: 0.1
refit: {refit}
candidates:
  - name: plain
    overrides: ["data.image_size=[64,48]", data.num_workers=0]
  - name: focal
    overrides: ["data.image_size=[64,48]", data.num_workers=0, loss.name=focal]
  - name: slow-lr
    overrides: ["data.image_size=[64,48]", data.num_workers=0, optim.lr=0.001]
"""
STARTUP_S = 4.0
"""Python and the command line's imports before the command starts its clock."""


def _preset(tmp_path: Path, max_epochs: int, screen_epochs: int = 1, refit: bool = False,
            max_final_epochs: int | None = None) -> Path:
    path = tmp_path / "preset.yaml"
    path.write_text(PRESET.format(max_epochs=max_epochs, screen_epochs=screen_epochs,
                                  refit=str(refit).lower(),
                                  max_final_epochs=max_final_epochs or max_epochs))
    return path


def _command(data: Path, out: Path, preset: Path, budget: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "maskclf", "auto", "--data", str(data), "--budget", budget,
            "--preset", str(preset), "--out", str(out), "--name", "study", "--json", *extra]


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{out / 'study' / 'study.db'}"
    return [t for t in optuna.load_study(study_name="study", storage=storage).trials
            if t.user_attrs.get("unit")]


@pytest.mark.slow
def test_auto_ends_within_its_budget_with_a_valid_submission_and_then_resumes(
        synthetic_root, tmp_path):
    out, preset = tmp_path / "auto", _preset(tmp_path, max_epochs=60, max_final_epochs=200)
    command = _command(synthetic_root, out, preset, "45s")
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)

    # the budget held: 60 epochs were asked for (the members up to 200 when the time left
    # fits them), the time limits cut them to what fits
    slowest_epoch = max(summary["plan"]["epoch_s"].values()) * 5
    assert wall <= 45 * 1.05 + max(slowest_epoch, 2.0) + STARTUP_S
    assert summary["budget_held"] and summary["elapsed_s"] <= 45 * 1.05 + slowest_epoch
    assert summary["budget_s"] == 45
    trained = [r for r in summary["candidates"] if r["state"] == "complete"]
    assert all(max(r["epochs"]) < 200 for r in trained)

    info = pd.read_csv(synthetic_root / "eval" / "info.csv", dtype={"ImageID": str})
    submission = pd.read_csv(summary["submission"], dtype={"ImageID": str})
    validate_submission(submission, info)  # raises unless ids and order match, labels 0-17
    assert summary["ensemble_oof_f1"] >= summary["best_member_oof_f1"]
    assert sum(m["weight"] for m in summary["members"]) == pytest.approx(1.0)
    assert summary["ensemble_oof_f1"] == pytest.approx(max(
        summary["ensemble_oof_f1"], *[m["oof_macro_f1"] for m in summary["members"]]))
    # screening trained every candidate on fold 0 and the best went on
    assert {r["candidate"] for r in summary["candidates"] if r["unit"].startswith("r0-")} == {
        "plain", "focal", "slow-lr"}
    report = (out / "study" / "report.md").read_text()
    assert "## Selection" in report and "## Time per stage" in report
    # where the time went: the start (check, caches, probe), the units and finish, within
    # what was spent
    spent = summary["stages"]["spent_s"]
    assert list(spent)[0] == "start" and spent["start"] > 0
    names = {"start", "screening", "members (fold 0)", "k-fold", "finish"}  # one name a stage
    assert set(spent) <= names and set(summary["stages"]["planned_s"]) <= names
    assert {r["stage"].split(",")[0] for r in summary["candidates"]} <= names
    assert "members, rung" not in report
    assert sum(spent.values()) <= summary["elapsed_s"] + 0.5
    assert (out / "study" / "progress.png").stat().st_size > 1000

    # the same command again: the finished study's summary, nothing trained again
    runs = sorted(p.name for p in (out / "study" / "runs").iterdir())
    trials = len(_trials(out))
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["already_finished"] is True
    assert sorted(p.name for p in (out / "study" / "runs").iterdir()) == runs
    assert len(_trials(out)) == trials


@pytest.mark.slow
def test_a_stopped_study_continues_where_it_stopped(synthetic_root, tmp_path):
    out, preset = tmp_path / "auto", _preset(tmp_path, max_epochs=6, screen_epochs=3)
    command = _command(synthetic_root, out, preset, "120s")
    runs = out / "study" / "runs"
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (runs / "r0-focal" / "run.json").is_file():
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "the same command continues" in err
    clock = json.loads((out / "study" / "clock.json").read_text())
    assert clock["deadline"] is None and 0 < clock["left_s"] < 120  # paused, time kept
    assert (runs / "r0-plain" / "summary.json").is_file()
    stopped_finished = (runs / "r0-focal" / "summary.json").is_file()  # the signal came late

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert not [p for p in runs.iterdir() if p.name.endswith("-2")]  # nothing started over
    trials = _trials(out)
    finished = [t.user_attrs["unit"] for t in trials
                if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == len(set(finished))  # every unit finished once
    assert "r0-plain" in finished and "finish" in finished
    stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["unit"] for t in stopped] == ["r0-focal"]
    record = json.loads((runs / "r0-focal" / "run.json").read_text())
    assert record["resumed"] or stopped_finished, done.stderr[-4000:]  # continued
    assert summary["elapsed_s"] <= 120 * 1.05  # the pause is not counted


@pytest.mark.slow
def test_two_workers_share_one_auto_study_through_postgresql(synthetic_root, tmp_path):
    url = _postgres_or_skip()
    out, preset = tmp_path / "auto", _preset(tmp_path, max_epochs=4, refit=True)
    name = f"auto-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "maskclf", "auto", "--data", str(synthetic_root),
               "--budget", "150s", "--preset", str(preset), "--out", str(out), "--name", name,
               "--storage", url, "--threads", "1"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=400) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n\n".join(  # a str: shown whole
        f"worker {i} (exit {w.returncode}) stdout: {o[-500:]}\nstderr: {e[-3000:]}"
        for i, (w, (o, e)) in enumerate(zip(workers, outputs, strict=True)))

    trials = [t for t in optuna.load_study(study_name=name, storage=url).trials
              if t.user_attrs.get("unit")]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    units = [t.user_attrs["unit"] for t in complete]
    assert len(units) == len(set(units))  # no unit was trained twice
    assert {"r0-plain", "r0-focal", "r0-slow-lr", "finish"} <= set(units)
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both took units
    summary = json.loads((out / name / "summary.json").read_text())
    assert summary["ensemble_oof_f1"] >= summary["best_member_oof_f1"]
    # the budget left room to refit the chosen members on every person: they predicted
    assert summary["refit"]["used"], summary["refit"]
    chosen = [m["unit"] for m in summary["members"] if m["weight"] > 0]
    assert [Path(r).name for r in summary["refit"]["runs"]] == [f"refit-{u}" for u in chosen]
    for run in map(Path, summary["refit"]["runs"]):
        record = json.loads((run / "run.json").read_text())
        assert Path(record["refit_of"]["run"]).name in chosen
        assert (run / "predictions.csv").is_file() and not (run / "oof.csv").exists()
    assert not [p for p in (out / name / "runs").iterdir() if p.name.endswith("-2")]


@pytest.mark.parametrize(("args", "message"), [
    (["--budget", "soon"], r"--budget: 'soon' is not a duration"),
    (["--budget", "0s"], r"--budget: '0s' is no time at all"),
    (["--budget", "5m", "--preset", "fast"], r"preset 'fast' is neither a packaged preset"),
    (["--budget", "5m", "--preset", "missing.yaml"], r"preset .*missing\.yaml"),
    (["--budget", "5m", "--name", "../x"], r"--name '\.\./x' must be a plain folder name"),
    (["--budget", "5m", "--preset", "{outside_only}"], r"give the sources with --external"),
])
def test_bad_auto_requests_get_one_line_before_any_work(synthetic_root, tmp_path,
                                                        monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outside.yaml").write_text(
        "base: demo\ncandidates: [{name: a, outside_share: 0.3}]\n")
    args = [arg.format(outside_only=tmp_path / "outside.yaml") for arg in args]
    result = CliRunner().invoke(app, ["auto", "--data", str(synthetic_root), "--out",
                                      str(tmp_path / "auto"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert re.search(message, lines[0])
    assert not (tmp_path / "auto").exists()


def test_a_budget_too_short_is_named_as_typed_and_leaves_nothing(synthetic_root, tmp_path):
    out = tmp_path / "auto"
    result = CliRunner().invoke(app, ["auto", "--data", str(synthetic_root), "--budget", "5s",
                                      "--preset", "demo", "--out", str(out)])
    assert result.exit_code == 2, result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert re.search(r"--budget 5s cannot train one candidate .* took \d+s, .*give at least "
                     r"--budget \d+s", error)
    least = int(re.search(r"at least --budget (\d+)s", error)[1])
    assert least > 5 and not out.exists()


def test_a_study_continued_with_another_budget_is_refused(synthetic_root, tmp_path):
    folder = tmp_path / "auto" / "study"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({
        "data": str(synthetic_root.resolve()), "budget_s": 60.0, "preset_sha256": "x"}))
    result = CliRunner().invoke(app, ["auto", "--data", str(synthetic_root), "--budget",
                                      "90s", "--preset", "demo", "--out", str(tmp_path / "auto"),
                                      "--name", "study"])
    assert result.exit_code == 2
    assert "was started with another budget (60.0, now 90.0)" in result.output
    assert not (folder / "clock.json").exists()  # its clock did not restart


def test_a_bad_outside_source_refuses_auto_before_any_work(synthetic_root, tmp_path):
    from tests.data.test_external import make_source

    bad = make_source(tmp_path / "faces", [{"file": "a.jpg", "age": "old"}])
    result = CliRunner().invoke(app, ["auto", "--data", str(synthetic_root), "--budget", "5m",
                                      "--out", str(tmp_path / "auto"), "--external", str(bad)])
    assert result.exit_code == 2
    assert "row 2, column age" in result.output and str(bad) in result.output
    assert not (tmp_path / "auto").exists()


def test_a_study_continued_without_its_outside_sources_is_refused(synthetic_root, tmp_path):
    from maskclf.auto.folder import StudyFolder, check_identity, plan_identity
    from maskclf.errors import UsageError

    folder = StudyFolder(tmp_path / "study")
    folder.path.mkdir()
    began = plan_identity(synthetic_root, 60.0, "preset", [tmp_path / "faces"])
    (folder.path / "plan.json").write_text(json.dumps(began))
    check_identity(folder, began)  # the same command continues
    with pytest.raises(UsageError, match="another external"):
        check_identity(folder, plan_identity(synthetic_root, 60.0, "preset"))


@pytest.mark.slow
def test_auto_trains_its_outside_candidates_on_the_given_sources(synthetic_root, tmp_path):
    from maskclf.data.synthetic import make_face_set

    faces = make_face_set(tmp_path / "faces", persons=20)
    preset = tmp_path / "preset.yaml"
    preset.write_text(PRESET.format(max_epochs=3, screen_epochs=1, refit="false",
                                    max_final_epochs=3).replace(
        "  - name: focal\n", "  - name: outside\n    outside_share: 0.3\n  - name: focal\n"))
    out = tmp_path / "auto"
    done = subprocess.run(_command(synthetic_root, out, preset, "40s", "--external", str(faces)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    screened = {r["candidate"] for r in summary["candidates"] if r["unit"].startswith("r0-")}
    assert "outside" in screened
    trained = {run.name: json.loads((run / "summary.json").read_text()).get("external")
               for run in (out / "study" / "runs").iterdir() if (run / "summary.json").is_file()}
    assert any("outside" in name for name in trained)
    for name, external in trained.items():  # the face set trained the outside runs only
        assert (external is not None) == ("outside" in name), (name, external)
        assert external is None or external[0]["rows"] == 20
