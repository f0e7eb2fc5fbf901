"""Exploratory data analysis of a dataset in the competition layout.

Counts per class, attribute and person, the age histogram, the gender x age table, image
sizes and formats, per-channel mean and std (usable as normalisation), a sample grid per
class and the files worth a second look — as tables, ``report.md`` and PNG plots.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from maskclf import labels
from maskclf.atomic import atomic_write_text, write_csv
from maskclf.config import ExternalSource
from maskclf.data.external import describe, read_sources
from maskclf.data.io import read_rgb
from maskclf.data.layout import read_tables
from maskclf.reports.plots import bar_figure, image_grid, save
from maskclf.tables import markdown_table

MIN_SIDE = 64
"""Images with a shorter side are listed as odd (too small to show a face well)."""

ODD_LISTED = 200
"""Odd files listed in report.md; ``odd_files.csv`` holds every one."""
_EXPECTED_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def image_facts(path: Path) -> dict:
    """Size, format and mode from the file header (no decoding)."""
    with Image.open(path) as image:
        orientation = image.getexif().get(0x0112, 1)
        return {"width": image.width, "height": image.height, "format": image.format,
                "mode": image.mode, "exif_rotated": orientation not in (1, None)}


def odd_reasons(row: pd.Series) -> list[str]:
    reasons = []
    if _EXPECTED_FORMAT.get(Path(row["path"]).suffix.lower()) != row["format"]:
        reasons.append(f"{row['format']} data in a {Path(row['path']).suffix} file")
    if row["mode"] != "RGB":
        reasons.append(f"mode {row['mode']}")
    if min(row["width"], row["height"]) < MIN_SIDE:
        reasons.append(f"small ({row['width']}x{row['height']})")
    if row["exif_rotated"]:
        reasons.append("EXIF-rotated")
    return reasons


def channel_stats(paths: list[Path], side: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] over ``paths``, each image decoded small."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    with ThreadPoolExecutor() as pool:
        for image in pool.map(lambda p: read_rgb(p, min_size=(side, side)), paths):
            pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
            total += pixels.sum(axis=0)
            squares += (pixels ** 2).sum(axis=0)
            count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean.round(4).tolist(), std.round(4).tolist()


def attribute_counts(records: pd.DataFrame) -> dict[str, pd.Series]:
    """Images per value of each attribute, in label order (absent values count 0)."""
    return {name: records[labels.RECORD_COLUMNS[name]].map(dict(enumerate(values))).value_counts()
            .reindex(values, fill_value=0) for name, values in labels.ATTRIBUTES.items()}


def _table_md(frame: pd.DataFrame) -> str:
    return "\n".join(markdown_table(frame.columns, frame.itertuples(index=False)))


def _sample_grid(records: pd.DataFrame, root: Path, out: Path, per_class: int, seed: int
                 ) -> Path:
    names = labels.class_names()
    images, captions = [], []
    for cls in range(labels.NUM_CLASSES):
        rows = records[records["class"] == cls]
        picked = rows.sample(min(per_class, len(rows)), random_state=seed)
        for path in picked["path"]:
            images.append(read_rgb(root / path, min_size=(128, 96)))
            captions.append(names[cls])
        blanks = per_class - len(picked)
        images += [np.full((8, 8, 3), 255, np.uint8)] * blanks
        captions += [f"{names[cls]} (none)"] * blanks
    return image_grid(images, captions, f"{per_class} samples per class", out / "samples.png",
                      columns=3 * per_class)  # three classes a row: a readable page


def sizes_and_formats(files: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Images per ``WxH`` size and per "FORMAT MODE", most common first (from
    :func:`image_facts` columns)."""
    sizes = (files["width"].astype(str) + "x" + files["height"].astype(str)).value_counts()
    return sizes, (files["format"] + " " + files["mode"]).value_counts()


def outside_facts(sources: list[ExternalSource], data_root: Path, stats_sample: int | None,
                  seed: int) -> list[dict]:
    """Per outside source: what ``describe`` says (rows, known attributes, their values),
    its most common image sizes, formats and per-channel mean/std, to set beside the
    competition's (a different camera or crop shows there first)."""
    rows = read_sources(sources, data_root)
    described = describe(rows, sources)
    for number, facts in enumerate(described, start=1):
        paths = [Path(p) for p in rows.loc[rows["source"] == number, "path"]]
        with ThreadPoolExecutor() as pool:
            files = pd.DataFrame(pool.map(image_facts, paths))
        sample = pd.Series(paths).sample(min(stats_sample or len(paths), len(paths)),
                                         random_state=seed)
        mean, std = channel_stats(list(sample))
        sizes, formats = sizes_and_formats(files)
        facts.update({"sizes": {k: int(v) for k, v in sizes.head(5).items()},
                      "formats": {k: int(v) for k, v in formats.items()},
                      "channel_mean": mean, "channel_std": std})
    return described


def run_eda(data_root: Path | str, out_dir: Path | str, per_class: int = 4,
            stats_sample: int | None = 2000, seed: int = 0,
            external: list[Path] | None = None) -> dict:
    """Analyse DATA's training set (and each ``external`` source) into ``out_dir``; returns
    every table as plain data."""
    root, out = Path(data_root), Path(out_dir)
    records, _ = read_tables(root)
    sources = [ExternalSource(path=folder) for folder in external or []]
    outside = outside_facts(sources, root, stats_sample, seed) if sources else []
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor() as pool:
        facts = pd.DataFrame(pool.map(image_facts, [root / p for p in records["path"]]))
    records = pd.concat([records.reset_index(drop=True), facts], axis=1)
    names = labels.class_names()
    class_counts = records["class"].value_counts().reindex(range(labels.NUM_CLASSES),
                                                           fill_value=0)
    persons = records.drop_duplicates("person")
    images_per_person = records.groupby("person").size().value_counts().sort_index()
    gender_age = pd.crosstab(persons["gender"], persons["age_group"]).reindex(
        index=range(len(labels.GENDER_NAMES)), columns=range(len(labels.AGE_NAMES)),
        fill_value=0)
    gender_age.index, gender_age.columns = labels.GENDER_NAMES, labels.AGE_NAMES
    gender_age.index.name = "gender"
    sizes, formats = sizes_and_formats(records)
    odd = [(path, "; ".join(reasons)) for path, reasons in
           zip(records["path"], records.apply(odd_reasons, axis=1), strict=True) if reasons]
    sample = records.sample(min(stats_sample or len(records), len(records)), random_state=seed)
    mean, std = channel_stats([root / p for p in sample["path"]])

    figures = {
        "class_counts": bar_figure(class_counts.tolist(), names, "images per class",
                                   out / "class_counts.png", "images"),
        "samples": _sample_grid(records, root, out, per_class, seed),
    }
    figure = Figure(figsize=(8, 3.5))
    ax = figure.subplots()
    ax.hist(persons["age"], bins=range(0, int(persons["age"].max()) + 6, 5), color="tab:blue")
    for boundary in (labels.AGE_YOUNG_BELOW, labels.AGE_OLD_FROM):
        ax.axvline(boundary, color="tab:red", linestyle="--")
    ax.set(title="age of persons (class boundaries dashed)", xlabel="age", ylabel="persons")
    figures["age_histogram"] = save(figure, out / "age_histogram.png")

    result = {
        "images": len(records), "persons": len(persons),
        "class_counts": dict(zip(names, map(int, class_counts), strict=True)),
        "attribute_counts": {k: {str(i): int(v) for i, v in s.items()}
                             for k, s in attribute_counts(records).items()},
        "images_per_person": {int(k): int(v) for k, v in images_per_person.items()},
        "gender_age_persons": {g: {a: int(v) for a, v in row.items()}
                               for g, row in gender_age.iterrows()},
        "sizes": {k: int(v) for k, v in sizes.head(10).items()},
        "formats": {k: int(v) for k, v in formats.items()},
        "channel_mean": mean, "channel_std": std, "stats_images": len(sample),
        "odd_files": [{"path": p, "why": why} for p, why in odd],
        "figures": {k: str(v) for k, v in figures.items()}, "dir": str(out),
        "external": outside,
    }
    write_csv(pd.DataFrame(odd, columns=["path", "why"]), out / "odd_files.csv")
    atomic_write_text(out / "report.md", markdown_report(result, class_counts, gender_age))
    result["report"] = str(out / "report.md")
    return result


def markdown_report(result: dict, class_counts: pd.Series, gender_age: pd.DataFrame) -> str:
    names = labels.class_names()
    lines = [f"# EDA: {result['images']} images of {result['persons']} persons", "",
             "## Images per class", "",
             _table_md(pd.DataFrame({"class": range(labels.NUM_CLASSES), "name": names,
                                     "images": class_counts.tolist()})), "",
             "![class counts](class_counts.png)", "", "## Images per attribute", ""]
    for attribute, counts in result["attribute_counts"].items():
        lines += [f"- **{attribute}**: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    lines += ["", "## Persons by gender and age group", "",
              _table_md(gender_age.reset_index().rename(columns={"gender": "gender \\ age"})),
              "", "![age histogram](age_histogram.png)", "",
              "Images per person: " + ", ".join(f"{k} images: {v} persons"
                                               for k, v in result["images_per_person"].items()),
              "", "## Image files", "",
              "Sizes (most common): " + ", ".join(f"{k} ({v})" for k, v in
                                                   result["sizes"].items()),
              "", "Formats: " + ", ".join(f"{k} ({v})" for k, v in result["formats"].items()),
              "", f"Per-channel mean {result['channel_mean']} and std {result['channel_std']} "
              f"(RGB, 0-1 scale, {result['stats_images']} images)", "",
              f"## Odd files ({len(result['odd_files'])})", ""]
    lines += [f"- `{o['path']}`: {o['why']}" for o in result["odd_files"][:ODD_LISTED]]
    if len(result["odd_files"]) > ODD_LISTED:
        lines += ["", f"(the first {ODD_LISTED} of {len(result['odd_files'])} are listed; "
                  "`odd_files.csv` holds them all)"]
    lines += ["", "## Samples per class", "", "![samples](samples.png)", ""]
    if result["external"]:
        lines += ["## Outside sources", "", "Training rows only; a blank cell is unknown.", "",
                  *markdown_table(
                      ["source", "rows", "know mask", "know gender", "know age", "values",
                       "most common size", "channel mean"],
                      [(Path(s["source"]).name, s["rows"], *s["known"].values(),
                        "; ".join(", ".join(f"{k} {v}" for k, v in values.items() if v)
                                  for values in s["values"].values() if any(values.values())),
                        next(iter(s["sizes"]), ""), s["channel_mean"])
                       for s in result["external"]]),
                  "", f"(the competition's: mean {result['channel_mean']}, most common size "
                  f"{next(iter(result['sizes']), '')})", ""]
    return "\n".join(lines)
