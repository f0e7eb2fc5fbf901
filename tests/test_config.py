import pytest

from maskclf.config import ConfigError, load_config, packaged_config


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
