"""The competition's label space: three attributes combined into 18 classes.

class = 6 * mask + 3 * gender + age, so the class id alone recovers every attribute:

>>> encode_class(mask=1, gender=1, age=2)
11
>>> decode_class(11)
(1, 1, 2)
>>> age_bucket(29), age_bucket(30), age_bucket(59), age_bucket(60)
(0, 1, 1, 2)
"""

from __future__ import annotations

import numpy as np

MASK_NAMES = ("wear", "incorrect", "not_wear")
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "mask": MASK_NAMES,
    "gender": GENDER_NAMES,
    "age": AGE_NAMES,
}
ATTRIBUTE_SIZES = {name: len(values) for name, values in ATTRIBUTES.items()}
NUM_CLASSES = len(MASK_NAMES) * len(GENDER_NAMES) * len(AGE_NAMES)
CLASS_COLUMNS = [f"class_{i}" for i in range(NUM_CLASSES)]
"""The probability columns of every prediction file, one per class id."""

AGE_YOUNG_BELOW = 30
AGE_OLD_FROM = 60

MASK_STEMS = {
    **{f"mask{i}": 0 for i in range(1, 6)},
    "incorrect_mask": 1,
    "normal": 2,
}
GENDERS = {name: i for i, name in enumerate(GENDER_NAMES)}


def encode_class(mask, gender, age):
    """Combine attribute ids (ints or integer arrays) into the 18-class id."""
    return 6 * mask + 3 * gender + age


def decode_class(cls):
    """Split class ids (an int or an integer array) into (mask, gender, age)."""
    return cls // 6, (cls // 3) % 2, cls % 3


def age_bucket(age, old_from: int = AGE_OLD_FROM):
    """Age bucket: <30 -> 0, <old_from -> 1, else 2. Works on ints and arrays.

    ``old_from`` moves the "old" boundary for training labels only; scoring always
    uses the default of 60.
    """
    if np.ndim(age) == 0:
        return 0 if age < AGE_YOUNG_BELOW else (1 if age < old_from else 2)
    age = np.asarray(age)
    return np.where(age < AGE_YOUNG_BELOW, 0, np.where(age < old_from, 1, 2))


def in_age_ranges(ages, ranges) -> np.ndarray:
    """True where an age (years) falls in any inclusive [low, high] range; unknown ages
    (negative, as pseudo-labels have) never do."""
    ages = np.asarray(ages)
    hit = np.zeros(ages.shape, dtype=bool)
    for low, high in ranges:
        hit |= (ages >= low) & (ages <= high)
    return hit


def class_names() -> list[str]:
    """Human-readable names of the 18 classes, in class-id order."""
    return [
        f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
        for m, g, a in (decode_class(c) for c in range(NUM_CLASSES))
    ]


def combine_attributes(mask, gender, age):
    """N x 18 class probabilities from per-attribute ones, p(m, g, a) = p(m) p(g) p(a): the
    inverse of ``attribute_marginals`` for independent attributes. NumPy arrays or torch
    tensors; no Python batch size, so an exported graph keeps a dynamic batch axis."""
    joint = mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]
    return joint.reshape(-1, NUM_CLASSES)


def attribute_marginals(probs):
    """Per-attribute marginals (N x 3, N x 2, N x 3) of N x 18 probabilities or counts.

    Works on NumPy arrays and torch tensors alike (losses use it on soft targets), so the
    18 -> attribute rule is written once.
    """
    cube = probs.reshape(-1, len(MASK_NAMES), len(GENDER_NAMES), len(AGE_NAMES))
    return {
        "mask": cube.sum(axis=(2, 3)),
        "gender": cube.sum(axis=(1, 3)),
        "age": cube.sum(axis=(1, 2)),
    }


def combine_networks(outputs: dict[str, list[np.ndarray]]) -> np.ndarray:
    """N x 18 probabilities of a fold ensemble, the one place this rule lives: each task's
    outputs averaged over its folds, then, for three attribute tasks, the product rule
    (an 18-class task — single or multi-head — passes through its mean)."""
    means = {task: np.mean(np.stack(parts), axis=0, dtype=np.float64)
             for task, parts in outputs.items()}
    if set(means) == set(ATTRIBUTES):
        return combine_attributes(*(means[name] for name in ATTRIBUTES))
    if len(means) != 1:
        raise ValueError(f"networks of tasks {sorted(means)} do not combine: one 18-class "
                         f"task, or the attributes {list(ATTRIBUTES)}")
    return next(iter(means.values()))
