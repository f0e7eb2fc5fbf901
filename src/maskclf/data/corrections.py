"""Opt-in corrections of mislabeled persons and photos, applied to the records table in memory.

The file format (YAML; see ``resources/corrections.yaml``, shipped and versioned with the
package) lists folder ids (the part of a person's folder name before the first ``_``) under
the person sections: flips (``mask_swapped``, ``gender_wrong``), an age group
(``age_under_30``, ``age_30_to_59``, ``age_60_or_over``) and "nobody can tell"
(``gender_unknown``, ``age_unknown``). ``images`` maps one photo (``FOLDER/FILE`` under
``train/images``) to the attributes it gets: a value (``mask: not_wear``) or ``unknown``.
``reviewed`` lists the person folders ``maskclf review`` has seen (progress only).

An unknown attribute leaves training the way an outside row's does (the row trains every
head on what it still knows) and leaves that attribute's validation score; the row keeps its
folder's ``class`` for splits and sampling, and its ``unknown`` bits (``labels.UNKNOWN_BITS``)
say what it no longer knows. Ids and images absent from the data are notes, never errors.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from maskclf import labels
from maskclf.errors import InputFileError
from maskclf.tables import require_file

FLIPS = ("mask_swapped", "gender_wrong")
AGE_GROUPS = {"age_under_30": 0, "age_30_to_59": 1, "age_60_or_over": 2}
UNKNOWN_SECTIONS = {"gender_unknown": "gender", "age_unknown": "age"}
PERSON_SECTIONS = (*FLIPS, *AGE_GROUPS, *UNKNOWN_SECTIONS)
"""The sections that list persons by folder id, in the order they are applied."""
IMAGES, REVIEWED, UNKNOWN = "images", "reviewed", "unknown"
IMAGE_PREFIX = "train/images/"
FOLDER_CLASS = "folder_class"
"""The records column with the class the folders give, before corrections."""


def packaged_corrections() -> Path:
    return Path(str(files("maskclf") / "resources" / "corrections.yaml"))


@dataclass
class Corrections:
    """A corrections file in memory: persons per section, per-image attribute values
    (a value name or ``unknown``) and the persons a review has seen."""

    persons: dict[str, list[str]] = field(
        default_factory=lambda: {section: [] for section in PERSON_SECTIONS})
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    reviewed: list[str] = field(default_factory=list)

    def as_yaml(self) -> dict:
        """The file's content, sections in a fixed order, empty ones left out."""
        out: dict = {"version": 2}
        out.update({section: sorted(ids) for section, ids in self.persons.items() if ids})
        if self.images:
            out[IMAGES] = {path: dict(sorted(values.items()))
                           for path, values in sorted(self.images.items()) if values}
        if self.reviewed:
            out[REVIEWED] = sorted(self.reviewed)
        return out

    def text(self, header: str = "") -> str:
        return header + yaml.safe_dump(self.as_yaml(), sort_keys=False, allow_unicode=True)

    def decisions(self) -> dict:
        """What the labels become: the file's content less the review's progress."""
        return {key: value for key, value in self.as_yaml().items() if key != REVIEWED}


@dataclass
class CorrectionReport:
    """What changed: one row per changed or partly unknown image, and the ids and images
    that matched nothing."""

    changes: pd.DataFrame
    absent: list[str] = field(default_factory=list)
    applied: Corrections = field(default_factory=Corrections)
    """What was applied (a run keeps a copy: ``RunDir.APPLIED_CORRECTIONS``)."""

    def counts(self) -> dict:
        """For summary.json and the report: images and persons whose label changed, and
        images per attribute made unknown."""
        changed = self.changes[self.changes["old_class"] != self.changes["new_class"]]
        unknown = self.changes["unknown"].fillna("").str.split()
        return {"changed_images": len(changed), "changed_persons": int(changed["person"].nunique()),
                "unknown_images": {name: int(unknown.map(lambda names, n=name: n in names).sum())
                                   for name in labels.ATTRIBUTES},
                "absent": self.absent}

    def summary(self) -> str:
        counts = self.counts()
        unknown = ", ".join(f"{name} {n}" for name, n in counts["unknown_images"].items() if n)
        text = (f"label corrections: {counts['changed_images']} image label(s) of "
                f"{counts['changed_persons']} person(s) changed")
        if unknown:
            text += f"; made unknown (neither taught nor scored for that attribute): {unknown}"
        if self.absent:
            text += f"; ids or images not in this data (ignored): {', '.join(self.absent)}"
        return text


def load_corrections(path: Path | str | None = None) -> Corrections:
    """Read and check a corrections file (the packaged one when ``path`` is None): every
    problem is one :class:`InputFileError` naming the file, the key and what is wrong."""
    path = require_file(path if path is not None else packaged_corrections(),
                        "corrections file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputFileError(f"corrections file {path} is not plain YAML: "
                             f"{' '.join(str(exc).split())}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InputFileError(f"corrections file {path} must map sections "
                             f"{list(PERSON_SECTIONS)} to lists of ids, not hold a "
                             f"{type(raw).__name__}")
    unknown = set(raw) - {*PERSON_SECTIONS, IMAGES, REVIEWED, "version"}
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, [*PERSON_SECTIONS, IMAGES, REVIEWED], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputFileError(f"corrections file {path}: unknown section {key!r}{hint}; "
                             f"expected {[*PERSON_SECTIONS, IMAGES, REVIEWED]}")
    persons = {section: _ids(raw.get(section), path, section)
               for section in PERSON_SECTIONS}
    return Corrections(persons, _images(raw.get(IMAGES), path),
                       _ids(raw.get(REVIEWED), path, REVIEWED))


def _ids(value, path: Path, section: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or any(isinstance(v, dict | list) for v in value):
        raise InputFileError(f"corrections file {path}: {section} must be a list of folder "
                             f"ids, not {value!r}"[:300])
    return [str(v) for v in value]


def _images(value, path: Path) -> dict[str, dict[str, str]]:
    """``images``: photo -> {attribute: value name or unknown}, each name checked."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputFileError(f"corrections file {path}: {IMAGES} must map FOLDER/FILE to "
                             "{attribute: value}, e.g. {mask: not_wear, gender: unknown}")
    out = {}
    for image, attributes in value.items():
        where = f"corrections file {path}: {IMAGES}[{image!r}]"
        if not isinstance(attributes, dict):
            raise InputFileError(f"{where} must map attributes to values, e.g. "
                                 "{gender: unknown}")
        for name, given in attributes.items():
            if name not in labels.ATTRIBUTES:
                raise InputFileError(f"{where}: no attribute {name!r}; attributes are "
                                     f"{list(labels.ATTRIBUTES)}")
            allowed = [*labels.ATTRIBUTES[name], UNKNOWN]
            if str(given) not in allowed:
                raise InputFileError(f"{where}: {name} {given!r} is not one of {allowed}")
        out[image_key(image)] = {name: str(v) for name, v in attributes.items()}
    return out


def image_key(path) -> str:
    """A photo's ``images`` key, ``FOLDER/FILE``, from a record's (or an OOF row's) path
    ``train/images/FOLDER/FILE`` or from the key itself."""
    return str(path).removeprefix(IMAGE_PREFIX)


def folder_labels(records: pd.DataFrame) -> pd.DataFrame:
    """The records with the classes their folders give: what the person split stratifies
    on, so a correction never moves a person between training and validation (runs with
    and without it validate on the same persons and compare paired)."""
    if FOLDER_CLASS not in records:
        return records
    return records.assign(**{"class": records[FOLDER_CLASS]})


def apply_corrections(records: pd.DataFrame, corrections: Corrections
                      ) -> tuple[pd.DataFrame, CorrectionReport]:
    """A corrected copy of ``records`` (``age`` keeps the folder's years; ``class`` the
    corrected known values, the folder's where unknown; ``unknown`` the bits of what each
    row no longer knows) and a report."""
    fixed = records.copy()
    person_id = fixed["id"].astype(str)
    unknown = np.zeros(len(fixed), dtype=np.int64)
    for section in PERSON_SECTIONS:
        rows = person_id.isin(corrections.persons[section]).to_numpy()
        if section == "mask_swapped":
            fixed.loc[rows, "mask"] = fixed.loc[rows, "mask"].map({0: 0, 1: 2, 2: 1})
        elif section == "gender_wrong":
            fixed.loc[rows, "gender"] = 1 - fixed.loc[rows, "gender"]
        elif section in AGE_GROUPS:
            fixed.loc[rows, "age_group"] = AGE_GROUPS[section]
        else:
            unknown[rows] |= labels.UNKNOWN_BITS[UNKNOWN_SECTIONS[section]]
    keys = fixed["path"].map(image_key)
    position = {key: i for i, key in enumerate(keys)}
    for image, attributes in corrections.images.items():
        if image not in position:
            continue
        row = position[image]
        for name, value in attributes.items():
            if value == UNKNOWN:
                unknown[row] |= labels.UNKNOWN_BITS[name]
            else:
                fixed.iloc[row, fixed.columns.get_loc(labels.RECORD_COLUMNS[name])] = (
                    labels.ATTRIBUTES[name].index(value))
    fixed["class"] = labels.encode_class(fixed["mask"], fixed["gender"], fixed["age_group"])
    fixed[labels.UNKNOWN_COLUMN] = unknown
    fixed[FOLDER_CLASS] = records["class"]
    touched = (fixed["class"] != records["class"]).to_numpy() | (unknown > 0)
    changes = pd.DataFrame({"path": records.loc[touched, "path"],
                            "person": records.loc[touched, "person"],
                            "old_class": records.loc[touched, "class"],
                            "new_class": fixed.loc[touched, "class"],
                            "unknown": [labels.unknown_names(bits) for bits in unknown[touched]]})
    listed = {i for ids in corrections.persons.values() for i in ids}
    absent = sorted(listed - set(person_id)) + sorted(set(corrections.images) - set(position))
    return fixed, CorrectionReport(changes.reset_index(drop=True), absent, corrections)
