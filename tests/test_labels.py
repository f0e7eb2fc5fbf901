import numpy as np
import pytest

from maskclf import labels


def test_class_table_matches_competition_rule():
    expected = {}
    for mask in range(3):
        for gender in range(2):
            for age in range(3):
                expected[(mask, gender, age)] = 6 * mask + 3 * gender + age
    for (mask, gender, age), cls in expected.items():
        assert labels.encode_class(mask, gender, age) == cls
        assert labels.decode_class(cls) == (mask, gender, age)
    assert sorted(expected.values()) == list(range(18))


@pytest.mark.parametrize(("stem", "mask"), [
    ("mask1", 0), ("mask2", 0), ("mask3", 0), ("mask4", 0), ("mask5", 0),
    ("incorrect_mask", 1), ("normal", 2),
])
def test_mask_from_stem(stem, mask):
    assert labels.MASK_STEMS[stem] == mask


def test_gender_codes():
    assert labels.GENDERS == {"male": 0, "female": 1}


@pytest.mark.parametrize(("age", "bucket"), [(0, 0), (29, 0), (30, 1), (59, 1), (60, 2), (90, 2)])
def test_age_buckets(age, bucket):
    assert labels.age_bucket(age) == bucket
    assert labels.age_bucket(np.array([age]))[0] == bucket


def test_age_threshold_moves_old_boundary():
    assert labels.age_bucket(58, old_from=58) == 2
    assert labels.age_bucket(57, old_from=58) == 1


def test_marginals_sum_over_other_attributes():
    probs = np.zeros((1, 18))
    probs[0, labels.encode_class(1, 0, 2)] = 0.75
    probs[0, labels.encode_class(2, 1, 2)] = 0.25
    marginals = labels.attribute_marginals(probs)
    np.testing.assert_allclose(marginals["mask"], [[0, 0.75, 0.25]])
    np.testing.assert_allclose(marginals["gender"], [[0.75, 0.25]])
    np.testing.assert_allclose(marginals["age"], [[0, 0, 1.0]])
