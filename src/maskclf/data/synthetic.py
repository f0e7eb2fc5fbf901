"""A procedural dataset in the exact competition layout, for demos and tests.

Each person has a fixed look (face shape, skin, hair colour and style); each of their
seven photos varies pose, size, lighting, background, mask colour and noise. The
attributes are visible but must be learned:

* mask: over mouth and nose (wear), below the nose or on the chin (incorrect), absent;
* gender: long hair falling to the shoulders (female) or short hair (male);
* age: hair from coloured (<30) through greying (30-59) to grey-white (>=60), and forehead
  lines that deepen with age.

Everything is drawn from ``numpy.random.default_rng([seed, person])``, so a seed gives the
same bytes on every machine and persons can be drawn in any order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.data.layout import EVAL_CSV, EVAL_IMAGES, TRAIN_CSV, TRAIN_IMAGES
from maskclf.errors import UsageError

WIDTH, HEIGHT = 384, 512
STEMS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
RACES = ("Asian", "Asian", "Asian", "White", "Black")
AGE_RANGES = ((18, 29), (30, 59), (60, 80))
SKIN_TONES = ((224, 190, 160), (200, 160, 125), (165, 120, 90), (110, 75, 55), (240, 210, 185))
HAIR_COLOURS = ((25, 20, 18), (70, 45, 30), (120, 80, 40), (200, 160, 90), (140, 50, 25))
MASK_COLOURS = ((120, 180, 235), (245, 245, 245), (25, 25, 30), (40, 150, 150), (60, 70, 160))


@dataclass(frozen=True)
class Person:
    """A synthetic person: the folder name and the look shared by all their photos."""

    id: str
    gender: int
    race: str
    age: int
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    face_w: float
    face_h: float

    @property
    def folder(self) -> str:
        return f"{self.id}_{labels.GENDER_NAMES[self.gender]}_{self.race}_{self.age}"


def _jitter(rng: np.random.Generator, colour, spread: float) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.normal(0, spread), 0, 255)) for c in colour)


def hair_colour(rng: np.random.Generator, age_group: int) -> tuple[float, float, float]:
    """Coloured hair when young, mixed with grey in the middle bucket, grey-white when old."""
    base = np.array(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], dtype=float)
    grey = rng.uniform(175, 235)
    share = (rng.uniform(0.0, 0.1), rng.uniform(0.4, 0.6), rng.uniform(0.85, 1.0))[age_group]
    return _jitter(rng, base * (1 - share) + grey * share, 6)


def make_person(rng: np.random.Generator, person_id: str, gender: int, age_group: int) -> Person:
    low, high = AGE_RANGES[age_group]
    return Person(
        id=person_id,
        gender=gender,
        race=RACES[rng.integers(len(RACES))],
        age=int(rng.integers(low, high + 1)),
        skin=_jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 8),
        hair=hair_colour(rng, age_group),
        face_w=float(rng.uniform(78, 96)),
        face_h=float(rng.uniform(102, 122)),
    )


class _Canvas:
    """Draws shapes given in face coordinates (origin at the face centre) onto an image,
    and, when given ``regions``, marks their pixels (1) in ``regions[self.region]``."""

    def __init__(self, image: np.ndarray, centre, scale: float, angle_deg: float,
                 regions: dict[str, np.ndarray] | None = None):
        self.image = image
        self.regions, self.region = regions, "person"
        theta = np.deg2rad(angle_deg)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        self._matrix = rotation * scale
        self._centre = np.asarray(centre, dtype=float)

    def _map(self, points) -> np.ndarray:
        points = np.asarray(points, dtype=float) @ self._matrix.T + self._centre
        return np.round(points).astype(np.int32)

    def _marks(self) -> list[np.ndarray]:
        if self.regions is None:
            return []
        return [self.regions.setdefault(self.region, np.zeros(self.image.shape[:2], np.uint8))]

    def polygon(self, points, colour) -> None:
        for target, value in [(self.image, colour), *((m, 1) for m in self._marks())]:
            cv2.fillPoly(target, [self._map(points)], value, lineType=cv2.LINE_AA)

    def ellipse(self, centre, axes, colour, start=0, end=360) -> None:
        outline = cv2.ellipse2Poly((0, 0), (1000, 1000), 0, start, end, 5) / 1000.0
        self.polygon(outline * np.asarray(axes) + np.asarray(centre), colour)

    def line(self, start, end, colour, thickness: float) -> None:
        (x0, y0), (x1, y1) = self._map([start, end])
        width = max(1, round(thickness * abs(np.linalg.det(self._matrix)) ** 0.5))
        for target, value in [(self.image, colour), *((m, 1) for m in self._marks())]:
            cv2.line(target, (x0, y0), (x1, y1), value, width, lineType=cv2.LINE_AA)


def _background(rng: np.random.Generator) -> np.ndarray:
    top, bottom = rng.uniform(40, 230, size=3), rng.uniform(40, 230, size=3)
    ramp = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None]
    column = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(column[:, None, :], (HEIGHT, WIDTH, 3)))
    for _ in range(rng.integers(0, 5)):
        corner = rng.integers(0, [WIDTH, HEIGHT])
        size = rng.integers(20, 140, size=2)
        colour = tuple(int(c) for c in rng.integers(30, 230, size=3))
        cv2.rectangle(image, tuple(int(c) for c in corner), tuple(int(c) for c in corner + size),
                      colour, -1)
    return image


def _draw_mask(canvas: _Canvas, rng: np.random.Generator, person: Person, mask: int) -> None:
    if mask == 2:
        return
    w, h = person.face_w, person.face_h
    colour = _jitter(rng, MASK_COLOURS[rng.integers(len(MASK_COLOURS))], 10)
    if mask == 0:
        top = -0.08 * h + rng.uniform(-4, 4)  # up to the eyes, covering the nose
    elif rng.random() < 0.7:
        top = 0.34 * h + rng.uniform(-3, 3)  # below the nose
    else:
        top = 0.66 * h + rng.uniform(-3, 3)  # on the chin, mouth showing
    bottom = 0.98 * h
    canvas.polygon([(-0.92 * w, top + 8), (-0.55 * w, top), (0.55 * w, top), (0.92 * w, top + 8),
                    (0.8 * w, bottom - 10), (0.3 * w, bottom + 6), (-0.3 * w, bottom + 6),
                    (-0.8 * w, bottom - 10)], colour)
    strap = tuple(c * 0.8 for c in colour)
    canvas.line((-0.92 * w, top + 12), (-1.0 * w, -0.1 * h), strap, 3)
    canvas.line((0.92 * w, top + 12), (1.0 * w, -0.1 * h), strap, 3)


Setting = tuple[np.ndarray, tuple[float, ...]]
"""A place and clothes shared by all of a person's photos: background image, shirt colour."""


def _shirt(rng: np.random.Generator) -> tuple[float, ...]:
    return tuple(float(c) for c in rng.integers(20, 235, size=3))


def draw_setting(rng: np.random.Generator) -> Setting:
    return _background(rng), _shirt(rng)


def draw_photo(rng: np.random.Generator, person: Person, mask: int,
               setting: Setting | None = None,
               regions: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """One RGB photo of ``person`` wearing the mask state ``mask`` (0 wear, 1 incorrect, 2 none),
    in its own random setting, or in ``setting`` (a background and shirt the person's other
    photos share). ``regions`` (a dict) receives 0/1 images of where the ``person`` and the
    ``mask`` were drawn — the class evidence activation maps should find."""
    image = _background(rng) if setting is None else setting[0].copy()
    centre = (WIDTH / 2 + rng.normal(0, 14), HEIGHT * 0.42 + rng.normal(0, 14))
    canvas = _Canvas(image, centre, scale=rng.uniform(0.85, 1.15), angle_deg=rng.normal(0, 7),
                     regions=regions)
    w, h = person.face_w, person.face_h
    age_group = labels.age_bucket(person.age)
    shirt = _shirt(rng) if setting is None else setting[1]
    canvas.polygon([(-0.55 * w, 0.9 * h), (0.55 * w, 0.9 * h), (2.2 * w, 2.6 * h),
                    (-2.2 * w, 2.6 * h)], shirt)
    if person.gender == 1:
        canvas.polygon([(-1.25 * w, -0.3 * h), (1.25 * w, -0.3 * h), (1.35 * w, 1.55 * h),
                        (-1.35 * w, 1.55 * h)], person.hair)
    canvas.ellipse((0, 0), (w, h), person.skin)
    canvas.ellipse((0, -0.35 * h), (1.06 * w, 0.75 * h), person.hair, 180, 360)
    if person.gender == 0:
        canvas.ellipse((0, -0.38 * h), (1.02 * w, 0.35 * h), person.skin, 0, 180)
    line_colour = tuple(c * 0.55 for c in person.skin)
    for i in range((0, 1, 3)[age_group]):
        y = -0.5 * h + 0.09 * h * i + 0.07 * h
        canvas.line((-0.45 * w, y), (0.45 * w, y), line_colour, 3)
    for side in (-1, 1):
        canvas.ellipse((side * 0.4 * w, -0.12 * h), (0.2 * w, 0.09 * h), (245, 245, 245))
        canvas.ellipse((side * 0.4 * w, -0.12 * h), (0.08 * w, 0.08 * h), (40, 30, 25))
        canvas.line((side * 0.6 * w, -0.3 * h), (side * 0.2 * w, -0.3 * h), person.hair, 5)
    canvas.polygon([(0, -0.05 * h), (-0.17 * w, 0.3 * h), (0.17 * w, 0.3 * h)],
                   tuple(c * 0.6 for c in person.skin))
    canvas.ellipse((0, 0.55 * h), (0.3 * w, 0.08 * h), (150, 60, 60))
    canvas.region = "mask"
    _draw_mask(canvas, rng, person, mask)
    gain, offset = rng.uniform(0.7, 1.25), rng.uniform(-25, 25)
    lit = image.astype(np.float32) * np.float32(gain) + np.float32(offset)
    lit += rng.integers(-10, 11, size=image.shape, dtype=np.int8)
    return np.clip(lit, 0, 255).astype(np.uint8)


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _person_ids(n: int) -> list[str]:
    """Sequential ids with the quirks of the real set: one reused id and one ``-1`` suffix."""
    ids = [f"{i + 1:06d}" for i in range(n)]
    if n >= 4:
        ids[-1] = ids[0]
        ids[-2] = f"{ids[1]}-1"
    return ids


def _draw_persons(seed: int, start: int, count: int, ids: list[str]) -> list[Person]:
    persons = []
    for offset in range(count):
        rng = np.random.default_rng([seed, start + offset])
        group = (start + offset) % 6
        persons.append(make_person(rng, ids[offset], gender=group // 3, age_group=group % 3))
    return persons


def make_synthetic(out: Path | str, persons: int = 60, eval_persons: int = 15,
                   seed: int = 0, one_setting: bool = False) -> Path:
    """Write a synthetic dataset in the competition layout to ``out`` and return it.

    Genders and age groups cycle so every one of the 18 classes appears for any
    ``persons >= 6``. ``eval/labels.csv`` holds the true class and the person of every eval
image (so scores on it come with intervals over persons).
    ``one_setting``: each person's photos share a background and clothes, as in the
    competition, where a person took all seven in one place (the default draws them anew
    for every photo, so only the face tells persons apart).
    """
    if persons < 6 or eval_persons < 1:
        raise UsageError(f"need persons >= 6 and eval_persons >= 1; got {persons}, {eval_persons}")
    out = Path(out)
    if (out / "train").exists() or (out / "eval").exists():
        raise UsageError(f"{out} already holds a dataset; choose an empty folder")
    train_rows = []
    def setting(index: int) -> Setting | None:
        return (draw_setting(np.random.default_rng([seed, 4_000_000, index])) if one_setting
                else None)

    for person in _draw_persons(seed, 0, persons, _person_ids(persons)):
        rng = np.random.default_rng([seed, 1_000_000, len(train_rows)])
        place = setting(len(train_rows))
        for stem in STEMS:
            ext = rng.choice([".jpg", ".jpeg", ".png"], p=[0.7, 0.2, 0.1])
            _save(out / TRAIN_IMAGES / person.folder / f"{stem}{ext}",
                  draw_photo(rng, person, labels.MASK_STEMS[stem], place))
        train_rows.append((person.id, labels.GENDER_NAMES[person.gender], person.race,
                           person.age, person.folder))
    pd.DataFrame(train_rows, columns=["id", "gender", "race", "age", "path"]).to_csv(
        out / TRAIN_CSV, index=False)

    eval_ids = [f"{900000 + i:06d}" for i in range(eval_persons)]
    eval_rows = []
    for index, person in enumerate(_draw_persons(seed, persons, eval_persons, eval_ids)):
        rng = np.random.default_rng([seed, 2_000_000, len(eval_rows)])
        place = setting(persons + index)
        for stem in STEMS:
            mask = labels.MASK_STEMS[stem]
            name = hashlib.sha1(f"{seed}/{person.folder}/{stem}".encode()).hexdigest() + ".jpg"
            _save(out / EVAL_IMAGES / name, draw_photo(rng, person, mask, place))
            cls = labels.encode_class(mask, person.gender, labels.age_bucket(person.age))
            eval_rows.append((name, int(cls), person.id))
    order = np.random.default_rng([seed, 3]).permutation(len(eval_rows))
    eval_table = pd.DataFrame(eval_rows, columns=["ImageID", "class", "person"]).iloc[order]
    eval_table.assign(ans=0)[["ImageID", "ans"]].to_csv(out / EVAL_CSV, index=False)
    eval_table.to_csv(out / "eval" / "labels.csv", index=False)
    return out


FACE_SET_LABELS = "labels.csv"


def make_face_set(out: Path | str, persons: int = 60, seed: int = 0) -> Path:
    """An outside face set as people can get one (``data.external``): ``images/`` of
    unmasked faces and ``labels.csv`` with ``file``, ``gender`` and ``age`` in years, no mask
    column. The persons are drawn apart from ``make_synthetic``'s of the same seed."""
    if persons < 1:
        raise UsageError(f"need persons >= 1; got {persons}")
    out = Path(out)
    if (out / FACE_SET_LABELS).exists():
        raise UsageError(f"{out} already holds a face set; choose an empty folder")
    ids = [f"face{i + 1:05d}" for i in range(persons)]
    rows = []
    for person in _draw_persons(seed, 5_000_000, persons, ids):
        rng = np.random.default_rng([seed, 6_000_000, len(rows)])
        name = f"{person.id}.jpg"
        _save(out / "images" / name, draw_photo(rng, person, labels.MASK_STEMS["normal"]))
        rows.append((name, labels.GENDER_NAMES[person.gender], person.age))
    pd.DataFrame(rows, columns=["file", "gender", "age"]).to_csv(out / FACE_SET_LABELS,
                                                                  index=False)
    return out
