"""``maskclf suspects``: labels the run's out-of-fold predictions disagree with most.

Every attribute is judged per photo (a photo of someone else than its folder says shows as
a photo-level gender or age issue); gender and age, constant per person, are also judged
per person on the mean of the person's out-of-fold probabilities. cleanlab's label-quality
score (self-confidence: the probability the model gives the given label) ranks them;
cleanlab's ``find_label_issues`` marks the ones it counts as issues. The output is a table
to review, a captioned grid of the top suspects, and a ``corrections.yaml`` in the format
``data.corrections`` reads, to edit and train with.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from matplotlib.figure import Figure

from maskclf import labels
from maskclf.atomic import atomic_write, atomic_write_text, write_csv
from maskclf.data.corrections import AGE_GROUPS, UNKNOWN, Corrections, image_key
from maskclf.data.io import read_rgb
from maskclf.labels import CLASS_COLUMNS
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir

TABLE, GRID, CORRECTIONS = "suspects.csv", "suspects.png", "corrections.yaml"
"""The files ``maskclf suspects`` writes into its folder."""


def _scores(given: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's quality score per row, and whether it flags the row as a label issue."""
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(given, probs)
    with warnings.catch_warnings():  # "too few examples in class": small data, still ranked
        warnings.simplefilter("ignore", UserWarning)
        issues = (find_label_issues(given, probs) if len(np.unique(given)) > 1
                  else np.zeros(len(given), dtype=bool))
    return quality, issues


def _judged(kind: str, level: str, items, persons, given: np.ndarray, probs: np.ndarray
            ) -> pd.DataFrame:
    quality, issues = _scores(given, probs)
    values = np.array(labels.ATTRIBUTES[kind], dtype=object)
    return pd.DataFrame({"kind": kind, "level": level, "item": np.asarray(items),
                         "person": np.asarray(persons), "given": values[given],
                         "suggested": values[probs.argmax(axis=1)], "quality": quality,
                         "issue": issues})


def find_suspects(oof: pd.DataFrame) -> pd.DataFrame:
    """One row per judged label: ``kind`` (the attribute), ``level`` (``photo``: one
    image's label, every attribute; ``person``: gender and age judged on the mean of the
    person's photos), ``item`` (the image or the person), ``person``, ``given`` and
    ``suggested`` labels, ``quality`` (lower is more suspicious), ``issue`` (cleanlab's
    verdict); most suspicious first. A photo-level gender or age issue is a photo that may
    show someone else than its folder says."""
    oof = oof.assign(person=oof_persons(oof))
    marginals = labels.attribute_marginals(oof[CLASS_COLUMNS].to_numpy())
    given = dict(zip(labels.ATTRIBUTES, labels.decode_class(oof["class"].to_numpy()),
                     strict=True))
    parts = [_judged(name, "photo", oof["ImageID"], oof["person"], given[name],
                     marginals[name]) for name in labels.ATTRIBUTES]
    persons = oof["person"].to_numpy()
    for name in ("gender", "age"):
        per_person = pd.DataFrame(marginals[name]).groupby(persons).mean()
        first = pd.Series(given[name]).groupby(persons).first().loc[per_person.index]
        parts.append(_judged(name, "person", per_person.index, per_person.index,
                             first.to_numpy(), per_person.to_numpy()))
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values(["quality", "kind", "item"], kind="stable").reset_index(drop=True)


def corrections(suspects: pd.DataFrame, unknown: bool = False) -> Corrections:
    """A ``data.corrections`` file proposing what the flagged suspects suggest: flips of
    persons (gender, age group) and mask swaps, or with ``unknown`` the conservative
    version, every flagged label made unknown (a person's gender or age; any attribute of
    a photo)."""
    flagged = suspects[suspects["issue"] & (suspects["given"] != suspects["suggested"])]
    person_id = flagged["person"].map(lambda folder: folder.split("_")[0])
    proposal = Corrections()
    of_person = flagged["level"] == "person"
    of_kind = {kind: sorted(set(person_id[of_person & (flagged["kind"] == kind)]))
               for kind in ("gender", "age")}
    if unknown:
        proposal.persons.update(gender_unknown=of_kind["gender"], age_unknown=of_kind["age"])
        for row in flagged[~of_person].itertuples():
            proposal.images.setdefault(image_key(row.item), {})[row.kind] = UNKNOWN
        return proposal
    proposal.persons["gender_wrong"] = of_kind["gender"]
    for section, group in AGE_GROUPS.items():
        proposal.persons[section] = sorted(set(person_id[
            of_person & (flagged["kind"] == "age")
            & (flagged["suggested"] == labels.AGE_NAMES[group])]))
    moves: dict[str, set] = {}
    for person, row in zip(person_id, flagged.itertuples(index=False), strict=True):
        if row.kind == "mask":
            moves.setdefault(person, set()).add((row.given, row.suggested))
    swap = {("incorrect", "not_wear"), ("not_wear", "incorrect")}
    proposal.persons["mask_swapped"] = sorted(p for p, seen in moves.items() if swap <= seen)
    return proposal


def _grid(suspects: pd.DataFrame, data_root: Path, path: Path, columns: int = 6) -> None:
    """The top suspects with their given and suggested labels, to review by eye."""
    rows = max(1, -(-len(suspects) // columns))
    figure = Figure(figsize=(2.2 * columns, 2.6 * rows))
    for k, row in enumerate(suspects.itertuples(index=False)):
        axis = figure.add_subplot(rows, columns, k + 1)
        image_path = data_root / row.item if row.level == "photo" else next(
            (data_root / "train" / "images" / row.person).glob("normal.*"), None)
        if image_path is not None and image_path.is_file():
            axis.imshow(read_rgb(image_path, min_size=(128, 96)))
        axis.set_title(f"{row.kind} ({row.level}): {row.given} -> {row.suggested}\n"
                       f"{row.person[:22]}",
                       fontsize=7)
        axis.axis("off")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=80))


def write_suspects(run_path: Path | str, out_dir: Path | str, top: int = 30,
                   data_root: Path | str | None = None, unknown: bool = False) -> dict:
    """Rank the run's suspect labels; write ``suspects.csv``, ``suspects.png`` (the top
    ``top``) and ``corrections.yaml`` (flips, or with ``unknown`` every flagged label made
    unknown) into out_dir; returns counts and paths."""
    run, out_dir = RunDir.open(run_path), Path(out_dir)
    oof = run.require_oof("maskclf suspects")
    suspects = find_suspects(oof)
    data_root = run.data_root(data_root)
    table, grid, proposed = (out_dir / name for name in (TABLE, GRID, CORRECTIONS))
    write_csv(suspects, table)
    _grid(suspects.head(top), data_root, grid)
    proposal = corrections(suspects, unknown)
    atomic_write_text(proposed, proposal.text(
        "# proposed by `maskclf suspects" + (" --unknown" if unknown else "") + "`: review "
        "(maskclf review RUN), edit, then train with -o data.corrections=THIS_FILE\n"))
    return {"suspects": str(table), "grid": str(grid), "corrections": str(proposed),
            "issues": {f"{kind} ({level})": int((suspects["issue"] & (suspects["kind"] == kind)
                                                 & (suspects["level"] == level)).sum())
                       for kind, level in suspects[["kind", "level"]].drop_duplicates()
                       .sort_values(["level", "kind"]).itertuples(index=False)},
            "proposed": {**{section: len(ids) for section, ids in proposal.persons.items()
                            if ids}, **({"images": len(proposal.images)} if proposal.images
                                        else {})}}
