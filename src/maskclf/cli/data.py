"""Commands over datasets and weights: synthetic data, checks, the decode cache, EDA, face
detection, weights import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from maskclf.cli import render
from maskclf.cli.base import ConfigOption, OverrideOption, command, weights_app
from maskclf.errors import UsageError

DataArgument = Annotated[Path, typer.Argument(help="Dataset root (train/ and eval/).")]


@command()
def make_synthetic(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create.")],
    persons: Annotated[int, typer.Option(help="Training persons (7 images each).")] = 60,
    eval_persons: Annotated[int, typer.Option(help="Eval persons (7 images each).")] = 15,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same files.")] = 0,
    one_setting: Annotated[bool, typer.Option(
        help="Each person's photos share a background and clothes, as in the competition "
             "(default: a new setting per photo).")] = False,
    face_set: Annotated[bool, typer.Option(
        help="Write an outside face set instead (images/ + labels.csv: file, gender, age; "
             "one unmasked photo a person), for data.external.")] = False,
    *, show: Console,
) -> dict:
    """Write a synthetic dataset in the competition layout (with eval/labels.csv), or with
    --face-set an outside face set that knows gender and age only."""
    if face_set:
        from maskclf.data.synthetic import make_face_set

        path = make_face_set(out_dir, persons=persons, seed=seed)
        show.print(f"wrote a face set of {persons} persons (gender, age) to {path}")
        return {"face_set": str(path), "persons": persons}
    from maskclf.data.synthetic import make_synthetic as make

    path = make(out_dir, persons=persons, eval_persons=eval_persons, seed=seed,
                one_setting=one_setting)
    show.print(f"wrote {persons} training and {eval_persons} eval persons to {path}")
    return {"data": str(path), "persons": persons, "eval_persons": eval_persons}


@command()
def check_data(
    data: DataArgument,
    external: Annotated[list[Path] | None, typer.Option(
        "--external", help="An outside source to check too (images/ and labels.csv: file, "
                           "any of mask, gender, age); repeat for more.")] = None,
    *, show: Console,
) -> dict:
    """Validate a dataset (layout, labels, every image) and print its size; with
    --external, each outside source too (rows, the attributes they know)."""
    from maskclf.config import ExternalSource
    from maskclf.data.external import describe, read_sources
    from maskclf.data.layout import read_tables

    records, info = read_tables(data)
    summary = {"persons": int(records["person"].nunique()), "train_images": len(records),
               "eval_images": 0 if info is None else len(info)}
    sources = [ExternalSource(path=folder) for folder in external or []]
    if sources:
        summary["external"] = describe(read_sources(sources, data), sources)
    show.print(f"{data}: {summary['persons']} persons, {summary['train_images']} training "
               f"images, {summary['eval_images']} eval images; no problems found")
    for source in summary.get("external", []):
        known = ", ".join(f"{name} {count}" for name, count in source["known"].items())
        show.print(f"{source['source']}: {source['rows']} rows; they know {known}")
    return summary


@command()
def cache(
    data: DataArgument,
    config: ConfigOption = None,
    override: OverrideOption = None,
    *, show: Console,
) -> dict:
    """Build the decode-once cache for a config's preprocessing (train and eval images, and
    the outside sources' of data.external, cached with each source)."""
    from maskclf.config import load_config
    from maskclf.data.cache import build_cache
    from maskclf.data.layout import read_tables
    from maskclf.train.plan import outside_rows

    cfg = load_config(config, override or [])
    records, info = read_tables(data)
    outside = outside_rows(cfg, data)
    paths = [*records["path"], *([] if info is None else info["path"]),
             *([] if outside is None else outside["path"])]
    report = build_cache(data, cfg.data, paths)
    show.print(f"cached {report['images']} images ({report['decoded']} decoded now): "
               f"{report['bytes'] / 1e6:.1f} MB in "
               + " and ".join([report["dir"], *report["sources"]]))
    return report


@command()
def eda(
    data: DataArgument,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.md and plots.")
                       ] = Path("eda"),
    per_class: Annotated[int, typer.Option(help="Sample images per class in the grid.")] = 4,
    stats_sample: Annotated[int, typer.Option(
        help="Images used for the per-channel mean/std (0: all).")] = 2000,
    external: Annotated[list[Path] | None, typer.Option(
        "--external", help="An outside source to describe beside the data (images/ and "
                           "labels.csv); repeat for more.")] = None,
    *, show: Console,
) -> dict:
    """Explore a dataset: counts per class/attribute/person, ages, sizes, mean/std, odd files;
    with --external, each outside source's rows, known attributes, sizes and colours."""
    from maskclf.reports.eda import run_eda

    result = run_eda(data, out_dir, per_class, stats_sample or None, external=external)
    for item in render.eda_tables(result):
        show.print(item)
    return result


@command()
def faces(
    data: DataArgument,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for boxes.csv, faces.png.")
                       ] = Path("faces"),
    limit: Annotated[int | None, typer.Option(help="Only the first N training images.")
                     ] = None,
    config: ConfigOption = None,
    detector: Annotated[str | None, typer.Option(
        help="mtcnn (finds masked faces; the faces extra) or haar; default: the config's "
             "data.face_detector.")] = None,
    external: Annotated[list[Path] | None, typer.Option(
        "--external", help="An outside source whose images to search too (with --limit: its "
                           "first N); repeat for more.")] = None,
    *, show: Console,
) -> dict:
    """Detect faces (offline): detection rate per mask status, boxes and a crop grid."""
    from maskclf.config import load_config
    from maskclf.data.face_report import face_report

    overrides = [] if detector is None else [f"data.face_detector={detector}"]
    report = face_report(data, out_dir, load_config(config, overrides).data, limit,
                         external=external)
    rates = ", ".join(f"{status} {rate:.1%}"
                      for status, rate in report["detection_rate_by_mask"].items())
    show.print(f"{report['detector']} found faces in {report['detected']} of "
               f"{report['images']} images ({report['detection_rate']:.1%}: {rates}); "
               f"boxes: {report['boxes']}; grid: {report['grid']}")
    for source in report["external"]:
        show.print(f"{source['source']}: faces in {source['detected']} of {source['images']} "
                   f"images; {source['without_face']} without a face (centre-cropped)")
    return report


@command()
def synth_masks(
    source: Annotated[Path, typer.Argument(help="A labelled face set: images/ and labels.csv "
                                           "(file, gender, age).")],
    out_dir: Annotated[Path, typer.Option("--out", help="A new folder for the drawn source.")],
    per_face: Annotated[int, typer.Option(min=1, max=5, help="Worn masks and worn-wrong masks "
                                          "drawn per face (each).")] = 1,
    seed: Annotated[int, typer.Option(help="Draws of shape, colour and placement.")] = 0,
    *, show: Console,
) -> dict:
    """Draw masks onto a labelled face set (worn, and worn wrong: nose out or on the chin),
    from each face's landmarks: a new source for data.external that keeps the faces' gender
    and age."""
    from maskclf.data.faces import require_detector

    require_detector("mtcnn")  # the landmarks come from MTCNN (the faces extra)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"--out {out_dir} is not a new or empty folder")
    from maskclf.data.mask_drawing import synth_masks as draw

    report = draw(source, out_dir, seed, per_face)
    show.print(f"{report['images']} images with drawn masks from {report['faces']} faces "
               f"({report['skipped_without_landmarks']} without landmarks, skipped) in "
               f"{report['out']}; contact sheet: {report['sheet']}")
    return report


@command(weights_app, "import")
def weights_import(
    source: Annotated[Path, typer.Argument(help="Weights file: timm/HF .safetensors or .bin/.pth "
                                           "state dict, lukemelas EfficientNet .pth, "
                                           "torchvision ResNet .pth, Lightning/maskclf .ckpt.")],
    model: Annotated[str, typer.Option(help="The timm model the weights are for.")],
    out: Annotated[Path, typer.Option("--out", help="Output .safetensors file.")],
    *, show: Console,
) -> dict:
    """Convert a weights file into a verified timm state dict (safe loading, source hash and
    normalisation recorded); use it with -o model.weights=OUT."""
    from maskclf.models.weights import import_weights

    record = import_weights(source, model, out)
    show.print(f"{record['tensors']} tensors mapped by {record['mapping']} "
               f"({'with' if record['with_head'] == 'True' else 'without'} the classifier) "
               f"-> {out}; mean {record['mean']} std {record['std']}")
    return record
