import pandas as pd
import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.reports.run_report import write_report
from maskclf.runs.directory import RunDir
from maskclf.train.execute import train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains real (tiny) models end to end


@pytest.fixture(scope="module")
def reported(synthetic_root, tmp_path_factory):
    cfg = tiny_config("data.folds=2", "train.epochs=2", "train.report=true")
    return train_run(cfg, synthetic_root, tmp_path_factory.mktemp("runs"), "r",
                     interactive=False)


def test_train_writes_the_report(reported):
    folder = reported.run / "report"
    for name in ("report.md", "curves.png", "confusion.png", "class_f1.png", "mistakes.png"):
        assert (folder / name).stat().st_size > 0, name
    text = (folder / "report.md").read_text()
    assert f"{reported.summary['validation']['macro_f1']:.4f}" in text
    assert "![mistakes](mistakes.png)" in text


def test_confusion_matrix_counts_every_validation_image(reported):
    written = write_report(reported.run)
    matrix = written["confusion"]
    n = reported.summary["validation"]["n"]
    assert sum(map(sum, matrix)) == n == len(pd.read_csv(reported.run / "oof.csv"))
    on_disk = pd.read_csv(reported.run / "confusion.csv").iloc[:, 1:].to_numpy()
    assert on_disk.tolist() == matrix


def test_report_of_an_unfinished_run_says_how_to_finish_it(tmp_path):
    RunDir.create(tmp_path, "cut").write_config(tiny_config())
    result = CliRunner().invoke(app, ["report", str(tmp_path / "cut")])
    assert result.exit_code == 2 and "--resume" in result.output
