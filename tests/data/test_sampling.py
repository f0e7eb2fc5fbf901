import numpy as np
import pandas as pd
import pytest

from maskclf.data.sampling import EpochSampler, class_weights, oversample, sample_weights


def test_inverse_weights_on_a_known_table():
    np.testing.assert_allclose(class_weights([10, 0, 5], "inverse"), [2 / 3, 0, 4 / 3])


def test_effective_number_weights_on_a_known_table():
    beta = 0.9
    raw = np.array([(1 - beta) / (1 - beta**10), (1 - beta) / (1 - beta**2)])
    expected = raw * 2 / raw.sum()
    np.testing.assert_allclose(class_weights([10, 2], "effective", beta), expected)
    assert class_weights([10, 2], "none") is None


def test_balanced_sampler_draws_minority_at_expected_rate():
    keys = pd.Series([0] * 900 + [1] * 100)
    sampler = EpochSampler(len(keys), seed=0, weights=sample_weights(keys))
    drawn = np.concatenate([keys.to_numpy()[[i for i, _ in sampler]]
                            for sampler.epoch in range(20)])
    assert abs((drawn == 1).mean() - 0.5) < 0.02


def test_epoch_order_is_a_function_of_seed_and_epoch():
    sampler = EpochSampler(50, seed=3)
    sampler.set_epoch(4)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(50)) and {e for _, e in first} == {4}
    again = EpochSampler(50, seed=3)
    again.set_epoch(4)
    assert list(again) == first  # a fresh (resumed) sampler replays the epoch
    again.set_epoch(5)
    assert list(again) != first


def test_oversample_multiplies_class_rows():
    records = pd.DataFrame({"class": [0] * 10 + [7] * 4})
    out = oversample(records, {7: 3.0}, seed=0)
    assert (out["class"] == 7).sum() == 12 and (out["class"] == 0).sum() == 10
    with pytest.raises(ValueError, match="factors >= 1"):
        oversample(records, {7: 0.5}, seed=0)
