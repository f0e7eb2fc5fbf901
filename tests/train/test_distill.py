"""Distillation: a student learns from a teacher's soft targets (a teacher that is wrong on
purpose moves it), ``maskclf distill`` trains an ordinary run from a k-fold teacher, and bad
teachers are refused before any training."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from maskclf import labels
from maskclf.cli import app
from maskclf.config import load_config
from maskclf.data.synthetic import make_synthetic
from maskclf.labels import CLASS_COLUMNS
from maskclf.models.losses import distillation_loss
from maskclf.results.submission import prediction_table
from tests.conftest import TINY_OVERRIDES
from tests.helpers.cli_result import assert_clear_error_or_works

runner = CliRunner()


def test_the_soft_term_is_zero_at_the_teacher_and_keeps_its_size_across_temperatures():
    teacher = torch.softmax(torch.randn(8, 18), dim=1)
    at_teacher = distillation_loss(torch.log(teacher) + 3.0, teacher, 4.0)  # a row shift
    assert at_teacher.item() == pytest.approx(0.0, abs=1e-5)
    logits = torch.randn(8, 18, requires_grad=True)
    sizes = []
    for temperature in (2.0, 8.0):
        (grad,) = torch.autograd.grad(distillation_loss(logits, teacher, temperature), logits)
        sizes.append(grad.norm().item())
    assert 0.2 < sizes[1] / sizes[0] < 5  # T^2 undoes the 1/T^2 of the softened gradients


def test_every_task_learns_its_own_part_of_the_teacher():
    from maskclf.models.heads import AttributeTask, MultiHeadTask, SingleTask

    teacher = torch.softmax(torch.randn(4, 18), dim=1)
    marginals = labels.attribute_marginals(teacher)
    single = SingleTask(torch.nn.CrossEntropyLoss())
    assert single.distill_loss(torch.log(teacher), teacher, 2.0).item() == pytest.approx(
        0.0, abs=1e-5)
    heads = MultiHeadTask({n: torch.nn.CrossEntropyLoss() for n in labels.ATTRIBUTE_SIZES},
                          {n: 1.0 for n in labels.ATTRIBUTE_SIZES})
    matching = torch.log(torch.cat([marginals[n] for n in labels.ATTRIBUTE_SIZES], dim=1))
    assert heads.distill_loss(matching, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-5)
    assert heads.distill_loss(torch.zeros_like(matching), teacher, 2.0).item() > 0.01
    age = AttributeTask("age", torch.nn.CrossEntropyLoss())
    assert age.distill_loss(torch.log(marginals["age"]), teacher, 2.0).item() == pytest.approx(
        0.0, abs=1e-5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("distill") / "data", persons=24,
                          eval_persons=2, seed=3)


def _lying_teacher(data, path):
    """One-hot true labels, except every unmasked face, which it calls masked."""
    from maskclf.data.layout import read_tables

    records, _ = read_tables(data)
    mask, gender, age = labels.decode_class(records["class"].to_numpy())
    lied = labels.encode_class(np.where(mask == 2, 0, mask), gender, age)
    pd.DataFrame(np.eye(labels.NUM_CLASSES)[lied] * 0.98 + 0.02 / labels.NUM_CLASSES,
                 columns=CLASS_COLUMNS).pipe(
        lambda t: prediction_table(records["path"], t.to_numpy())).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_teacher_wrong_on_one_class_moves_the_student_there(data, tmp_path):
    """Unmasked faces called masked by the teacher: the student (soft targets only) calls
    the unmasked validation faces masked far more often than one trained on the labels."""
    from maskclf.train.execute import train_run

    teacher = _lying_teacher(data, tmp_path / "teacher.csv")
    common = [*TINY_OVERRIDES, "model.name=test_efficientnet", "train.epochs=8",
              "optim.lr=0.005", "data.val_ratio=0.3"]
    masked_share = {}
    for name, extra in (("labels", []), ("student", [f"distill.teacher={teacher}",
                                                      "distill.alpha=1.0"])):
        cfg = load_config(None, [*common, *extra])
        result = train_run(cfg, data, tmp_path / "runs", name, interactive=False)
        oof = pd.read_csv(result.run / "oof.csv")
        unmasked = labels.decode_class(oof["class"].to_numpy())[0] == 2
        masked_share[name] = float(oof.loc[unmasked, "mask_0"].mean())
    # the labels taught "not masked" (5 of a person's 7 photos are masked)
    assert masked_share["labels"] < 0.6, masked_share
    assert masked_share["student"] > masked_share["labels"] + 0.25, masked_share


@pytest.fixture(scope="module")
def teacher_run(data, tmp_path_factory):
    from maskclf.train.execute import train_run

    cfg = load_config(None, [*TINY_OVERRIDES, "data.folds=2"])
    return train_run(cfg, data, tmp_path_factory.mktemp("teacher") / "runs", "teacher",
                     interactive=False).run


@pytest.mark.slow
def test_distill_trains_an_ordinary_run_that_reports_teacher_and_student(data, teacher_run,
                                                                        tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["distill", str(teacher_run), "--student", "test_byobnet",
                                 "--out", str(runs), "--unlabelled", "-o",
                                 "distill.temperature=3", "-o", "train.report=true",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    student = runs / "test_byobnet-distilled"
    teacher = pd.read_csv(runs / "test_byobnet-distilled-teacher" / "teacher.csv")
    oof = pd.read_csv(teacher_run / "oof.csv")
    train_rows = teacher[~teacher["ImageID"].str.startswith("/")]
    assert len(train_rows) == len(oof)  # every training image, from its own OOF fold
    assert np.allclose(train_rows.set_index("ImageID").loc[oof["ImageID"], CLASS_COLUMNS],
                       oof[CLASS_COLUMNS], atol=1e-5)
    eval_rows = len(teacher) - len(train_rows)
    assert eval_rows == len(pd.read_csv(data / "eval" / "info.csv"))  # --unlabelled
    config = (student / "config.yaml").read_text()
    assert "temperature: 3.0" in config and "folds: 0" in config  # one student network
    compared = summary["distillation"]
    assert compared["n"] == summary["validation"]["n"]
    assert compared["student_macro_f1"] == pytest.approx(summary["validation"]["macro_f1"])
    report = (student / "report" / "report.md").read_text()
    assert "teacher OOF macro F1" in report and "distilled from" in report
    assert json.loads((student / "run.json").read_text())["distilled_from"]["sources"]
    predicted = runner.invoke(app, ["predict", str(student)])
    assert predicted.exit_code == 0, predicted.output


@pytest.mark.slow
def test_distill_refuses_a_teacher_without_every_training_image(data, teacher_run,
                                                                 tmp_path):
    from maskclf.train.execute import train_run

    holdout = train_run(load_config(None, TINY_OVERRIDES), data, tmp_path / "t", "holdout",
                        interactive=False).run
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["distill", str(holdout), "--student", "test_byobnet",
                                 "--out", str(runs)])
    assert_clear_error_or_works(result, 2, "no soft targets for")
    assert not list(runs.glob("*/config.yaml"))  # no run was started
    result = runner.invoke(app, ["distill", str(teacher_run), "--student", "no_such_net",
                                 "--out", str(runs)])
    assert_clear_error_or_works(result, 2, "no_such_net")
    result = runner.invoke(app, ["distill", str(tmp_path), "--student", "test_byobnet",
                                 "--out", str(runs)])
    assert_clear_error_or_works(result, 2, "not a maskclf run")
    mixing = runner.invoke(app, ["distill", str(teacher_run), "--student", "test_byobnet",
                                 "--out", str(runs), "-o", "aug.mixup_alpha=0.2"])
    assert_clear_error_or_works(mixing, 2, "mixup")
