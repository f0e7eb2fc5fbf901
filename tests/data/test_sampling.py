import numpy as np
import pandas as pd

from maskclf.data.sampling import EpochSampler, oversample, sample_weights


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


def test_an_outside_pool_gives_its_count_each_epoch_drawn_anew():
    pool = np.arange(10, 40)
    sampler = EpochSampler(40, seed=3, draws=[(pool, 5)])
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = [index for index, _ in sampler]
        assert len(order) == len(sampler) == 15
        assert sorted(i for i in order if i < 10) == list(range(10))  # every own row once
        drawn = [i for i in order if i >= 10]
        assert len(drawn) == 5 == len(set(drawn))  # no repeats while the pool is larger
        epochs.append(sorted(drawn))
    assert epochs[0] != epochs[1]  # drawn anew
    sampler.set_epoch(1)
    assert sorted(i for i, _ in sampler if i >= 10) == epochs[1]  # and replayed exactly
