import subprocess
import sys

import pytest

from maskclf.config import (
    ConfigError,
    absolute_paths,
    load_config,
    packaged_config,
    packaged_recipes,
)
from tests.conftest import tiny_config


@pytest.mark.parametrize(("name", "head"), [("demo", "single"), ("baseline", "single"),
                                            ("multihead", "multihead"),
                                            ("per_attribute", "per_attribute"),
                                            ("cpu", "single")])
def test_shipped_configs_validate(name, head):
    cfg = load_config(packaged_config(name))
    assert cfg.model.head == head
    assert cfg.model_dump() != load_config(None).model_dump()  # the file changed something


def test_baseline_is_a_gpu_competition_recipe():
    cfg = load_config(packaged_config("baseline"))
    assert cfg.model.pretrained and cfg.optim.name == "adamw" and cfg.sched.name == "cosine"
    assert min(cfg.data.image_size) >= 224


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        load_config(path)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"train\.epochs.*'many'"):
        load_config(path)


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["optim.lr=3e-4", "data.image_size=[64,48]", "model.name=resnet18",
                             "train.precision=16-mixed"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.image_size == (64, 48)
    assert cfg.model.name == "resnet18"
    assert cfg.train.precision == "16-mixed"


def test_override_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match=r"optim\.nope: unknown key"):
        load_config(None, ["optim.nope=1"])
    with pytest.raises(ConfigError, match=r"data\.val_ratio"):
        load_config(None, ["data.val_ratio=1.5"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_per_attribute_sections_merge_into_each_model():
    cfg = load_config(packaged_config("per_attribute"))
    age = cfg.for_attribute("age")
    assert age.model.name == "efficientnet_b2" and age.train.epochs == 15
    assert age.data.age_old_threshold == 58 and age.data.folds == cfg.data.folds
    assert cfg.for_attribute("mask").data.image_size == (256, 192)
    assert cfg.for_attribute("gender").model.name == "efficientnet_b0"
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(None, ["per_attribute={mask: {modle: {name: x}}}"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["sched.name=plateau", "data.val_ratio=0"], "plateau follows validation"),
    (["aug.mixup_alpha=0.2", "train.batch_size=7"], "need an even train.batch_size"),
    (["data.oversample={18: 2}"], "class ids 0-17"),
    (["data.oversample={3: 0.5}"], "factors >= 1"),
    (["data.folds=1"], "data.folds must be 0"),
    (["train.strategy=ddp_spawn"], "use ddp"),
    (["train.devices=0"], "train.devices must be >= 1"),
    (["model.head=per_attribute", "aug.cutmix_alpha=1.0",
      "per_attribute={age: {train: {batch_size: 5}}}"], "per_attribute.age"),
])
def test_settings_that_do_not_fit_together_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_keys_suggest_the_closest_one():
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key \(did you mean 'lr'\?\)"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"loss\.attributes\.age\.gama: .*'gamma'"):
        load_config(None, ["loss.attributes={age: {gama: 2}}"])
    with pytest.raises(ConfigError, match=r"zzz: unknown key \(see configs"):
        load_config(None, ["zzz=1"])


def test_a_saved_config_with_wandb_loads_without_wandb(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    assert load_config(None, ["train.wandb_project=masks"]).train.wandb_project == "masks"


@pytest.mark.parametrize(("override", "message"), [
    ("loss.name=focl", r"loss\.name: unknown loss 'focl'.*'focal'\? \(from -o loss.name=focl\)"),
    ("loss.name={cross_entropy: 1, soft_f2: 1}", r"unknown loss 'soft_f2'.*'soft_f1'"),
    ("loss.attributes={age: {name: focla}}", r"unknown loss 'focla'"),
    ("model.head=multi", r"model\.head: unknown head 'multi'; known: multihead, per_attribute"),
    ("model.head=mask", r"unknown head 'mask'"),  # a task, but not a head
    ("data.face_detector=yunet", r"data\.face_detector: unknown face detector 'yunet'"),
    ("predict.tta=[vflip]", r"predict\.tta: unknown TTA view 'vflip'.*'hflip'"),
    ("optim.lrr=1", r"optim\.lrr: unknown key \(did you mean 'lr'\?\) \(from -o optim.lrr=1\)"),
    ("data.image_size=128,96", r"write a list in brackets: \[128,96\]"),
])
def test_every_name_is_checked_with_the_config_and_the_override_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_importing_the_config_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, maskclf.config, maskclf.tta; "
                           "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_relative_path_settings_become_absolute_and_names_stay_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pseudo").mkdir()
    (tmp_path / "fixes.yaml").write_text("version: 1\n")
    cfg = absolute_paths(tiny_config("data.extra=[pseudo]", "data.cache_dir=cache",
                                     "data.corrections=fixes.yaml", "aug.pipeline=strong",
                                     "model.weights=efficientnet_lite0"))
    assert cfg.data.extra == [tmp_path / "pseudo"]
    assert cfg.data.cache_dir == tmp_path / "cache"  # made absolute before it exists
    assert cfg.data.corrections == tmp_path / "fixes.yaml"
    assert str(cfg.aug.pipeline) == "strong"  # a preset name, not a file here
    assert str(cfg.model.weights) == "efficientnet_lite0"  # a packaged weights name
    assert absolute_paths(tiny_config()) == tiny_config()  # nothing to change


def test_packaged_recipes_are_listed_and_found_by_name():
    names = [recipe["name"] for recipe in packaged_recipes()]
    assert {"demo", "cpu", "baseline", "multihead", "per_attribute"} <= set(names)
    assert "space" not in names  # a tuning space is not a recipe
    demo = next(r for r in packaged_recipes() if r["name"] == "demo")
    assert demo["model"] == load_config("demo").model.name == "test_byobnet"


def test_a_recipe_named_by_its_old_or_new_packaged_path_loads_from_the_package(tmp_path):
    """``--config configs/cpu.yaml`` outside a checkout, a run saved with the packaged
    recipe's path before the folder was renamed, and the new folder's name all find the
    shipped recipe; a missing file in a folder of the user's does not."""
    shipped = load_config(packaged_config("cpu")).model_dump()
    for folder in ("configs", "site-packages/maskclf/configs", "recipes"):
        assert load_config(tmp_path / folder / "cpu.yaml").model_dump() == shipped
    with pytest.raises(ConfigError, match="does not exist; recipes shipped"):
        load_config(tmp_path / "mine" / "cpu.yaml")
