"""The person vote: grouping, purity, the vote itself, and the check that decides it."""

import numpy as np

from maskclf import labels
from maskclf.results.person_vote import check_vote, group_persons, person_vote, purity, verdict


def _faces(persons: int, size: int = 7, noise: float = 0.05, seed: int = 0):
    """Embeddings where each person's images lie near one random direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(persons, 32))
    owner = np.repeat(np.arange(persons), size)
    return centres[owner] + noise * rng.normal(size=(len(owner), 32)), owner


def _probs(classes: np.ndarray, wrong_age: np.ndarray, seed: int = 0) -> np.ndarray:
    """Confident 18-class probabilities, with the age of rows ``wrong_age`` mistaken."""
    rng = np.random.default_rng(seed)
    mask, gender, age = labels.decode_class(classes)
    age = np.where(wrong_age, (age + 1) % 3, age)
    probs = np.full((len(classes), 18), 0.01) + 0.02 * rng.random((len(classes), 18))
    probs[np.arange(len(classes)), labels.encode_class(mask, gender, age)] = 1.0
    return probs / probs.sum(axis=1, keepdims=True)


def test_separated_faces_group_into_their_persons():
    embeddings, owner = _faces(20)
    groups = group_persons(embeddings, 7)
    assert len(np.unique(groups)) == 20 and purity(groups, owner) == 1.0


def test_purity_counts_rows_outside_their_groups_majority():
    persons = np.array([0, 0, 0, 1, 1, 1])
    assert purity(np.array([0, 0, 0, 1, 1, 1]), persons) == 1.0
    assert purity(np.array([0, 0, 1, 1, 1, 1]), persons) == 5 / 6
    assert purity(np.zeros(6, dtype=int), persons) == 0.5


def test_the_vote_sets_a_groups_gender_and_age_and_keeps_each_images_mask():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(18), size=6)
    groups = np.array([0, 0, 0, 1, 1, 1])
    voted = person_vote(probs, groups)
    before, after = labels.attribute_marginals(probs), labels.attribute_marginals(voted)
    np.testing.assert_allclose(voted.sum(axis=1), 1.0)
    np.testing.assert_allclose(after["mask"], before["mask"])
    for name in ("gender", "age"):
        np.testing.assert_allclose(after[name][:3], np.tile(before[name][:3].mean(0), (3, 1)))
        np.testing.assert_allclose(after[name][3:], np.tile(before[name][3:].mean(0), (3, 1)))


def test_a_vote_on_true_persons_fixes_minority_mistakes_and_is_accepted():
    embeddings, owner = _faces(24)
    rng = np.random.default_rng(2)
    person_class = rng.integers(0, 6, size=24)  # gender x age per person
    mask = np.tile([0, 0, 0, 0, 0, 1, 2], 24)
    classes = labels.encode_class(mask, person_class[owner] // 3, person_class[owner] % 3)
    wrong = rng.random(len(owner)) < 0.2  # one image in five gets the age wrong
    folds = owner % 3
    check = check_vote(embeddings, _probs(classes, wrong), classes, owner, folds, 7)
    assert check.purity == 1.0 and check.f1_after > check.f1_before
    assert verdict(check, 0.8) is None


def test_groups_that_are_not_persons_make_the_vote_decline_and_say_why():
    """Like faces-real, where a "person" is a composite of other people's photos."""
    rng = np.random.default_rng(3)
    owner = np.repeat(np.arange(24), 7)
    embeddings = rng.normal(size=(len(owner), 32))  # unrelated to the person
    classes = labels.encode_class(np.tile([0, 0, 0, 0, 0, 1, 2], 24),
                                  (owner // 2) % 2, owner % 3)
    check = check_vote(embeddings, _probs(classes, np.zeros(len(owner), bool)), classes,
                       owner, owner % 3, 7)
    assert check.purity < 0.5
    assert "purity" in verdict(check, 0.8)


def test_a_vote_that_lowers_f1_is_declined_even_with_pure_groups():
    embeddings, owner = _faces(12)
    classes = labels.encode_class(np.zeros(len(owner), int), np.zeros(len(owner), int),
                                  np.tile([0, 0, 0, 0, 1, 1, 1], 12))  # age differs within
    check = check_vote(embeddings, _probs(classes, np.zeros(len(owner), bool)), classes,
                       owner, owner % 2, 7)
    assert check.purity == 1.0 and check.f1_change < 0
    assert "does not help" in verdict(check, 0.8)


def test_a_gain_within_noise_is_declined_and_its_interval_named():
    from maskclf.intervals import Interval
    from maskclf.results.person_vote import VoteCheck

    check = VoteCheck(0.95, 0.40, 0.41, 140, Interval(0.01, -0.02, 0.04))
    assert check.f1_change > 0
    reason = verdict(check, 0.8)
    assert "beyond noise" in reason and "[-0.020, +0.040]" in reason
    assert verdict(VoteCheck(0.95, 0.40, 0.46, 140, Interval(0.06, 0.02, 0.10)), 0.8) is None


def test_the_check_scores_only_rows_whose_label_knows_every_attribute():
    """The same vote, its check with a third of the rows' ages wrong in the labels: scored,
    they make the vote look worse; made unknown (a review's "not sure"), they are left out
    and the check is the clean one."""
    embeddings, owner = _faces(24)
    rng = np.random.default_rng(2)
    person_class = rng.integers(0, 6, size=24)
    mask = np.tile([0, 0, 0, 0, 0, 1, 2], 24)
    classes = labels.encode_class(mask, person_class[owner] // 3, person_class[owner] % 3)
    probs, folds = _probs(classes, rng.random(len(owner)) < 0.2), owner % 3
    clean = check_vote(embeddings, probs, classes, owner, folds, 7)
    doubtful = rng.random(len(owner)) < 0.3
    mask_, gender, age = labels.decode_class(classes)
    mislabelled = np.where(doubtful, labels.encode_class(mask_, gender, (age + 1) % 3), classes)
    scored = check_vote(embeddings, probs, mislabelled, owner, folds, 7)
    unknown = mislabelled + labels.NUM_CLASSES * labels.UNKNOWN_BITS["age"] * doubtful
    left_out = check_vote(embeddings, probs, unknown, owner, folds, 7)
    assert scored.f1_before < clean.f1_before
    keep = ~doubtful
    kept = check_vote(embeddings[keep], probs[keep], classes[keep], owner[keep], folds[keep], 7)
    assert left_out.f1_before == kept.f1_before and left_out.f1_before != scored.f1_before
    assert left_out.f1_after != scored.f1_after  # the voted figure leaves them out too
