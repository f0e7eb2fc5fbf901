"""Read the competition layout into the records table, checking everything first.

Every problem found is collected and raised together as one :class:`DataError` naming
each offending file, so a user fixes the dataset once instead of once per crash.

Records table (one row per training image):
``path`` (relative to the data root), ``person`` (the folder: a person is the folder,
never the id), ``id``, ``race``, ``age`` (years), ``mask``, ``gender``, ``age_group``, ``class``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.data.io import is_image_file, probe_image
from maskclf.errors import DataError, MissingFileError
from maskclf.tables import TableError, read_table

TRAIN_CSV = Path("train/train.csv")
TRAIN_IMAGES = Path("train/images")
EVAL_CSV = Path("eval/info.csv")
EVAL_IMAGES = Path("eval/images")
TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID", "ans")
RECORD_COLUMNS = ("path", "person", "id", "race", "age", "mask", "gender", "age_group", "class")


@dataclass(frozen=True)
class PersonFolder:
    id: str
    gender: int
    race: str
    age: int


def parse_person_folder(name: str) -> PersonFolder:
    """Parse ``<id>_<gender>_<race>_<age>``; raise ValueError saying what does not parse."""
    parts = name.split("_")
    if len(parts) < 4:
        raise ValueError("folder name must look like <id>_<gender>_<race>_<age>")
    gender_text, age_text = parts[1].lower(), parts[-1]
    if gender_text not in labels.GENDERS:
        raise ValueError(f"unknown gender {parts[1]!r}; expected one of {list(labels.GENDERS)}")
    if not age_text.isdigit():
        raise ValueError(f"age {age_text!r} is not a whole number")
    return PersonFolder(parts[0], labels.GENDERS[gender_text], "_".join(parts[2:-1]), int(age_text))


def image_class(path: Path) -> int | None:
    """The class a training image's place gives (``<id>_<gender>_<race>_<age>/<mask stem>``),
    or None when its folder or name is not of that form."""
    stem = path.stem.lower()
    if stem not in labels.MASK_STEMS:
        return None
    try:
        person = parse_person_folder(path.parent.name)
    except ValueError:
        return None
    return int(labels.encode_class(labels.MASK_STEMS[stem], person.gender,
                                   labels.age_bucket(person.age)))


def _read_csv(path: Path, columns: tuple[str, ...], problems: list) -> pd.DataFrame | None:
    try:
        return read_table(path, columns, dtype=str, keep_default_na=False)
    except MissingFileError:
        problems.append((str(path), "file is missing"))
    except TableError as exc:
        problems.append((str(path), exc.problem))
    return None


def _person_images(folder: Path, root: Path, problems: list) -> list[tuple[str, int]]:
    """(relative path, mask id) for each image of one person folder."""
    found: list[tuple[str, int]] = []
    seen_stems: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        if file.name.startswith("."):
            continue
        if file.is_symlink() and not file.exists():
            problems.append((str(file), "symbolic link to nothing (broken or a loop)"))
            continue
        if not file.is_file() or not is_image_file(file):
            problems.append((str(file), "unexpected file; expected .jpg/.jpeg/.png images"))
            continue
        stem = file.stem.lower()
        if stem not in labels.MASK_STEMS:
            problems.append(
                (str(file), f"unexpected file stem {file.stem!r}; expected mask1-5, "
                 "incorrect_mask or normal")
            )
            continue
        if stem in seen_stems:
            problems.append((str(file), f"duplicate of {seen_stems[stem].name}"))
            continue
        seen_stems[stem] = file
        found.append((file.relative_to(root).as_posix(), labels.MASK_STEMS[stem]))
    if not found:
        problems.append((str(folder), "person folder holds no images"))
    return found


def escapes(name: str) -> bool:
    """A table entry that would leave its folder: absolute, ``..``, or empty."""
    return not name or Path(name).is_absolute() or ".." in Path(name).parts


def _check_listing(table: pd.DataFrame, csv: Path, problems: list) -> set[str]:
    """The person folders ``train.csv`` lists, after checking each row against its folder
    name (where the labels are read from): no duplicates, no paths out of the folder."""
    for name in table["path"][table["path"].duplicated()].unique():
        problems.append((str(csv), f"lists person {name!r} more than once"))
    for row, entry in enumerate(table.itertuples(index=False), start=2):
        if escapes(entry.path) or "/" in entry.path or "\\" in entry.path:
            problems.append((str(csv), f"row {row}: path {entry.path!r} must be a folder name "
                             f"inside {TRAIN_IMAGES}"))
            continue
        try:
            folder = parse_person_folder(entry.path)
        except ValueError:
            continue  # reported with the folder itself
        said = {"gender": entry.gender.lower(), "age": entry.age.strip()}
        named = {"gender": labels.GENDER_NAMES[folder.gender], "age": str(folder.age)}
        for key in ("gender", "age"):
            if said[key] != named[key]:
                problems.append((str(csv), f"row {row}: {key} {getattr(entry, key)!r} but the "
                                 f"folder {entry.path!r} says {named[key]!r}"))
    return set(table["path"])


def _scan_train(root: Path, problems: list) -> pd.DataFrame:
    table = _read_csv(root / TRAIN_CSV, TRAIN_COLUMNS, problems)
    images_dir = root / TRAIN_IMAGES
    if not images_dir.is_dir():
        problems.append((str(images_dir), "images folder is missing"))
        return pd.DataFrame(columns=RECORD_COLUMNS)
    listed = None if table is None else _check_listing(table, root / TRAIN_CSV, problems)
    folders = sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    rows = []
    for folder in folders:
        try:
            person = parse_person_folder(folder.name)
        except ValueError as exc:
            problems.append((str(folder), str(exc)))
            continue
        if listed is not None and folder.name not in listed:
            problems.append((str(folder), f"person folder is not listed in {TRAIN_CSV}"))
        for rel_path, mask in _person_images(folder, root, problems):
            rows.append((rel_path, folder.name, person.id, person.race, person.age, mask,
                         person.gender))
    if listed is not None:
        on_disk = {f.name for f in folders}
        for name in sorted(listed - on_disk):
            problems.append((str(root / TRAIN_CSV), f"lists person {name!r} with no folder in "
                             f"{TRAIN_IMAGES}"))
    records = pd.DataFrame(rows, columns=RECORD_COLUMNS[:7])
    records["age_group"] = labels.age_bucket(records["age"].to_numpy(dtype=int))
    records["class"] = labels.encode_class(records["mask"], records["gender"], records["age_group"])
    return records.astype({c: int for c in ("age", "mask", "gender", "age_group", "class")})


def _scan_eval(root: Path, problems: list) -> pd.DataFrame | None:
    info = _read_csv(root / EVAL_CSV, EVAL_COLUMNS, problems)
    if info is None:
        return None
    if info.empty:
        problems.append((str(root / EVAL_CSV), "has a header but no images to predict"))
    for image_id in info["ImageID"][info["ImageID"].duplicated()].unique():
        problems.append((str(root / EVAL_CSV), f"ImageID {image_id!r} is listed more than once"))
    escaping = info["ImageID"].map(escapes)
    for row in np.flatnonzero(escaping):
        problems.append((str(root / EVAL_CSV), f"row {row + 2}: ImageID "
                         f"{info['ImageID'].iloc[row]!r} points outside {EVAL_IMAGES}"))
    info["path"] = [(EVAL_IMAGES / image_id).as_posix() for image_id in info["ImageID"]]
    for rel_path in info["path"][~escaping]:
        if not (root / rel_path).is_file():
            problems.append((str(root / rel_path), f"listed in {EVAL_CSV} but missing"))
    return info


def probe_all(root: Path, rel_paths: list[str], problems: list, workers: int = 4) -> None:
    paths = [root / p for p in rel_paths if (root / p).is_file()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, what in zip(paths, pool.map(probe_image, paths), strict=True):
            if what is not None:
                problems.append((str(path), what))


def check_root(root: Path) -> None:
    """One clear message for a data folder that is missing or is a part of the layout."""
    if not root.is_dir():
        raise MissingFileError(f"data folder {root} does not exist (--data is the folder "
                               "holding train/ and eval/)")
    if root.name in ("train", "eval") and (root.parent / TRAIN_CSV).is_file():
        raise MissingFileError(f"{root} is the {root.name}/ folder of a dataset; pass the "
                               f"folder that holds train/ and eval/: --data {root.parent}")
    if root.name == "images" and (root.parent.parent / TRAIN_CSV).is_file():
        raise MissingFileError(f"{root} is an images/ folder of a dataset; pass the folder "
                               f"that holds train/ and eval/: --data {root.parent.parent}")


def read_tables(
    root: Path | str, *, train: bool = True, eval: bool | None = None, check_images: bool = True
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Read and check the train records and/or ``eval/info.csv`` (in its own order).

    ``eval=None`` reads the eval part only when ``root/eval`` exists. Every problem of
    every part is raised together in one :class:`DataError`, before anything trains.
    """
    root = Path(root)
    check_root(root)
    problems: list[tuple[str, str]] = []
    records = _scan_train(root, problems) if train else None
    read_eval_part = (root / "eval").exists() if eval is None else eval
    info = _scan_eval(root, problems) if read_eval_part else None
    if check_images:
        paths = [] if records is None else records["path"].tolist()
        paths += [] if info is None else info["path"].tolist()
        probe_all(root, paths, problems)
    if problems:
        raise DataError(problems)
    return records, info


def read_train(root: Path | str, check_images: bool = True) -> pd.DataFrame:
    """The records table of ``root/train``; raises :class:`DataError` listing every problem."""
    return read_tables(root, eval=False, check_images=check_images)[0]


def read_eval(root: Path | str, check_images: bool = True) -> pd.DataFrame:
    """``eval/info.csv`` in its own order, with ``path`` relative to the data root."""
    return read_tables(root, train=False, eval=True, check_images=check_images)[1]
