"""The registries: one type for every extension point, each filled by the modules its
locations name."""

import pytest

from maskclf.config import ConfigError
from maskclf.registry import FACE_DETECTORS, LOSSES, TASKS, VIEWS, Registry


def test_a_registry_lists_gets_and_suggests():
    shapes = Registry("shape", "draw.shape")
    shapes.register("circle")("o")
    assert shapes.names() == ["circle"] and "CIRCLE" in shapes and shapes.get("circle") == "o"
    with pytest.raises(ConfigError, match=r"draw\.shape: unknown shape 'circel'.*'circle'"):
        shapes.get("circel")
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("circle")("again")


def test_every_registry_is_filled_by_its_module():
    assert LOSSES.names() == ["cross_entropy", "focal", "label_smoothing", "soft_f1"]
    assert VIEWS.names() == ["hflip", "scale", "shift"]
    assert {"single", "multihead", "mask", "gender", "age"} == set(TASKS.names())
    assert FACE_DETECTORS.names() == ["haar", "mtcnn"]
