"""``maskclf lr-find`` and ``optim.lr: auto``: Lightning's range test over the run's own
module and first-fold training rows."""

import json

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import ConfigError, load_config
from tests.conftest import TINY_OVERRIDES, tiny_config
from tests.helpers.cli_result import assert_clear_error_or_works

runner = CliRunner()


def _overrides(*extra: str) -> list[str]:
    return [arg for override in (*TINY_OVERRIDES, *extra) for arg in ("-o", override)]


@pytest.mark.slow
def test_lr_find_suggests_a_rate_inside_its_range_and_draws_it(synthetic_root, tmp_path):
    plot = tmp_path / "plots" / "lr.png"
    result = runner.invoke(app, ["lr-find", "--data", str(synthetic_root), *_overrides(),
                                 "--min-lr", "1e-5", "--max-lr", "0.5", "--steps", "24",
                                 "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["networks"]["single"]
    assert 1e-5 < found["suggested_lr"] < 0.5
    assert found["steps_run"] >= 12  # a diverging loss may stop the test early, not before
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300


def test_lr_find_refuses_a_bad_range_before_any_work(synthetic_root, tmp_path):
    plot = tmp_path / "lr.png"
    result = runner.invoke(app, ["lr-find", "--data", str(synthetic_root), *_overrides(),
                                 "--min-lr", "0.1", "--max-lr", "0.01", "--plot", str(plot)])
    assert_clear_error_or_works(result, 2, "--min-lr")
    assert not plot.exists()


def test_auto_rate_needs_one_device():
    assert load_config(None, ["optim.lr=auto"]).optim.lr == "auto"
    with pytest.raises(ConfigError, match="optim.lr: auto .* one device"):
        load_config(None, ["optim.lr=auto", "train.devices=2"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=-1"])


@pytest.mark.slow
def test_auto_rate_is_found_before_training_and_kept_in_the_run(synthetic_root, tmp_path):
    from maskclf.runs.directory import RunDir
    from maskclf.train.execute import train_run

    cfg = tiny_config("optim.lr=auto", "sched.name=none", "train.report=true")
    result = train_run(cfg, synthetic_root, tmp_path, "auto-lr", interactive=False)
    run = RunDir(result.run)
    found = run.read_record()["lr_find"]["single"]
    rate = found["suggested_lr"]
    assert 1e-6 < rate < 1.0
    assert run.read_config().optim.lr == rate  # a resume or continuation trains with it
    assert (run.file("report") / found["plot"]).is_file()
    rates = pd.read_csv(result.run / "fold0" / "metrics.csv").filter(like="lr-").dropna()
    assert rates.iloc[0, 0] == pytest.approx(rate)  # training used the found rate
    assert "found by the range test" in run.report_file("report").read_text()


def test_the_suggestion_lies_inside_the_fall_of_the_loss_despite_noise():
    import numpy as np

    from maskclf.train.lr_find import LIGHTNING_BETA, unbiased, valley

    lrs = np.logspace(-6, 0, 100)
    decades = np.log10(lrs)
    falls = 4.5 - 1.3 / (1 + np.exp(-(decades + 2.5) * 2.5))  # falls from 1e-4 to 1e-1
    diverges = np.where(decades > -1, (decades + 1) ** 2 * 3, 0)
    for seed in range(5):
        raw = falls + diverges + np.random.default_rng(seed).normal(0, 0.3, len(lrs))
        mean, smoothed = 0.0, []
        for step, loss in enumerate(raw, start=1):  # what Lightning's callback records
            mean = LIGHTNING_BETA * mean + (1 - LIGHTNING_BETA) * loss
            smoothed.append(mean / (1 - LIGHTNING_BETA ** (step + 1)))
        assert unbiased(smoothed)[0] == pytest.approx(raw[0])
        assert 1e-4 < valley(lrs, unbiased(smoothed)) < 1e-1
    assert valley(lrs, np.linspace(1, 2, len(lrs))) is None  # the loss never falls
