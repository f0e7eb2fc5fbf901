"""The ``maskclf`` command line: each command parses, calls one library function, shows.

Human output (tables, progress, log lines) goes to stdout, or to stderr with ``--json``,
when stdout carries exactly one JSON document. A :class:`~maskclf.errors.MaskclfError`
becomes one red line and exit status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from maskclf import render
from maskclf.errors import MaskclfError, RunInterrupted, UsageError

app = typer.Typer(
    help="Toolkit for the face mask-status competition (18 classes, macro F1).\n\n"
         "Start with `maskclf demo`; train with `maskclf train --config configs/baseline.yaml "
         "--data DATA`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Pretrained weights without a network.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
stdout = Console()
stderr = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print exactly one JSON document on stdout (human output goes to stderr).")]
DataOption = Annotated[Path, typer.Option("--data", help="Dataset root (train/ and eval/).")]
RunDataOption = Annotated[Path | None, typer.Option(
    "--data", help="Dataset root (default: the one the run trained on, from its run.json).")]
TtaOption = Annotated[str | None, typer.Option(
    "--tta", help="Comma-separated test-time views: hflip,scale,shift ('' for none).")]
OverrideOption = Annotated[list[str] | None, typer.Option(
    "-o", help="key=value override, e.g. -o optim.lr=3e-4")]


def _views(tta: str | None) -> list[str] | None:
    return None if tta is None else [v.strip() for v in tta.split(",") if v.strip()]


@contextmanager
def _logs_on_stderr() -> Iterator[None]:
    """During a command, maskclf's log lines (cache built, corrections, resume hints) go
    to stderr as plain lines; the logger is left as it was afterwards."""
    from maskclf.distributed import is_rank_zero

    logger = logging.getLogger("maskclf")
    handler = logging.StreamHandler(sys.stderr)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if is_rank_zero() else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def command(func: Callable, group: typer.Typer = app, name: str | None = None) -> Callable:
    """Register a command whose maskclf errors print one red message and exit 2."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with _logs_on_stderr():
                return func(*args, **kwargs)
        except MaskclfError as exc:
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                         soft_wrap=True)
            raise typer.Exit(128 + exc.signum if isinstance(exc, RunInterrupted) else 2
                             ) from None
        except KeyboardInterrupt:  # Ctrl+C outside training (which raises RunInterrupted)
            stderr.print("[bold red]interrupted[/] (files already written are complete; "
                         "`maskclf train --resume RUN` finishes an interrupted run)",
                         highlight=False, soft_wrap=True)
            raise typer.Exit(128 + signal.SIGINT) from None

    return group.command(name)(wrapper)


def _console(as_json: bool) -> Console:
    """Where human output goes: stderr when stdout is reserved for the JSON document."""
    return stderr if as_json else stdout


def _emit_json(payload: dict) -> None:
    print(json.dumps(payload, default=str))


@command
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Work folder.")] = Path("maskclf-demo"),
    persons: Annotated[int, typer.Option(help="Synthetic training persons.")] = 150,
    eval_persons: Annotated[int, typer.Option(help="Synthetic eval persons.")] = 30,
    override: OverrideOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the main job on built-in synthetic data: generate, train, predict, score."""
    from maskclf.demo import run_demo

    show = _console(as_json)
    result = run_demo(out_dir, persons=persons, eval_persons=eval_persons,
                      overrides=override or [])
    show.print(render.score_table("validation (held-out persons)", result["validation"]))
    show.print(render.score_table("eval set (submission scored)", result["eval"]))
    for key in ("data", "run", "predictions", "submission"):
        show.print(f"{key:12s} {result[key]}")
    show.print(f"validation macro F1 {result['validation']['macro_f1']:.4f} in "
               f"{result['seconds']:.0f}s")
    if as_json:
        _emit_json(result)


@command
def make_synthetic(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create.")],
    persons: Annotated[int, typer.Option(help="Training persons (7 images each).")] = 60,
    eval_persons: Annotated[int, typer.Option(help="Eval persons (7 images each).")] = 15,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same files.")] = 0,
    one_setting: Annotated[bool, typer.Option(
        help="Each person's photos share a background and clothes, as in the competition "
             "(default: a new setting per photo).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a synthetic dataset in the competition layout (with eval/labels.csv)."""
    from maskclf.data.synthetic import make_synthetic as make

    path = make(out_dir, persons=persons, eval_persons=eval_persons, seed=seed,
                one_setting=one_setting)
    _console(as_json).print(f"wrote {persons} training and {eval_persons} eval persons to {path}")
    if as_json:
        _emit_json({"data": str(path), "persons": persons, "eval_persons": eval_persons})


def _more_epochs(overrides: list[str]) -> int:
    """The N of ``--resume RUN -o train.epochs=N``, the one setting a continuation changes."""
    key, _, value = overrides[0].partition("=")
    if len(overrides) != 1 or key.strip() != "train.epochs" or not value.strip().isdigit():
        raise UsageError("--resume takes one override, -o train.epochs=N, to train a finished "
                         f"run longer; got {' '.join(overrides)}")
    return int(value)


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
    override: OverrideOption = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Finish this interrupted run (its own config, folds and data); "
                         "with -o train.epochs=N, train a finished run longer as a new run.")
    ] = None,
    refit: Annotated[Path | None, typer.Option(
        "--refit", help="Retrain this finished run's config on every person, for the median "
                        "epoch of its folds' best checkpoints, as a new run.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the dataset, split by person, train, and write a new run directory."""
    from maskclf.config import load_config
    from maskclf.distributed import is_rank_zero
    from maskclf.pipeline import continue_run, refit_config, resume_run, train_run

    show = _console(as_json)
    if refit is not None:
        if config is not None or override or fold is not None or resume is not None:
            raise UsageError("--refit trains the run's own config; drop --config, -o, --fold "
                             "and --resume")
        cfg, best_epochs, run_data = refit_config(refit)
        show.print(f"refit: {cfg.train.epochs} epochs on every person (best epochs of the "
                   f"folds: {best_epochs})")
        result = train_run(cfg, data or run_data, runs, name or f"{refit.name}-refit")
    elif resume is not None:
        if config is not None or fold is not None:
            raise UsageError("--resume continues a run with its own config.yaml and folds; "
                             "drop --config and --fold")
        if override:
            result = continue_run(resume, _more_epochs(override), data, name)
        elif name is not None:
            raise UsageError("--name names a new run: with --resume it needs "
                             "-o train.epochs=N (train a finished run longer)")
        else:
            result = resume_run(resume, data)
    else:
        if config is None:
            logging.getLogger("maskclf").warning(
                "no --config: training maskclf's defaults (%s from scratch at 224 x 224); "
                "pick a recipe with --config NAME (`maskclf recipes` lists them)",
                load_config(None).model.name)
        result = train_run(load_config(config, override or []), data or Path("data"), runs, name,
                           fold=fold)
    if not is_rank_zero():  # one rank of a multi-process run: rank 0 reports
        return
    validation = result.summary["validation"]
    if validation is None:
        show.print("data.val_ratio is 0: trained on every person without validation; "
                   "the last checkpoint is kept.")
    else:
        show.print(render.fold_table(result.summary))
        show.print(render.score_table("out-of-fold predictions (best checkpoints)", validation))
    show.print(f"run directory: {result.run}")
    if as_json:
        _emit_json(result.summary)


@command
def recipes(as_json: JsonOption = False) -> None:
    """The training recipes shipped with maskclf, for `maskclf train --config NAME`."""
    from maskclf.config import packaged_recipes

    found = packaged_recipes()
    if as_json:
        _emit_json({"recipes": found})
    _console(as_json).print(render.recipes_table(found))


@command
def tune(
    study: Annotated[str, typer.Option(help="Study name; workers with the same name share it.")
                     ] = "study",
    config: Annotated[Path | None, typer.Option("--config", help="Base YAML config.")] = None,
    data: Annotated[Path, typer.Option("--data", help="Dataset root.")] = Path("data"),
    space: Annotated[Path | None, typer.Option(
        help="Search space YAML: config keys -> {log_float|float|int|log_int|choice: ...}.")
    ] = None,
    trials: Annotated[int, typer.Option(help="Trials this worker runs.")] = 20,
    storage: Annotated[str | None, typer.Option(
        help="Study storage URL (default: a SQLite file in --out), e.g. "
             "postgresql+psycopg://user:pass@host/db for many workers.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Study folder: trial runs, SQLite file (default: studies/STUDY).")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after S seconds.")
                       ] = None,
    sampler_seed: Annotated[int | None, typer.Option(
        help="TPE seed (default: the config's seed); give each worker its own.")] = None,
    startup_trials: Annotated[int, typer.Option(
        help="Finished trials before the median pruner prunes.")] = 5,
    warmup_epochs: Annotated[int, typer.Option(help="Epochs a trial runs before pruning.")
                             ] = 1,
    threads: Annotated[int | None, typer.Option(
        help="Torch threads of this worker (workers on one machine split its cores).")
    ] = None,
    report: Annotated[Path | None, typer.Option(
        help="Instead of running trials: write the study's report (best.yaml, trials.csv, "
             "plots) to this folder.")] = None,
    override: OverrideOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tune a config with Optuna: each trial is a run; many workers can share a study."""
    from maskclf.config import apply_overrides, load_raw_config
    from maskclf.errors import RunInterrupted
    from maskclf.tune import run_study, set_threads, study_report

    show = _console(as_json)
    folder = out_dir or Path("studies") / study
    if report is not None:
        result = study_report(study, folder, storage, report)
        show.print(f"best trial {result['best']['number']}: validation macro F1 "
                   f"{result['best']['value']:.4f} {result['best']['params']}")
        show.print(f"config: {result['config']}  trials: {result['trials_table']}  "
                   f"figures: {', '.join(result['figures'].values())}")
    else:
        if space is None:
            raise UsageError("--space SPACE.yaml is needed to run trials (or --report DIR to "
                             "report a study)")
        set_threads(threads)
        raw = apply_overrides(load_raw_config(config), override or [])
        try:
            result = run_study(raw, data, space, trials, study, folder, storage, timeout,
                               sampler_seed, startup_trials, warmup_epochs)
        except KeyboardInterrupt:
            raise RunInterrupted(f"study {study!r} stopped; the running trial is marked failed "
                                 "and the same command continues the study", 2) from None
        best = result["best"]
        show.print(f"study {study}: {result['trials']} trials {result['states']}; best: "
                   + ("none yet" if best is None else
                      f"trial {best['number']} F1 {best['value']:.4f} {best['params']}"))
    if as_json:
        _emit_json(result)


def weights_import(
    source: Annotated[Path, typer.Argument(help="Weights file: timm/HF .safetensors or .bin/.pth "
                                           "state dict, lukemelas EfficientNet .pth, "
                                           "torchvision ResNet .pth, Lightning/maskclf .ckpt.")],
    model: Annotated[str, typer.Option(help="The timm model the weights are for.")],
    out: Annotated[Path, typer.Option("--out", help="Output .safetensors file.")],
    as_json: JsonOption = False,
) -> None:
    """Convert a weights file into a verified timm state dict (safe loading, source hash and
    normalisation recorded); use it with -o model.weights=OUT."""
    from maskclf.models.weights import import_weights

    record = import_weights(source, model, out)
    _console(as_json).print(f"{record['tensors']} tensors mapped by {record['mapping']} "
                            f"({'with' if record['with_head'] == 'True' else 'without'} the "
                            f"classifier) -> {out}; mean {record['mean']} std {record['std']}")
    if as_json:
        _emit_json(record)


command(weights_import, weights_app, "import")


@command
def predict(
    run: Annotated[Path, typer.Argument(
        help="Run directory made by `maskclf train`, or an export made by `maskclf export` "
             "(runs on onnxruntime).")],
    sources: Annotated[list[str] | None, typer.Argument(
        help="With --images: image files, folders (searched recursively) or glob patterns.",
        show_default=False)] = None,
    images: Annotated[bool, typer.Option(
        "--images", help="Predict the files, folders or globs that follow RUN instead of "
                         "DATA/eval: a CSV of probabilities and decoded labels.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="With --images: the CSV (default: RUN/image_predictions.csv).")] = None,
    grid: Annotated[Path | None, typer.Option(
        help="With --images: also draw a captioned grid of the images (PNG).")] = None,
    data: RunDataOption = None,
    tta: TtaOption = None,
    tune_decisions: Annotated[bool | None, typer.Option(
        "--tune-decisions/--no-tune-decisions",
        help="Apply the run's decision biases (default: predict.tune_decisions).")] = None,
    allow_unfinished: Annotated[bool, typer.Option(
        help="Predict with an interrupted run's checkpoints instead of refusing.")] = False,
    person_vote: Annotated[bool | None, typer.Option(
        "--person-vote/--no-person-vote",
        help="Group eval images into persons and vote gender and age per person, if the "
             "vote proves itself on the out-of-fold rows (default: predict.person_vote).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Predict eval/images in info.csv order; write predictions.csv and submission.csv.
    With --images, predict any image files, folders or globs instead."""
    from maskclf.predict import predict_images, predict_run

    show = _console(as_json)
    if images or sources:
        if not (images and sources):
            raise UsageError("give image files, folders or globs after --images: maskclf "
                             "predict RUN --images photo.jpg folder/ 'shots/*.png'")

        written = predict_images(run, sources, out, _views(tta), grid)
        show.print(f"predicted {written['n_images']} images with "
                   f"{len(written['checkpoints'])} model(s): {written['predictions']}"
                   + (f"; grid: {written['grid']}" if "grid" in written else ""))
        if as_json:
            _emit_json(written)
        return
    result = predict_run(run, data, _views(tta), tune_decisions, allow_unfinished, person_vote)
    show.print(f"predicted {result.n_images} images with {len(result.checkpoints)} model(s)")
    if result.person_vote is not None:
        show.print(render.person_vote_line(result.person_vote))
    show.print(f"predictions: {result.predictions}\nsubmission:  {result.submission}")
    if as_json:
        _emit_json({"predictions": result.predictions, "submission": result.submission,
                    "n_images": result.n_images, "person_vote": result.person_vote,
                    "checkpoints": [str(c) for c in result.checkpoints]})


@command
def score(
    submission: Annotated[Path, typer.Argument(help="submission.csv (ImageID,ans).")],
    labels_file: Annotated[Path, typer.Option("--labels", help="Labels (ImageID,class).")],
    as_json: JsonOption = False,
) -> None:
    """Accuracy, macro F1, per-attribute and per-class F1 of a submission."""
    from maskclf.metrics import score_files

    show = _console(as_json)
    scores = score_files(submission, labels_file)
    show.print(render.score_table(str(submission), scores))
    show.print(render.class_table(scores))
    if as_json:
        _emit_json(scores)


@command
def validate(
    submission: Annotated[Path, typer.Argument(help="submission.csv to check.")],
    info: Annotated[Path, typer.Option("--info", help="eval/info.csv", exists=True,
                                       dir_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Check a submission: same ImageIDs in info.csv's order, labels 0-17."""
    from maskclf.submission import read_submission, validate_submission
    from maskclf.tables import read_table

    table = read_submission(submission)
    validate_submission(table, read_table(info, ["ImageID"], "info file", dtype={"ImageID": str}),
                        str(submission))
    _console(as_json).print(f"{submission} is a valid submission for {info}")
    if as_json:
        _emit_json({"submission": str(submission), "info": str(info), "valid": True,
                    "rows": len(table)})


@command
def check_data(data: Annotated[Path, typer.Argument(help="Dataset root.")],
               as_json: JsonOption = False) -> None:
    """Validate a dataset (layout, labels, every image) and print its size."""
    from maskclf.data.layout import read_tables

    records, info = read_tables(data)
    summary = {"persons": int(records["person"].nunique()), "train_images": len(records),
               "eval_images": 0 if info is None else len(info)}
    _console(as_json).print(f"{data}: {summary['persons']} persons, {summary['train_images']} "
                            f"training images, {summary['eval_images']} eval images; no "
                            "problems found")
    if as_json:
        _emit_json(summary)


@command
def export(
    run: Annotated[Path, typer.Argument(help="Finished run directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the ONNX files and "
                                          "manifest.json.")],
    folds: Annotated[str, typer.Option(help="all (every fold, averaged) or best (the fold "
                                       "with the highest validation F1).")] = "all",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's).")
                     ] = None,
    tta: TtaOption = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Images to verify the export on (default: the run's data).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Export a run's networks to ONNX (normalisation and TTA inside), verified on its images."""
    from maskclf.export import export_run

    manifest = export_run(run, out_dir, folds, opset, _views(tta), data)
    verified = manifest["verified"]
    _console(as_json).print(
        f"exported {len(manifest['networks'])} network(s) to {out_dir}; onnxruntime vs torch "
        f"on {verified['images']} images: max |difference| {verified['max_abs_difference']:.2e}")
    if as_json:
        _emit_json(manifest)


@command
def serve(
    run: Annotated[Path, typer.Argument(help="Export (maskclf export) or finished run "
                                        "directory (exported on the fly).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve a web page and a JSON API (POST /predict) that answer photos, on onnxruntime."""
    from maskclf.serve import serve as serve_model

    stderr.print(f"maskclf: serving {run} on http://{host}:{port}/ (Ctrl+C stops)")
    serve_model(run, host, port)


@command
def suspects(
    run: Annotated[Path, typer.Argument(help="Finished run with out-of-fold predictions.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for suspects.csv, suspects.png, corrections.yaml "
                      "(default: RUN/suspects).")] = None,
    top: Annotated[int, typer.Option(help="Suspects shown in the grid.")] = 30,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset root (default: the "
                                              "run's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Labels the out-of-fold predictions disagree with most (cleanlab), to review and fix."""
    from maskclf.suspects import write_suspects

    result = write_suspects(run, out_dir or run / "suspects", top, data)
    _console(as_json).print(
        f"label issues (cleanlab): {result['issues']}; proposed corrections: "
        f"{result['proposed']}\nreview {result['grid']} and {result['suspects']}, edit "
        f"{result['corrections']}, then train with -o data.corrections={result['corrections']}")
    if as_json:
        _emit_json(result)


@command
def oof(
    run: Annotated[Path, typer.Argument(help="Run directory with oof.csv.")],
    data: RunDataOption = None,
    tta: TtaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute out-of-fold predictions with each fold's model (e.g. to measure TTA)."""
    from maskclf.predict import predict_oof

    path, scores = predict_oof(run, data, _views(tta))
    _console(as_json).print(render.score_table(f"out-of-fold ({path.name})", scores))
    if as_json:
        _emit_json({"file": str(path), **scores})


def _numbers_among(inputs: list[str], weights: list[float]) -> tuple[list[Path], list[float]]:
    """Split ``P1 P2 --weights 2 1``: a click option takes one value, so the weights after
    the first arrive among the positional inputs; numbers there are weights, in order."""
    files, more = [], []
    for item in inputs:
        try:
            more.append(float(item))
        except ValueError:
            files.append(Path(item))
    if more and not weights:
        raise UsageError(f"{more} look like weights: put them after --weights")
    return files, [*weights, *more]


@command
def ensemble(
    inputs: Annotated[list[str], typer.Argument(
        help="Prediction files to average (soft), or submissions to vote over (--hard).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the outputs.")],
    weights: Annotated[list[float] | None, typer.Option(
        help="One weight per input file, in order (soft voting): --weights 2 1")] = None,
    hard: Annotated[bool, typer.Option(
        "--hard", help="Majority vote over classes instead of averaging probabilities.")
    ] = False,
    per_attribute: Annotated[bool, typer.Option(help="Decide mask, gender, age separately.")
                             ] = False,
    info: Annotated[Path | None, typer.Option(
        help="eval/info.csv: order and validate the result.", exists=True, dir_okay=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Soft voting over prediction files, or hard voting (--hard) over submissions."""
    from maskclf.ensemble import write_ensemble

    files, all_weights = _numbers_among(inputs, weights or [])
    written = write_ensemble(out_dir, files, hard, all_weights or None, per_attribute, info)
    _console(as_json).print(f"{written['mode']} vote over {len(files)} files: wrote "
                            f"{written['submission']}")
    if as_json:
        _emit_json(written)


@command
def diff(
    first: Annotated[Path, typer.Argument(help="Submission or prediction file A.")],
    second: Annotated[Path, typer.Argument(help="Submission or prediction file B.")],
    as_json: JsonOption = False,
) -> None:
    """How many labels differ between A and B, by attribute, and the top transitions."""
    from maskclf.ensemble import diff as diff_files

    result = diff_files(first, second)
    show = _console(as_json)
    for line in render.diff_lines(result):
        show.print(line, highlight=False)
    if as_json:
        _emit_json(result)


@command
def pseudo_label(
    predictions: Annotated[Path, typer.Argument(help="predictions.csv of the eval set.")],
    data: DataOption = Path("data"),
    threshold: Annotated[float, typer.Option(help="Minimum top probability.")] = 0.9,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for extra.csv.")] = Path(
        "pseudo"),
    as_json: JsonOption = False,
) -> None:
    """Write confident eval predictions as an extra training table (use with data.extra)."""
    from maskclf.pseudo import pseudo_label as make

    extra = make(predictions, data, threshold, out_dir)
    _console(as_json).print(f"{len(extra)} image(s) at >= {threshold} written to "
                            f"{out_dir}/extra.csv; train with -o data.extra=[{out_dir}]",
                            markup=False)
    if as_json:
        _emit_json({"images": len(extra), "threshold": threshold,
                    "extra": str(out_dir / "extra.csv")})


@command
def tune_decisions(
    run: Annotated[Path, typer.Argument(help="Run directory with oof.csv.")],
    oof_file: Annotated[str | None, typer.Option(
        help="OOF file inside the run (default: oof.csv).")] = None,
    per: Annotated[str, typer.Option(
        help="Free biases per attribute value (8, the default) or per class (18).")
    ] = "attribute",
    as_json: JsonOption = False,
) -> None:
    """Fit decision biases for macro F1 on OOF rows; kept only if they help on held-out
    persons (cross-validated), else argmax stays."""
    from maskclf.decisions import tune_run

    report = (tune_run(run, per=per) if oof_file is None
              else tune_run(run, oof_file, per=per))
    show = _console(as_json)
    show.print(f"OOF macro F1, cross-validated over persons: plain {report['plain_macro_f1']:.4f}"
               f" -> tuned {report['tuned_macro_f1']:.4f} ({report['n_splits']} splits, "
               f"biases per {per})")
    if report["applied"]:
        show.print(f"biases saved to {report['file']}; apply them with "
                   f"`maskclf predict {run} --tune-decisions`")
    else:
        show.print(f"tuning did not help on held-out persons: {report['file']} keeps zero "
                   "biases, so --tune-decisions predicts the plain argmax")
    if as_json:
        _emit_json(report)


@command
def cache(
    data: Annotated[Path, typer.Argument(help="Dataset root.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML config.")] = None,
    override: OverrideOption = None,
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
    _console(as_json).print(f"cached {report['images']} images ({report['decoded']} decoded "
                            f"now): {report['bytes'] / 1e6:.1f} MB in {report['dir']}")
    if as_json:
        _emit_json(report)


@command
def runs(
    folder: Annotated[Path, typer.Argument(help="Folder of run directories.")] = Path("runs"),
    sort: Annotated[str, typer.Option(help="Column to rank by (e.g. cv_f1, date, minutes).")
                    ] = "oof_f1",
    ascending: Annotated[bool, typer.Option(help="Smallest first.")] = False,
    diff: Annotated[tuple[Path, Path] | None, typer.Option(
        help="Show the config settings that differ between two run directories.")] = None,
    columns: Annotated[str | None, typer.Option(
        help="Comma-separated columns, or all (default: name, data, backbone, epochs, "
             "cv_f1, oof_f1, lb, note).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Leaderboard of runs (data, backbone, epochs, CV/OOF F1, public score, note), or
    --diff A B."""
    from maskclf.runs import choose_columns, config_diff, lb_correlation, leaderboard

    show = _console(as_json)
    if diff is not None:
        table = config_diff(*diff)
        if table.empty:
            show.print(f"{diff[0]} and {diff[1]} have the same config")
        else:
            show.print(render.frame_table(f"config differences ({len(table)})", table, "{:g}"))
    else:
        chosen, board = choose_columns(columns), leaderboard(folder, sort, ascending)
        correlation = lb_correlation(board)
        table = board if as_json else board[chosen]
        show.print(render.frame_table(f"{len(board)} runs in {folder}, by {sort}",
                                      table, "{:.3f}", compact=True))
        show.print(render.correlation_line(correlation))
    if as_json:
        _emit_json({"rows": json.loads(table.to_json(orient="records"))}
                   | ({} if diff is not None else {"lb_correlation": correlation}))


@command
def note(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    text: Annotated[str | None, typer.Argument(help="A note (what you submitted, why).")
                    ] = None,
    lb: Annotated[float | None, typer.Option(
        "--lb", help="The public leaderboard macro F1 this run's submission scored.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record a public score and/or a note for a run; `maskclf runs` shows them beside CV."""
    from maskclf.runs import add_note

    notes = add_note(run, lb, text)
    _console(as_json).print(f"{run}: {len(notes)} note(s); latest: {notes[-1]}")
    if as_json:
        _emit_json({"notes": notes})


@command
def report(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root for the mistake images (default: the run's own).")] = None,
    as_json: JsonOption = False,
) -> None:
    """(Re)draw a run's report: the recipe, findings with remedies, curves, confusion
    matrices, per-class F1, confident mistakes."""
    from maskclf.report import write_report

    written = write_report(run, data)
    show = _console(as_json)
    show.print(f"report: {written['report']} ({len(written['figures'])} figures)")
    for finding in written["findings"]:
        show.print(f"- {finding['what']} -> {finding['remedy']}", markup=False)
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
    from maskclf.eda import run_eda

    result = run_eda(data, out_dir, per_class, stats_sample or None)
    show = _console(as_json)
    for item in render.eda_tables(result):
        show.print(item)
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
    detector: Annotated[str | None, typer.Option(
        help="mtcnn (finds masked faces; the faces extra) or haar; default: the config's "
             "data.face_detector.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Detect faces (offline): detection rate per mask status, boxes and a crop grid."""
    from maskclf.config import load_config
    from maskclf.data.face_report import face_report

    overrides = [] if detector is None else [f"data.face_detector={detector}"]
    report = face_report(data, out_dir, load_config(config, overrides).data, limit)
    rates = ", ".join(f"{status} {rate:.1%}"
                      for status, rate in report["detection_rate_by_mask"].items())
    _console(as_json).print(f"{report['detector']} found faces in {report['detected']} of "
                            f"{report['images']} images ({report['detection_rate']:.1%}: "
                            f"{rates}); boxes: {report['boxes']}; grid: {report['grid']}")
    if as_json:
        _emit_json(report)


def main() -> None:
    """The ``maskclf`` program. A Ctrl+C that lands after a command's own handling, while it
    prints, ends with 130; once the command has finished, the interpreter's shutdown ignores
    it (the work is done and written), instead of dying by the signal."""
    try:
        app(prog_name="maskclf")
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
