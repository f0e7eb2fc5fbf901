"""How sure a score is: person-bootstrap intervals and paired differences — computed here only.

A validation set of a few hundred persons gives every macro F1 a spread of several hundredths,
and the images of one person are not independent (seven photos, one face), so the unit of
resampling is the person: each draw takes as many persons as there are, with replacement, and
every image of a drawn person counts once per time the person was drawn. Every system scored
on the same :class:`PersonBootstrap` is scored on the same draws, so the difference between two
systems is *paired*: the noise they share cancels, and the interval of the difference is far
narrower than the two intervals side by side would suggest.

scipy's ``bootstrap`` draws the persons and reads the percentile intervals; one vectorised
statistic scores every system and every difference on a whole batch of draws with five
matrix products, so 1,000 draws over 4,000 images take well under a second.

>>> import numpy as np
>>> truth = np.array([0, 0, 3, 3, 6, 6, 9, 9])
>>> persons = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
>>> boot = PersonBootstrap(truth, persons, draws=200)
>>> result = boot.compare([truth, np.array([0, 0, 3, 3, 6, 6, 9, 0])])
>>> result.scores[0]["macro_f1"].value, result.verdicts(1)["accuracy"]
(1.0, 'within noise')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from maskclf import labels

METRICS = ("macro_f1", "mask_f1", "gender_f1", "age_f1", "accuracy")
"""What is resampled: the 18-class macro F1, each attribute's macro F1, accuracy."""
DRAWS = 1000
"""Bootstrap draws by default: the ends of a 95 % interval move by about 0.002 between
seeds of the draws at 1,000 on a few hundred persons."""
LEVEL = 0.95
SEED = 0
"""The draws' seed: the same inputs always give the same interval."""
PERSON_COLUMNS = ("person", "person_id")
"""A labels file names persons in one of these columns (the eval labels of this project's
real-photo set use ``person_id``)."""


def percentile_interval(value: float, draws: np.ndarray, level: float = LEVEL) -> Interval:
    """``value`` with the central ``level`` share of its bootstrap ``draws`` around it."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high))


@dataclass(frozen=True)
class Interval:
    """A figure on all rows and the percentile interval of its bootstrap draws."""

    value: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """For a difference B - A: ``better`` when the whole interval is above zero,
        ``worse`` when below, else ``within noise``."""
        return "better" if self.low > 0 else "worse" if self.high < 0 else "within noise"

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}

    def text(self, signed: bool = False) -> str:
        """``0.546 [0.491, 0.602]`` (``+0.012 [-0.010, +0.035]`` with ``signed``)."""
        form = "{:+.3f}" if signed else "{:.3f}"
        return (f"{form.format(self.value)} [{form.format(self.low)}, "
                f"{form.format(self.high)}]")


def _one_hot(groups: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Rows x (sum of sizes): one block of indicator columns per group of labels."""
    return np.concatenate([np.eye(size)[values] for values, size in zip(groups, sizes,
                                                                         strict=True)], axis=1)


class PersonBootstrap:
    """Draws of persons shared by every system scored on them.

    ``truth`` holds the 18-class labels of the rows (``labels.truth_codes``: a row that
    does not know an attribute counts in neither that attribute's F1 nor the 18-class
    figures), ``persons`` who each row shows. The same arguments always give the same
    draws (``seed``), so intervals computed in two places agree.
    """

    BLOCKS = [labels.NUM_CLASSES, *(len(values) for values in labels.ATTRIBUTES.values())]

    def __init__(self, truth, persons, draws: int = DRAWS, seed: int = SEED,
                 level: float = LEVEL):
        truth = np.asarray(truth, dtype=np.int64)
        if len(truth) != len(persons) or not len(truth):
            raise ValueError(f"{len(truth)} labels for {len(persons)} persons")
        if draws < 2:
            raise ValueError(f"draws must be at least 2; got {draws}")
        classes, known, _ = labels.split_code(truth)
        self.truth, self._full = classes, known[0] & known[1] & known[2]
        self.person_ids, self.row_person = np.unique(np.asarray(persons, dtype=str),
                                                     return_inverse=True)
        self.draws, self.seed, self.level = draws, seed, level
        # rows x columns: 1 where the row's label knows what the column's block scores
        self._scored = np.repeat(np.stack([self._full, *known], axis=1), self.BLOCKS,
                                 axis=1).astype(float)
        self._truth_hot = self._hot(classes)

    @property
    def n_persons(self) -> int:
        return len(self.person_ids)

    def _hot(self, classes: np.ndarray) -> np.ndarray:
        """The rows' indicator columns, zero in each block the row's label does not know."""
        return _one_hot([classes, *labels.decode_class(classes)], self.BLOCKS) * self._scored

    def _scores(self, weights: np.ndarray, predicted_hot: np.ndarray,
                correct: np.ndarray) -> np.ndarray:
        """Every metric for each row of ``weights`` (draws x rows): metrics x draws."""
        true_counts = weights @ self._truth_hot
        predicted_counts = weights @ predicted_hot
        hits = weights @ (self._truth_hot * predicted_hot)
        figures, start = [], 0
        for size in self.BLOCKS:
            block = slice(start, start + size)
            start += size
            both = true_counts[:, block] + predicted_counts[:, block]
            present = both > 0
            f1 = np.divide(2 * hits[:, block], both, out=np.zeros_like(both), where=present)
            figures.append(f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1))
        figures.append(weights @ correct / np.maximum(weights @ self._full, 1))
        return np.stack(figures)

    def _statistic(self, systems: Sequence[np.ndarray]):
        hots = [self._hot(predicted) for predicted in systems]
        correct = [((predicted == self.truth) & self._full).astype(float)
                   for predicted in systems]

        def statistic(drawn_persons: np.ndarray, axis: int = -1) -> np.ndarray:
            drawn = np.atleast_2d(np.moveaxis(drawn_persons, axis, -1))
            offsets = np.arange(len(drawn))[:, None] * self.n_persons
            counts = np.bincount((drawn + offsets).ravel(), minlength=drawn.size).reshape(
                len(drawn), self.n_persons)
            weights = counts[:, self.row_person].astype(float)
            scores = [self._scores(weights, hot, right) for hot, right in zip(
                hots, correct, strict=True)]
            differences = [score - scores[0] for score in scores[1:]]
            result = np.concatenate(scores + differences)
            return result[:, 0] if drawn_persons.ndim == 1 else result

        return statistic

    def compare(self, systems: Sequence[np.ndarray]) -> Comparison:
        """Score each system's 18-class predictions (rows as ``truth``) on the same draws,
        and each one after the first against the first."""
        systems = [np.asarray(predicted, dtype=np.int64) for predicted in systems]
        for predicted in systems:
            if predicted.shape != self.truth.shape:
                raise ValueError(f"{len(predicted)} predictions for {len(self.truth)} labels")
        statistic = self._statistic(systems)
        point = statistic(np.arange(self.n_persons))
        if self.n_persons < 2:  # one person: nothing to resample
            distribution = np.repeat(point[:, None], self.draws, axis=1)
        else:
            distribution = stats.bootstrap(
                (np.arange(self.n_persons),), statistic, vectorized=True, paired=False,
                n_resamples=self.draws, batch=min(self.draws, 250), method="percentile",
                confidence_level=self.level, rng=np.random.default_rng(self.seed)
            ).bootstrap_distribution
        return Comparison(point, distribution, len(systems), self.level)

    def intervals(self, predicted) -> dict[str, Interval]:
        """One system's metrics with their intervals."""
        return self.compare([predicted]).scores[0]


@dataclass(frozen=True)
class Comparison:
    """The figures of :meth:`PersonBootstrap.compare`: ``point`` on all rows and
    ``distribution`` over the draws, rows = each system's metrics, then each difference's."""

    point: np.ndarray
    distribution: np.ndarray
    systems: int
    level: float

    def _block(self, start: int) -> dict[str, Interval]:
        return {metric: percentile_interval(self.point[start + i],
                                            self.distribution[start + i], self.level)
                for i, metric in enumerate(METRICS)}

    @property
    def scores(self) -> list[dict[str, Interval]]:
        """Each system's metrics with their intervals."""
        return [self._block(i * len(METRICS)) for i in range(self.systems)]

    def difference(self, system: int) -> dict[str, Interval]:
        """System ``system`` minus the first, per metric, paired on the same draws."""
        if not 1 <= system < self.systems:
            raise IndexError(f"system {system} has no difference from the first")
        return self._block((self.systems + system - 1) * len(METRICS))

    def point_of(self, system: int) -> np.ndarray:
        """One system's metrics on all rows (in ``METRICS`` order)."""
        return self.point[system * len(METRICS):(system + 1) * len(METRICS)]

    def draws_of(self, system: int) -> np.ndarray:
        """One system's metrics on every draw (metrics x draws), for pooling over seeds."""
        return self.distribution[system * len(METRICS):(system + 1) * len(METRICS)]

    def verdicts(self, system: int) -> dict[str, str]:
        return {metric: interval.verdict for metric, interval in
                self.difference(system).items()}


def interval_dict(intervals: dict[str, Interval]) -> dict[str, dict]:
    """Intervals as JSON: ``{metric: {value, low, high}}``."""
    return {metric: interval.as_dict() for metric, interval in intervals.items()}


def summary_intervals(truth, predicted, persons, draws: int = DRAWS) -> dict:
    """What a run's ``summary.json`` and every printed score carry: the person-bootstrap
    interval of each metric, with the level and how many persons and draws it rests on."""
    boot = PersonBootstrap(truth, persons, draws=draws)
    return {"level": boot.level, "persons": boot.n_persons, "draws": draws,
            **interval_dict(boot.intervals(predicted))}


def paired_gain(truth, persons, simpler, other, metric: str = "macro_f1") -> Interval:
    """``other`` minus ``simpler`` (predicted classes of the same rows) on the same person
    draws. Every choice maskclf makes by score takes the costlier or more complex option
    only when this interval is above zero (``verdict == "better"``): between options within
    noise, the simpler is kept (the one-standard-error rule)."""
    return PersonBootstrap(truth, persons).compare([simpler, other]).difference(1)[metric]
