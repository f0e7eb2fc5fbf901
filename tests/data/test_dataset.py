import numpy as np

from maskclf.config import AugConfig, DataConfig
from maskclf.data.dataset import ImageDataset
from maskclf.data.transforms import build_transforms


def _dataset(root, seed):
    paths = [str(p.relative_to(root)) for p in sorted((root / "train/images").rglob("*.*"))][:4]
    aug = AugConfig(hflip=0.5, shift_scale_rotate=1.0, color_jitter=1.0)
    return ImageDataset(root, paths, [0] * len(paths), DataConfig(image_size=(32, 24),
                        cache="none"), build_transforms(aug, train=True, seed=seed))


def test_augmentation_depends_only_on_seed_epoch_and_index(synthetic_root):
    first, second = _dataset(synthetic_root, 7), _dataset(synthetic_root, 7)
    forward = [first[(i, 3)][0] for i in range(4)]
    backward = [second[(i, 3)][0] for i in reversed(range(4))][::-1]  # another order/worker
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[(0, 3)][0], first[(0, 4)][0])  # a new epoch, new view
    assert not np.array_equal(first[(0, 3)][0], _dataset(synthetic_root, 8)[(0, 3)][0])


def test_crop_margin_stores_larger_images_and_crops_to_the_network_size(synthetic_root):
    cfg = DataConfig(image_size=(32, 24), crop_margin=0.25, cache="none")
    paths = [str(p.relative_to(synthetic_root))
             for p in sorted((synthetic_root / "train/images").rglob("*.*"))][:2]
    train = ImageDataset(synthetic_root, paths, [0, 0], cfg,
                         build_transforms(AugConfig(hflip=0, shift_scale_rotate=0,
                                                    color_jitter=0), True, 0, crop_to=(32, 24)))
    evaluation = ImageDataset(synthetic_root, paths, None, cfg, None)
    stored = train.load(0)
    assert stored.shape == (40, 30, 3)
    crops = [train[(0, epoch)][0] for epoch in range(8)]
    assert all(c.shape == (32, 24, 3) for c in crops)
    assert len({c.tobytes() for c in crops}) > 1  # a random window per epoch
    np.testing.assert_array_equal(evaluation[0][0], stored[4:36, 3:27])  # the centre
