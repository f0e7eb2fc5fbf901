"""The ``maskclf`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from maskclf import labels

app = typer.Typer(
    help="Toolkit for the face mask-status competition (18 classes, macro F1).\n\n"
         "Start with `maskclf demo`; train with `maskclf train --config configs/baseline.yaml "
         "--data DATA`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
DataOption = Annotated[Path, typer.Option("--data", help="Dataset root (train/ and eval/).")]
TtaOption = Annotated[str | None, typer.Option(
    "--tta", help="Comma-separated test-time views: hflip,scale,shift ('' for none).")]


def _views(tta: str | None) -> list[str] | None:
    return None if tta is None else [v.strip() for v in tta.split(",") if v.strip()]


def _user_errors() -> tuple[type[Exception], ...]:
    from maskclf.config import ConfigError
    from maskclf.data.layout import DataError
    from maskclf.models import ModelWeightsError
    from maskclf.submission import SubmissionError

    return (ConfigError, DataError, ModelWeightsError, SubmissionError, FileNotFoundError,
            FileExistsError, ValueError)


def command(func: Callable) -> Callable:
    """Register a command that reports user errors in one red message and exits 2."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except _user_errors() as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return app.command()(wrapper)


def _emit_json(payload: dict) -> None:
    print(json.dumps(payload, default=str))


def _score_table(title: str, scores: dict) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("images", str(scores["n"]))
    table.add_row("accuracy", f"{scores['accuracy']:.4f}")
    table.add_row("macro F1 (18 classes)", f"{scores['macro_f1']:.4f}")
    for name, value in scores["attribute_f1"].items():
        table.add_row(f"{name} macro F1", f"{value:.4f}")
    return table


def _fold_table(summary: dict) -> Table:
    table = Table(title="per fold (best checkpoint)")
    for column in ("fold", "images", "accuracy", "macro F1", "mask", "gender", "age"):
        table.add_column(column, justify="right")
    for row in summary["folds"]:
        if "macro_f1" in row:
            table.add_row(str(row["fold"]), str(row["n"]), f"{row['accuracy']:.4f}",
                          f"{row['macro_f1']:.4f}",
                          *(f"{v:.4f}" for v in row["attribute_f1"].values()))
    cv = summary["cv"]
    table.add_section()
    table.add_row("mean ± std", "", "", f"{cv['macro_f1_mean']:.4f} ± {cv['macro_f1_std']:.4f}",
                  "", "", "")
    table.add_row("pooled OOF", "", "", f"{cv['oof_macro_f1']:.4f}", "", "", "")
    return table


def _class_table(scores: dict) -> Table:
    table = Table(title="per-class F1")
    for column in ("class", "name", "F1", "support"):
        table.add_column(column, justify="right" if column != "name" else "left")
    names = labels.class_names()
    for cls, (f1, support) in enumerate(zip(scores["class_f1"], scores["class_support"],
                                            strict=True)):
        table.add_row(str(cls), names[cls], f"{f1:.3f}", str(support))
    return table


@command
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Work folder.")] = Path("maskclf-demo"),
    persons: Annotated[int, typer.Option(help="Synthetic training persons.")] = 150,
    eval_persons: Annotated[int, typer.Option(help="Synthetic eval persons.")] = 30,
    override: Annotated[list[str] | None, typer.Option("-o", help="key=value override.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the main job on built-in synthetic data: generate, train, predict, score."""
    from maskclf.demo import run_demo

    result = run_demo(out_dir, persons=persons, eval_persons=eval_persons,
                      overrides=override or [])
    out.print(_score_table("validation (held-out persons)", result["validation"]))
    out.print(_score_table("eval set (submission scored)", result["eval"]))
    for key in ("data", "run", "predictions", "submission"):
        out.print(f"{key:12s} {result[key]}")
    out.print(f"validation macro F1 {result['validation']['macro_f1']:.4f} in "
              f"{result['seconds']:.0f}s")
    if as_json:
        _emit_json(result)


@command
def make_synthetic(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create.")],
    persons: Annotated[int, typer.Option(help="Training persons (7 images each).")] = 60,
    eval_persons: Annotated[int, typer.Option(help="Eval persons (7 images each).")] = 15,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same files.")] = 0,
) -> None:
    """Write a synthetic dataset in the competition layout (with eval/labels.csv)."""
    from maskclf.data.synthetic import make_synthetic as make

    path = make(out_dir, persons=persons, eval_persons=eval_persons, seed=seed)
    out.print(f"wrote {persons} training and {eval_persons} eval persons to {path}")


@command
def train(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config.")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root (default: ./data, or with --resume the run's own).")
    ] = None,
    runs: Annotated[Path, typer.Option("--out", help="Folder of run directories.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Run name (default: a timestamp).")] = None,
    fold: Annotated[int | None, typer.Option(help="Train only this fold of a k-fold split.")
                    ] = None,
    override: Annotated[list[str] | None, typer.Option("-o", help="key=value override, e.g. "
                                                       "-o optim.lr=3e-4")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Finish this interrupted run (its own config, folds and data).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the dataset, split by person, train, and write a new run directory."""
    from maskclf.config import load_config
    from maskclf.pipeline import resume_run, train_run

    if resume is not None:
        if config is not None or override or fold is not None or name is not None:
            raise ValueError("--resume continues a run with its own config.yaml and folds; "
                             "drop --config, -o, --fold and --name")
        result = resume_run(resume, data)
    else:
        result = train_run(load_config(config, override or []), data or Path("data"), runs, name,
                           fold=fold)
    validation = result.summary["validation"]
    if validation is None:
        out.print("data.val_ratio is 0: trained on every person without validation; "
                  "the last checkpoint is kept.")
    else:
        out.print(_fold_table(result.summary))
        out.print(_score_table("out-of-fold predictions (best checkpoints)", validation))
    out.print(f"run directory: {result.run}")
    if as_json:
        _emit_json(result.summary)


@command
def predict(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    data: DataOption = Path("data"),
    tta: TtaOption = None,
    tune_decisions: Annotated[bool | None, typer.Option(
        "--tune-decisions/--no-tune-decisions",
        help="Apply the run's decision biases (default: predict.tune_decisions).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Predict eval/images in info.csv order; write predictions.csv and submission.csv."""
    from maskclf.predict import predict_run

    result = predict_run(run, data, _views(tta), tune_decisions)
    out.print(f"predicted {result.n_images} images with {len(result.checkpoints)} model(s)")
    out.print(f"predictions: {result.predictions}\nsubmission:  {result.submission}")
    if as_json:
        _emit_json({"predictions": result.predictions, "submission": result.submission,
                    "n_images": result.n_images})


@command
def score(
    submission: Annotated[Path, typer.Argument(help="submission.csv (ImageID,ans).")],
    labels_file: Annotated[Path, typer.Option("--labels", help="Labels (ImageID,class).")],
    as_json: JsonOption = False,
) -> None:
    """Accuracy, macro F1, per-attribute and per-class F1 of a submission."""
    from maskclf.metrics import score_files

    scores = score_files(submission, labels_file)
    out.print(_score_table(str(submission), scores))
    out.print(_class_table(scores))
    if as_json:
        _emit_json(scores)


@command
def validate(
    submission: Annotated[Path, typer.Argument(help="submission.csv to check.")],
    info: Annotated[Path, typer.Option("--info", help="eval/info.csv")],
) -> None:
    """Check a submission: same ImageIDs in info.csv's order, labels 0-17."""
    import pandas as pd

    from maskclf.submission import read_submission, validate_submission

    validate_submission(read_submission(submission),
                        pd.read_csv(info, dtype={"ImageID": str}), str(submission))
    out.print(f"{submission} is a valid submission for {info}")


@command
def check_data(data: Annotated[Path, typer.Argument(help="Dataset root.")],
               as_json: JsonOption = False) -> None:
    """Validate a dataset (layout, labels, every image) and print its size."""
    from maskclf.data.layout import read_tables

    records, info = read_tables(data)
    summary = {"persons": int(records["person"].nunique()), "train_images": len(records),
               "eval_images": 0 if info is None else len(info)}
    out.print(f"{data}: {summary['persons']} persons, {summary['train_images']} training images, "
              f"{summary['eval_images']} eval images; no problems found")
    if as_json:
        _emit_json(summary)


@command
def oof(
    run: Annotated[Path, typer.Argument(help="Run directory with oof.csv.")],
    data: DataOption = Path("data"),
    tta: TtaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute out-of-fold predictions with each fold's model (e.g. to measure TTA)."""
    from maskclf.predict import predict_oof

    path, scores = predict_oof(run, data, _views(tta))
    out.print(_score_table(f"out-of-fold ({path.name})", scores))
    if as_json:
        _emit_json(scores)


@command
def ensemble(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the outputs.")],
    soft: Annotated[list[Path] | None, typer.Option(help="Prediction files to average.")] = None,
    weights: Annotated[list[float] | None, typer.Option(help="One weight per --soft file.")
                       ] = None,
    hard: Annotated[list[Path] | None, typer.Option(help="Submissions to vote over.")] = None,
    per_attribute: Annotated[bool, typer.Option(help="Vote mask, gender, age separately.")
                             ] = False,
    info: Annotated[Path | None, typer.Option(help="eval/info.csv: validate the result.")
                    ] = None,
) -> None:
    """Soft voting over prediction files, or hard voting over submissions."""
    from maskclf.ensemble import write_ensemble

    path = write_ensemble(out_dir, soft or [], weights, hard or [], per_attribute, info)
    out.print(f"wrote {path}")


@command
def diff(
    first: Annotated[Path, typer.Argument(help="Submission or prediction file A.")],
    second: Annotated[Path, typer.Argument(help="Submission or prediction file B.")],
    as_json: JsonOption = False,
) -> None:
    """How many labels differ between A and B, by attribute, and the top transitions."""
    from maskclf.ensemble import diff as diff_files

    result = diff_files(first, second)
    out.print(f"{result['changed']} of {result['n']} labels differ ({result['share']:.2%})")
    for name, count in result["attribute_changed"].items():
        out.print(f"  {name:6s} changed: {count}")
    names = labels.class_names()
    for row in result["transitions"]:
        out.print(f"  {row['count']:5d}  {row['from']:2d} {names[row['from']]:28s} -> "
                  f"{row['to']:2d} {names[row['to']]}")
    if as_json:
        _emit_json(result)


@command
def pseudo_label(
    predictions: Annotated[Path, typer.Argument(help="predictions.csv of the eval set.")],
    data: DataOption = Path("data"),
    threshold: Annotated[float, typer.Option(help="Minimum top probability.")] = 0.9,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for extra.csv.")] = Path(
        "pseudo"),
) -> None:
    """Write confident eval predictions as an extra training table (use with data.extra)."""
    from maskclf.pseudo import pseudo_label as make

    extra = make(predictions, data, threshold, out_dir)
    out.print(f"{len(extra)} image(s) at >= {threshold} written to {out_dir}/extra.csv; "
              f"train with -o data.extra=[{out_dir}]")


@command
def tune_decisions(
    run: Annotated[Path, typer.Argument(help="Run directory with oof.csv.")],
    oof_file: Annotated[str, typer.Option(help="OOF file inside the run.")] = "oof.csv",
    as_json: JsonOption = False,
) -> None:
    """Fit per-class decision biases for macro F1 on OOF rows (cross-validated by person)."""
    from maskclf.decisions import tune_run

    report = tune_run(run, oof_file)
    out.print(f"OOF macro F1, cross-validated over persons: plain {report['plain_macro_f1']:.4f}"
              f" -> tuned {report['tuned_macro_f1']:.4f} ({report['n_splits']} splits)")
    out.print(f"biases saved to {report['file']}; apply them with "
              f"`maskclf predict {run} --tune-decisions`")
    if as_json:
        _emit_json(report)


@command
def cache(
    data: Annotated[Path, typer.Argument(help="Dataset root.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML config.")] = None,
    override: Annotated[list[str] | None, typer.Option("-o", help="key=value override.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Build the decode-once cache for a config's preprocessing (train and eval images)."""
    from maskclf.config import load_config
    from maskclf.data.cache import build_cache
    from maskclf.data.layout import read_tables

    cfg = load_config(config, override or [])
    records, info = read_tables(data)
    paths = records["path"].tolist() + ([] if info is None else info["path"].tolist())
    report = build_cache(data, cfg.data, paths)
    out.print(f"cached {report['images']} images ({report['decoded']} decoded now): "
              f"{report['bytes'] / 1e6:.1f} MB in {report['dir']}")
    if as_json:
        _emit_json(report)


def _frame_table(title: str, frame, floats: str = "{:.4g}") -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*("" if value is None or value != value  # NaN
                        else floats.format(value) if isinstance(value, float)
                        else escape(str(value)) for value in row))
    return table


@command
def runs(
    folder: Annotated[Path, typer.Argument(help="Folder of run directories.")] = Path("runs"),
    sort: Annotated[str, typer.Option(help="Column to rank by (e.g. cv_f1, date, minutes).")
                    ] = "oof_f1",
    ascending: Annotated[bool, typer.Option(help="Smallest first.")] = False,
    diff: Annotated[tuple[Path, Path] | None, typer.Option(
        help="Show the config settings that differ between two run directories.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Leaderboard of runs (backbone, head, loss, size, folds, CV/OOF F1, time), or --diff A B."""
    from maskclf.runs import config_diff, leaderboard

    if diff is not None:
        table = config_diff(*diff)
        if table.empty:
            out.print(f"{diff[0]} and {diff[1]} have the same config")
        else:
            out.print(_frame_table(f"config differences ({len(table)})", table, "{:g}"))
    else:
        table = leaderboard(folder, sort, ascending)
        out.print(_frame_table(f"{len(table)} runs in {folder}, by {sort}", table))
    if as_json:
        _emit_json({"rows": json.loads(table.to_json(orient="records"))})


@command
def report(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root for the mistake images (default: the run's own).")] = None,
    as_json: JsonOption = False,
) -> None:
    """(Re)draw a run's report: curves, confusion matrices, per-class F1, confident mistakes."""
    from maskclf.report import write_report

    written = write_report(run, data)
    out.print(f"report: {written['report']} ({len(written['figures'])} figures)")
    if as_json:
        _emit_json({k: v for k, v in written.items() if k != "confusion"})


@command
def eda(
    data: Annotated[Path, typer.Argument(help="Dataset root.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.md and plots.")
                       ] = Path("eda"),
    per_class: Annotated[int, typer.Option(help="Sample images per class in the grid.")] = 4,
    stats_sample: Annotated[int, typer.Option(
        help="Images used for the per-channel mean/std (0: all).")] = 2000,
    as_json: JsonOption = False,
) -> None:
    """Explore a dataset: counts per class/attribute/person, ages, sizes, mean/std, odd files."""
    import pandas as pd

    from maskclf.eda import run_eda

    result = run_eda(data, out_dir, per_class, stats_sample or None)
    classes = pd.DataFrame({"class": list(result["class_counts"]),
                            "images": list(result["class_counts"].values())})
    out.print(_frame_table(f"{result['images']} images of {result['persons']} persons",
                           classes))
    for attribute, counts in result["attribute_counts"].items():
        out.print(f"{attribute}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    gender_age = pd.DataFrame(result["gender_age_persons"]).T.reset_index(names="gender")
    out.print(_frame_table("persons by gender and age group", gender_age))
    out.print(f"channel mean {result['channel_mean']} std {result['channel_std']}; "
              f"formats {result['formats']}; odd files {len(result['odd_files'])}")
    out.print(f"report: {result['report']}")
    if as_json:
        _emit_json(result)


@command
def faces(
    data: Annotated[Path, typer.Argument(help="Dataset root.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for boxes.csv, faces.png.")
                       ] = Path("faces"),
    limit: Annotated[int | None, typer.Option(help="Only the first N training images.")
                     ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML config.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Detect faces (OpenCV Haar cascade, offline): detection rate, boxes and a crop grid."""
    from maskclf.config import load_config
    from maskclf.data.face_report import face_report

    report = face_report(data, out_dir, load_config(config).data, limit)
    out.print(f"faces found in {report['detected']} of {report['images']} images "
              f"({report['detection_rate']:.1%}); boxes: {report['boxes']}; grid: "
              f"{report['grid']}")
    if as_json:
        _emit_json(report)


def main() -> None:
    app()
