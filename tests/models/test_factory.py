import pytest
import timm
import torch

from maskclf.config import ConfigError, ModelConfig
from maskclf.errors import ModelWeightsError
from maskclf.models.factory import create_model
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


def test_head_is_18_way_and_width_comes_from_backbone():
    net = create_model(ModelConfig(name="test_byobnet"))
    assert net.get_classifier().out_features == 18
    assert net.get_classifier().in_features == net.num_features


def test_local_weights_load_into_backbone_with_new_head(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("test_byobnet", num_classes=1000)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    net = create_model(ModelConfig(name="test_byobnet", weights=path))
    loaded, original = net.state_dict(), source.state_dict()
    backbone_keys = [k for k in original if not k.startswith("head.")]
    assert backbone_keys
    for key in backbone_keys:
        torch.testing.assert_close(loaded[key], original[key])
    assert net.get_classifier().out_features == 18
    fresh = create_model(ModelConfig(name="test_byobnet"))
    assert not torch.equal(fresh.state_dict()[backbone_keys[0]], original[backbone_keys[0]])


def test_missing_weights_file(tmp_path):
    with pytest.raises(ModelWeightsError, match="does not exist"):
        create_model(ModelConfig(name="test_byobnet", weights=tmp_path / "nope.pth"))


def test_hub_without_network_suggests_local_weights(monkeypatch):
    import huggingface_hub.constants

    # offline mode, read by huggingface_hub at import: the test fails fast, never downloads
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelWeightsError, match="model.weights"):
        create_model(ModelConfig(name="test_byobnet", pretrained=True))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="not a timm model"):
        create_model(ModelConfig(name="efficientnet_b99"))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


def test_model_weights_never_reach_timm_and_code_in_them_never_runs(tmp_path, monkeypatch):
    """timm 1.0.9-1.0.25 loaded a ``pretrained_cfg_overlay`` file with weights_only=False;
    maskclf reads ``model.weights`` itself, so no timm version can unpickle it."""
    handed = []
    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model",
                        lambda *a, **k: handed.append(k) or real_create(*a, **k))
    marker = tmp_path / "ran"
    torch.save({"stem.conv.weight": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="refused"):
        create_model(ModelConfig(name="test_byobnet", weights=tmp_path / "evil.pth"))
    assert not marker.exists()
    torch.save(real_create("test_byobnet").state_dict(), tmp_path / "good.pth")
    create_model(ModelConfig(name="test_byobnet", weights=tmp_path / "good.pth"))
    assert handed and all("pretrained_cfg_overlay" not in k and not k.get("pretrained")
                          for k in handed)


def test_frozen_stages_get_no_gradient_and_keep_their_batchnorm_statistics():
    import torch

    from maskclf.models.factory import build_net, stage_modules
    from maskclf.models.spec import resolve_specs

    spec = resolve_specs(tiny_config("model.freeze_stages=2"))[0]
    net = build_net(spec).train()
    frozen = stage_modules(net, 2)
    assert frozen == ["stem", "stages.0"]
    stats = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
    images = torch.rand(4, 3, 64, 48)
    net(images).sum().backward()
    for name, parameter in net.named_parameters():
        inside = any(name.startswith(f"{m}.") for m in frozen)
        assert (parameter.grad is None) == inside, name
    assert any("Frozen" in type(m).__name__ for m in net.get_submodule("stem").modules())
    for name, before in stats.items():
        changed = not torch.equal(before, dict(net.named_buffers())[name])
        assert changed != any(name.startswith(f"{m}.") for m in frozen), name
    plain = build_net(resolve_specs(tiny_config())[0])
    assert all(p.requires_grad for p in plain.parameters())  # the default freezes nothing


def test_too_many_stages_is_a_config_error_naming_them():
    from maskclf.models.factory import build_net
    from maskclf.models.spec import resolve_specs

    with pytest.raises(ConfigError, match=r"freeze_stages=9.*5 feature stages \(\['stem'"):
        build_net(resolve_specs(tiny_config("model.freeze_stages=9"))[0])


@pytest.mark.slow
def test_frozen_stages_stay_frozen_after_freeze_epochs_and_reload(synthetic_root, tmp_path):
    import timm
    import torch

    from maskclf.models.factory import load_net

    start = timm.create_model("test_byobnet").state_dict()
    torch.save(start, tmp_path / "start.pth")
    cfg = tiny_config("model.freeze_stages=1", "model.freeze_epochs=1", "train.epochs=2",
                      f"model.weights={tmp_path / 'start.pth'}")
    run = train_run(cfg, synthetic_root, tmp_path, "frozen", interactive=False).run
    trained = load_net(run / "fold0" / "checkpoints" / "last.ckpt").net.state_dict()
    stem = [k for k in trained if k.startswith("stem.") and k in start]
    assert stem and all(torch.equal(trained[k], start[k]) for k in stem)  # never moved
    assert any(not torch.equal(trained[k], start[k]) for k in trained
               if k.startswith("stages.") and k in start and start[k].is_floating_point())
