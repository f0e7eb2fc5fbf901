"""Specs size every head; a checkpoint alone rebuilds its network and preprocessing."""

import shutil

import numpy as np
import pandas as pd
import pytest
from timm.data import resolve_model_data_config

from maskclf.data.loaders import make_dataset
from maskclf.models.factory import build_net, load_net
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.predict.module import predict_probs
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


@pytest.mark.parametrize(("head", "tasks", "widths"), [
    ("single", ["single"], [18]),
    ("multihead", ["multihead"], [3 + 2 + 3]),
    ("per_attribute", ["mask", "gender", "age"], [3, 2, 3]),
])
def test_every_head_resolves_to_its_networks(head, tasks, widths):
    specs = resolve_specs(tiny_config(f"model.head={head}"))
    assert [s.task for s in specs] == tasks
    assert [s.num_outputs for s in specs] == widths
    assert [build_net(s).get_classifier().out_features for s in specs] == widths
    assert all(s.cfg.model.head == ("single" if head == "per_attribute" else head)
               for s in specs)


def test_per_attribute_specs_carry_their_own_settings():
    cfg = tiny_config("model.head=per_attribute",
                      "per_attribute={age: {data: {image_size: [48, 40]}, train: {epochs: 3}}}")
    by_task = {s.task: s for s in resolve_specs(cfg)}
    assert by_task["age"].cfg.data.image_size == (48, 40) and by_task["age"].cfg.train.epochs == 3
    assert by_task["mask"].cfg.data.image_size == (64, 48) and by_task["mask"].subdir == "mask"


def test_spec_round_trips_through_a_dict():
    spec = resolve_specs(tiny_config("model.head=per_attribute"))[2]
    again = ModelSpec.from_dict(spec.to_dict())
    assert again.task == "age" and again.cfg == spec.cfg


@pytest.mark.slow
@pytest.mark.parametrize("head", ["multihead", "per_attribute"])
def test_a_checkpoint_alone_rebuilds_network_and_preprocessing(head, synthetic_root, tmp_path):
    cfg = tiny_config(f"model.head={head}", "data.val_ratio=0.3",
                      "per_attribute={age: {data: {image_size: [48, 40]}}}")
    result = train_run(cfg, synthetic_root, tmp_path / "runs", "r", interactive=False)
    spec = resolve_specs(cfg)[-1]  # multihead, or the age network
    fold = result.run / spec.subdir / "fold0"
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(fold / "checkpoints" / "best.ckpt", alone)

    loaded = load_net(alone)
    assert loaded.spec.task == spec.task and loaded.spec.cfg == spec.cfg
    assert loaded.preprocessing.image_size == tuple(spec.cfg.data.image_size)
    assert loaded.preprocessing.mean == tuple(resolve_model_data_config(loaded.net)["mean"])
    folds = pd.read_csv(result.run / "folds.csv", dtype={"person": str})
    oof = pd.read_csv(result.run / "oof.csv")
    assert set(oof["ImageID"].str.split("/").str[-2]) <= set(folds["person"][folds["fold"] == 0])
    dataset = make_dataset(loaded.spec.cfg, synthetic_root, oof["ImageID"], None, train=False)
    probs = predict_probs(loaded, dataset, tta=[])
    np.testing.assert_allclose(probs, np.load(fold / "val_probs.npy"), atol=1e-6)
