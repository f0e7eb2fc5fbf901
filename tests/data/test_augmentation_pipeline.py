"""aug.pipeline: any albumentations pipeline from a file (or a preset), seeded like the
built-in augmentation, checked before a run starts."""

import albumentations as A
import numpy as np
import pytest

from maskclf.config import AugConfig, ConfigError, DataConfig
from maskclf.data.dataset import ImageDataset
from maskclf.data.transforms import PRESETS, build_transforms, load_pipeline, pipeline_file
from maskclf.train.preflight import preflight

from ..conftest import tiny_config

PIPELINE = A.Compose([A.HorizontalFlip(p=0.5), A.CLAHE(p=1.0),
                      A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.3),
                                      hole_width_range=(0.1, 0.3), p=1.0)])


@pytest.mark.parametrize("data_format", ["yaml", "json"])
def test_a_saved_pipeline_round_trips(tmp_path, data_format):
    path = tmp_path / f"aug.{data_format}"
    A.save(PIPELINE, str(path), data_format=data_format)
    assert A.to_dict(load_pipeline(path)) == A.to_dict(PIPELINE)


def _augmented(root, pipeline, seed, epoch=3):
    paths = [str(p.relative_to(root)) for p in sorted((root / "train/images").rglob("*.*"))][:3]
    dataset = ImageDataset(root, paths, [0] * 3, DataConfig(image_size=(32, 24), cache="none"),
                           build_transforms(AugConfig(pipeline=pipeline), train=True, seed=seed))
    return [dataset[(i, epoch)][0] for i in range(3)]


def test_the_pipeline_is_applied_with_the_runs_seed(synthetic_root, tmp_path):
    path = tmp_path / "aug.yaml"
    A.save(PIPELINE, str(path), data_format="yaml")
    first, again = _augmented(synthetic_root, path, 5), _augmented(synthetic_root, path, 5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _augmented(synthetic_root, path, 6)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    plain = ImageDataset(synthetic_root, [str(p.relative_to(synthetic_root)) for p in sorted(
        (synthetic_root / "train/images").rglob("*.*"))][:1], None,
        DataConfig(image_size=(32, 24), cache="none"), None)[0][0]
    assert not np.array_equal(first[0], plain)  # CLAHE and dropout always change the image


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_presets_load_by_name_and_keep_the_size(preset):
    assert preflight(tiny_config(f"aug.pipeline={preset}"))


def test_a_pipeline_that_resizes_or_does_not_exist_is_a_config_error(tmp_path):
    path = tmp_path / "resize.yaml"
    A.save(A.Compose([A.Resize(10, 10)]), str(path), data_format="yaml")
    with pytest.raises(ConfigError, match=r"into \[10, 10\]"):
        preflight(tiny_config(f"aug.pipeline={path}"))
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        preflight(tiny_config(f"aug.pipeline={tmp_path / 'missing.yaml'}"))


def test_a_run_saved_before_the_recipes_folder_was_renamed_finds_its_pipeline(tmp_path):
    """Old runs' configs name the packaged pipeline by its absolute path in ``configs/aug/``;
    after the rename to ``recipes/`` that path is gone and the packaged file is used."""
    old = tmp_path / "site-packages/maskclf/configs/aug/strong.yaml"
    assert pipeline_file(old) == PRESETS / "strong.yaml"
    assert preflight(tiny_config(f"aug.pipeline={old}"))
    elsewhere = tmp_path / "my/aug/strong.yaml"  # not the packaged folder: no guess
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        preflight(tiny_config(f"aug.pipeline={elsewhere}"))
