"""Checkpoints carry a format version: older formats still load, newer ones are refused."""

import pytest
import torch

from maskclf.errors import InputFileError
from maskclf.models.factory import CHECKPOINT_FORMAT, build_net, checkpoint_hparams, load_net
from maskclf.models.spec import Preprocessing, resolve_specs
from tests.conftest import tiny_config


def _save(tmp_path, described: dict):
    spec = resolve_specs(tiny_config())[0]
    net = build_net(spec)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"maskclf": described}}, path)
    return spec, net, path


def test_a_new_checkpoint_records_its_format_and_only_mean_and_std(tmp_path):
    spec = resolve_specs(tiny_config())[0]
    net = build_net(spec)
    described = checkpoint_hparams(spec, Preprocessing.of(spec, net))["maskclf"]
    assert described["format"] == CHECKPOINT_FORMAT
    assert set(described["preprocessing"]) == {"mean", "std"}
    _, _, path = _save(tmp_path, described)
    loaded = load_net(path)
    assert loaded.preprocessing.image_size == tuple(spec.cfg.data.image_size)
    assert loaded.preprocessing.mean == Preprocessing.of(spec, net).mean


def test_a_format_1_checkpoint_still_loads(tmp_path):
    spec = resolve_specs(tiny_config())[0]
    data = spec.cfg.data
    old = {"spec": spec.to_dict(), "preprocessing": {  # format 1: no "format", six settings
        "image_size": list(data.image_size), "crop": data.crop, "crop_fraction": 0.9,
        "face_margin": 0.3, "crop_margin": 0.0, "mean": [0.1, 0.2, 0.3],
        "std": [0.4, 0.5, 0.6], "face_detector": "haar"}}
    _, net, path = _save(tmp_path, old)
    loaded = load_net(path)
    assert loaded.preprocessing.mean == (0.1, 0.2, 0.3)
    assert loaded.preprocessing.std == (0.4, 0.5, 0.6)
    for name, tensor in net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[name], tensor)


def test_a_checkpoint_from_a_newer_maskclf_is_refused_by_name(tmp_path):
    spec = resolve_specs(tiny_config())[0]
    _, _, path = _save(tmp_path, {"format": CHECKPOINT_FORMAT + 1, "spec": spec.to_dict(),
                                  "preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3}})
    with pytest.raises(InputFileError, match=r"model\.ckpt is a maskclf checkpoint of format"):
        load_net(path)
