import pytest
import torch

from maskclf.tta import check_views, list_views, tta_probs


def _flip_invariant(images: torch.Tensor) -> torch.Tensor:
    """A 'model' whose output ignores left-right order: softmax of per-row channel means."""
    return torch.softmax(images.mean(dim=3).flatten(1)[:, :18], dim=1)


def test_flip_invariant_model_is_unchanged_by_hflip_tta():
    images = torch.rand(4, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    plain = _flip_invariant(images)
    torch.testing.assert_close(tta_probs(_flip_invariant, images, ["hflip"]), plain)


def test_tta_averages_views():
    images = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(1))

    def first_pixel(x):
        return x[:, :1, 0, :1].flatten(1)

    averaged = tta_probs(first_pixel, images, ["hflip"])
    torch.testing.assert_close(averaged, (images[:, :1, 0, :1] + images[:, :1, 0, -1:]).flatten(1)
                               / 2)


@pytest.mark.parametrize("name", list_views())
def test_views_keep_shape(name):
    images = torch.rand(2, 3, 20, 16)
    assert tta_probs(lambda x: x, images, [name]).shape == images.shape


def test_unknown_view():
    with pytest.raises(ValueError, match="unknown TTA view"):
        check_views(["vflip"])
