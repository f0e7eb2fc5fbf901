"""``maskclf review``: the suspects of a run, decided one photo and attribute at a time.

A :class:`ReviewSession` holds the persons cleanlab flags (``reports.suspects``), most
suspicious first, each with all their out-of-fold photos, and the run's
``corrections.yaml`` (``RunDir.REVIEWED``). Every decision — keep, change to a value, or
not sure (unknown) — for one photo or for the whole person is written to that file at once
(atomically, under a lock), so a second tab or a restart shows what was decided. The file is
the ``data.corrections`` format: train with ``-o data.corrections=RUN/corrections.yaml``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import atomic_write_text
from maskclf.data.corrections import (
    AGE_GROUPS,
    UNKNOWN,
    Corrections,
    image_key,
    load_corrections,
)
from maskclf.errors import UsageError
from maskclf.labels import CLASS_COLUMNS
from maskclf.reports.suspects import find_suspects
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir

KEEP = "keep"
LEVELS = ("all", "person", "photo")
"""Which suspects the queue holds: every flagged person, those whose gender or age is
doubted as a whole (``person``: the mean of their photos disagrees), or those with a
doubted photo (``photo``: a photo's label, or a photo that may show someone else)."""
FIRST_SUSPECTS = 20
"""Persons shown when cleanlab flags none: the lowest label quality first."""
HEADER = ("# written by `maskclf review`: each decision as it was made; train with "
          "-o data.corrections=THIS_FILE\n")


class DecisionError(ValueError):
    """A decision the session cannot take (unknown person or photo, bad value); the
    message says which."""


@dataclass(frozen=True)
class Person:
    folder: str
    images: list[str]
    """``images`` keys (``FOLDER/FILE``) of the person's out-of-fold photos."""
    flagged: list[str]
    """The attributes cleanlab flags for this person, most suspicious first."""

    @property
    def id(self) -> str:
        return self.folder.split("_")[0]


class ReviewSession:
    """The suspects of ``run_path`` (at ``level``: :data:`LEVELS`) and the decisions taken
    on them (thread-safe)."""

    def __init__(self, run_path: Path | str, data_root: Path | str | None = None,
                 level: str = "all"):
        if level not in LEVELS:
            raise UsageError(f"--level {level!r}: use one of {', '.join(LEVELS)}")
        self.run, self.level = RunDir.open(run_path), level
        oof = self.run.require_oof("maskclf review")
        self.data_root = self.run.data_root(data_root)
        self.file = self.run.file(RunDir.REVIEWED)
        self.oof = oof.assign(person=oof_persons(oof), key=oof["ImageID"].map(image_key))
        suspects = find_suspects(oof)
        if level != "all":
            suspects = suspects[suspects["level"] == level]
        self.persons = _suspect_persons(suspects, self.oof)
        self._by_folder = {person.folder: person for person in self.persons}
        self._row = {key: i for i, key in enumerate(self.oof["key"])}
        self._lock = threading.Lock()
        self.corrections = load_corrections(self.file) if self.file.is_file() else Corrections()

    def image_path(self, folder: str, index: int) -> Path:
        """The file of a person's ``index``-th photo (only photos of the run's OOF rows:
        nothing a client sends becomes a path)."""
        person = self._person(folder)
        if not 0 <= index < len(person.images):
            raise DecisionError(f"{folder} has no photo {index}")
        return self.data_root / self.oof["ImageID"].iloc[self._row[person.images[index]]]

    def state(self) -> dict:
        """Everything the page shows: the persons with their photos, labels and OOF
        probabilities, every decision, the progress and the command that trains with it."""
        return {"run": str(self.run.path), "file": str(self.file), "level": self.level,
                "command": self.train_command(),
                "attributes": {name: list(values) for name, values in labels.ATTRIBUTES.items()},
                "persons": [self._describe(person) for person in self.persons],
                "progress": self.progress()}

    def train_command(self) -> str:
        return (f"maskclf train --config {self.run.file(RunDir.CONFIG)} --data {self.data_root} "
                f"-o data.corrections={self.file}")

    def progress(self) -> dict:
        reviewed = set(self.corrections.reviewed)
        done = sum(person.folder in reviewed for person in self.persons)
        return {"reviewed": done, "left": len(self.persons) - done}

    def decide(self, folder: str, attribute: str, choice: str, image: str | None = None
               ) -> dict:
        """Take one decision (``image`` None: the whole person's gender or age), save the
        file, and return the person as the page shows it."""
        person = self._person(folder)
        if attribute not in labels.ATTRIBUTES:
            raise DecisionError(f"no attribute {attribute!r}; attributes are "
                                f"{list(labels.ATTRIBUTES)}")
        allowed = [KEEP, *labels.ATTRIBUTES[attribute], UNKNOWN]
        if choice not in allowed:
            raise DecisionError(f"{attribute}: {choice!r} is not one of {allowed}")
        if image is not None and image not in person.images:
            raise DecisionError(f"{image!r} is not a photo of {folder}")
        if image is None and attribute == "mask":
            raise DecisionError("mask is decided per photo: name the photo")
        with self._lock:
            if image is None:
                self._decide_person(person, attribute, choice)
            else:
                values = self.corrections.images.setdefault(image, {})
                values.pop(attribute, None) if choice == KEEP else values.update(
                    {attribute: choice})
                if not values:
                    del self.corrections.images[image]
            self._mark_reviewed(person)
            self._save()
        return self._describe(person)

    def mark_reviewed(self, folder: str) -> dict:
        """Everything of the person kept as it is (or as decided): reviewed."""
        person = self._person(folder)
        with self._lock:
            self._mark_reviewed(person)
            self._save()
        return self._describe(person)

    def _person(self, folder: str) -> Person:
        if folder not in self._by_folder:
            raise DecisionError(f"{folder!r} is not among this run's suspects")
        return self._by_folder[folder]

    def _decide_person(self, person: Person, attribute: str, choice: str) -> None:
        sections = self.corrections.persons
        related = (["gender_wrong", "gender_unknown"] if attribute == "gender"
                   else [*AGE_GROUPS, "age_unknown"])
        for section in related:
            if person.id in sections[section]:
                sections[section].remove(person.id)
        given = self._given(person)[attribute]
        if choice == UNKNOWN:
            section = f"{attribute}_unknown"
        elif choice in (KEEP, given):
            return
        elif attribute == "gender":
            section = "gender_wrong"
        else:
            section = next(s for s, group in AGE_GROUPS.items()
                           if labels.AGE_NAMES[group] == choice)
        sections[section].append(person.id)

    def _mark_reviewed(self, person: Person) -> None:
        if person.folder not in self.corrections.reviewed:
            self.corrections.reviewed.append(person.folder)

    def _save(self) -> None:
        atomic_write_text(self.file, self.corrections.text(HEADER))

    def _given(self, person: Person) -> dict[str, str]:
        """The person's gender and age as the run trained on them."""
        first = int(self.oof["class"].iloc[self._row[person.images[0]]])
        _, gender, age = labels.decode_class(first)
        return {"gender": labels.GENDER_NAMES[gender], "age": labels.AGE_NAMES[age]}

    def _person_choice(self, person: Person, attribute: str) -> str:
        sections = self.corrections.persons
        if person.id in sections[f"{attribute}_unknown"]:
            return UNKNOWN
        if attribute == "gender":
            return (labels.GENDER_NAMES[1 - labels.GENDER_NAMES.index(self._given(person)[
                "gender"])] if person.id in sections["gender_wrong"] else KEEP)
        return next((labels.AGE_NAMES[group] for section, group in AGE_GROUPS.items()
                     if person.id in sections[section]), KEEP)

    def _describe(self, person: Person) -> dict:
        rows = self.oof.iloc[[self._row[key] for key in person.images]]
        marginals = labels.attribute_marginals(rows[CLASS_COLUMNS].to_numpy())
        given = labels.decode_class(rows["class"].to_numpy())
        photos = []
        for i, key in enumerate(person.images):
            photos.append({
                "key": key, "name": key.split("/")[-1],
                "given": {name: labels.ATTRIBUTES[name][int(values[i])]
                          for name, values in zip(labels.ATTRIBUTES, given, strict=True)},
                "probabilities": {name: np.round(marginals[name][i], 3).tolist()
                                  for name in labels.ATTRIBUTES},
                "decision": self.corrections.images.get(key, {})})
        return {"folder": person.folder, "flagged": person.flagged,
                "given": self._given(person),
                "person_probabilities": {name: np.round(marginals[name].mean(axis=0),
                                                        3).tolist()
                                         for name in ("gender", "age")},
                "person_decision": {name: self._person_choice(person, name)
                                    for name in ("gender", "age")},
                "reviewed": person.folder in self.corrections.reviewed, "photos": photos}


def _suspect_persons(suspects: pd.DataFrame, oof: pd.DataFrame) -> list[Person]:
    """The persons with a label cleanlab counts as an issue, most suspicious first (the
    lowest quality of any of their labels); the first ``FIRST_SUSPECTS`` when none is.
    ``suspects`` may hold one level's rows only (``LEVELS``)."""
    flagged = suspects[suspects["issue"]]
    if flagged.empty:
        flagged = suspects.head(FIRST_SUSPECTS)
    images = oof.groupby("person", sort=False)["key"].agg(list)
    order = flagged.groupby("person", sort=False)["quality"].min().sort_values(kind="stable")
    return [Person(folder, images[folder],
                   list(dict.fromkeys(flagged.loc[flagged["person"] == folder, "kind"])))
            for folder in order.index]

