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


def test_batches_in_halves_put_own_rows_first_and_drawn_rows_second():
    pool = np.arange(20, 60)
    sampler = EpochSampler(60, seed=1, draws=[(pool[:30], 14), (pool[30:], 6)], halves_of=8)
    assert len(sampler) == 40  # 20 own rows and 20 drawn: five batches of 4 + 4
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = np.array([index for index, _ in sampler]).reshape(-1, 8)
        assert (order[:, :4] < 20).all() and (order[:, 4:] >= 20).all()
        assert sorted(order[:, :4].ravel()) == list(range(20))  # every own row once
        assert ((order[:, 4:] >= 50).sum()) == 6  # each pool its count


def test_batches_in_halves_end_with_the_shorter_half():
    sampler = EpochSampler(30, seed=1, draws=[(np.arange(25, 30), 5)], halves_of=4)
    assert len(sampler) == 8  # 5 drawn rows fill two half batches; the 25 own rows wait
    order = [index for index, _ in sampler]
    assert len(order) == 8 and len(set(order)) == 8
