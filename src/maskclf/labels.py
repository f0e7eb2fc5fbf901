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

from typing import NamedTuple

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


RECORD_COLUMNS = {"mask": "mask", "gender": "gender", "age": "age_group"}
"""The column of a records table that holds each attribute's value id."""

UNKNOWN = -1
"""The value of an attribute a training row does not know (outside data, ``data.external``)."""
UNKNOWN_BITS = {"mask": 1, "gender": 2, "age": 4}
"""Each attribute's bit in a set of unknown attributes (a partial code, the ``unknown``
column of records, OOF files and labels files)."""
UNKNOWN_COLUMN = "unknown"
"""The column of a labelled table (records, oof.csv, a labels file) with the bits of the
attributes its row does not know (``data.corrections``; absent: every row knows all)."""
SOURCE_STRIDE = NUM_CLASSES * 8
"""A partial code's step from one source to the next: 18 classes x 8 sets of unknowns."""


def partial_code(mask, gender, age, source=0):
    """The training target of a row that may not know every attribute (``UNKNOWN``): the
    class of its known values (0 for an unknown one), plus ``NUM_CLASSES`` x the bits of its
    unknown attributes (mask 1, gender 2, age 4), plus ``SOURCE_STRIDE`` x its source (0: the
    competition's photos). A competition row's code is its class id. Ints or arrays.

    >>> partial_code(2, UNKNOWN, 1, source=1)  # not_wear, gender unknown, 30-59, source 1
    193
    >>> split_code(193)
    (13, (True, False, True), 1)
    """
    bits = UNKNOWN_BITS
    unknown = (mask < 0) * bits["mask"] + (gender < 0) * bits["gender"] + (age < 0) * bits["age"]
    known_class = encode_class(mask * (mask >= 0), gender * (gender >= 0), age * (age >= 0))
    return known_class + NUM_CLASSES * unknown + SOURCE_STRIDE * source


def split_code(codes):
    """A partial code (an int, array or tensor) as (class of the known values, (mask known,
    gender known, age known), source)."""
    classes, unknown = codes % NUM_CLASSES, (codes // NUM_CLASSES) % 8
    return (classes, tuple(unknown & bit == 0 for bit in UNKNOWN_BITS.values()),
            codes // SOURCE_STRIDE)


def truth_codes(table) -> np.ndarray:
    """The truth of a labelled table as partial codes: its ``class`` where the row knows
    every attribute, plus ``NUM_CLASSES`` x its ``unknown`` bits where it does not (what
    scoring leaves out, attribute by attribute)."""
    classes = np.asarray(table["class"], dtype=np.int64)
    if UNKNOWN_COLUMN not in table:
        return classes
    return classes + NUM_CLASSES * np.asarray(table[UNKNOWN_COLUMN], dtype=np.int64)


def unknown_names(bits: int) -> str:
    """The attributes a set of unknown bits names, space-separated ("" for none)."""
    return " ".join(name for name, bit in UNKNOWN_BITS.items() if int(bits) & bit)


class ClassCounts(NamedTuple):
    """What class weights count: the 18 classes over the rows that know every attribute, and
    each attribute's values over the rows that know that attribute."""

    classes: np.ndarray
    attributes: dict[str, np.ndarray]

    @classmethod
    def of(cls, codes) -> ClassCounts:
        """The counts of training targets (class ids or partial codes)."""
        classes, known, _ = split_code(np.asarray(codes, dtype=np.int64))
        full = known[0] & known[1] & known[2]
        values = decode_class(classes)
        return cls(np.bincount(classes[full], minlength=NUM_CLASSES),
                   {name: np.bincount(value[mask], minlength=ATTRIBUTE_SIZES[name])
                    for name, value, mask in zip(ATTRIBUTES, values, known, strict=True)})


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
