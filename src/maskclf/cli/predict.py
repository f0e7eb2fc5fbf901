"""Commands that predict with a run or an export: predict, explain, oof, export, serve, decision
tuning, pseudo-labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from maskclf.cli import render
from maskclf.cli.base import DataOption, RunDataOption, TtaOption, command, stderr, views
from maskclf.errors import UsageError


@command()
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
    strict: Annotated[bool, typer.Option(
        "--strict", help="With --images: refuse (exit 2) when any file cannot be read, "
                         "instead of skipping it with a warning.")] = False,
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
    *, show: Console,
) -> dict:
    """Predict eval/images in info.csv order; write predictions.csv and submission.csv.
    With --images, predict any image files, folders or globs instead."""
    if images or sources:
        if not (images and sources):
            raise UsageError("give image files, folders or globs after --images: maskclf "
                             "predict RUN --images photo.jpg folder/ 'shots/*.png'")
        from maskclf.predict.workflows import predict_images

        written = predict_images(run, sources, out, views(tta), grid, strict)
        show.print(f"predicted {render.plural(written['n_images'], 'image')} with "
                   f"{render.plural(len(written['checkpoints']), 'network')}: "
                   f"{written['predictions']}"
                   + (f"; skipped {render.plural(len(written['skipped']), 'unreadable file')}"
                      if written["skipped"] else "")
                   + (f"; grid: {written['grid']}" if "grid" in written else ""))
        return written
    from maskclf.predict.workflows import predict_run

    result = predict_run(run, data, views(tta), tune_decisions, allow_unfinished, person_vote)
    show.print(f"predicted {render.plural(result.n_images, 'image')} with "
               f"{render.plural(len(result.checkpoints), 'network')}")
    if result.person_vote is not None:
        show.print(render.person_vote_line(result.person_vote))
    show.print(f"predictions: {result.predictions}\nsubmission:  {result.submission}")
    return {"predictions": result.predictions, "submission": result.submission,
            "n_images": result.n_images, "person_vote": result.person_vote,
            "checkpoints": [str(c) for c in result.checkpoints]}


@command()
def explain(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    images: Annotated[list[str], typer.Argument(
        help="Image files, folders (searched recursively) or quoted glob patterns.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.")] = Path(
        "explain"),
    method: Annotated[str, typer.Option(
        help="grad-cam method: gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam, "
             "eigengradcam, scorecam.")] = "gradcam",
    target: Annotated[str, typer.Option(
        help="What each map explains: predicted (the labels given), true (from the "
             "image's place in the competition layout), or a class id 0-17 or name "
             "(wear/female/<30).")] = "predicted",
    fold: Annotated[int | None, typer.Option(help="Only this fold's networks.")] = None,
    *, show: Console,
) -> dict:
    """Where the model looked: for each image, the crop it saw with the activation map of
    each attribute (mask, gender, age), the labels and probabilities, as PNGs and one
    contact sheet (explain.png)."""
    from maskclf.atomic import check_folder, check_target
    from maskclf.data.io import collect_images
    from maskclf.runs.directory import RunDir

    RunDir.open(run)
    check_folder(out_dir, "--out", "the PNGs")
    from maskclf.explain.workflow import SHEET, explain_images

    check_target(out_dir / SHEET)
    files = collect_images(images)

    result = explain_images(run, files, out_dir, method, target, fold)
    show.print(f"{method} maps at {result['layer']}", markup=False)
    for item in result["images"]:
        show.print(f"{item['image']}: {item['class']} -> {item['png']}", markup=False)
    for image, why in result["skipped"].items():
        show.print(f"skipped {image}: {why}", markup=False)
    show.print(f"contact sheet: {result['sheet']}", markup=False)
    return result


@command()
def oof(
    run: Annotated[Path, typer.Argument(help="Run directory with oof.csv.")],
    data: RunDataOption = None,
    tta: TtaOption = None,
    *, show: Console,
) -> dict:
    """Recompute out-of-fold predictions with each fold's model (e.g. to measure TTA)."""
    from maskclf.predict.workflows import predict_oof

    path, scores = predict_oof(run, data, views(tta))
    show.print(render.score_table(f"out-of-fold ({path.name})", scores))
    return {"file": str(path), **scores}


@command()
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
    int8: Annotated[bool, typer.Option(
        "--int8", help="Quantize the networks (onnxruntime static int8, calibrated on the "
                       "run's training images) and keep them when the validation macro F1 "
                       "stays within --max-f1-drop.")] = False,
    max_f1_drop: Annotated[float, typer.Option(
        help="With --int8: the largest loss of validation macro F1 allowed.")] = 0.01,
    force: Annotated[bool, typer.Option(
        "--force", help="With --int8: keep the int8 networks even past --max-f1-drop "
                        "(with a warning).")] = False,
    *, show: Console,
) -> dict:
    """Export a run's networks to ONNX (normalisation and TTA inside), verified on its
    images; --int8 quantizes them, checked on the run's validation rows."""
    from maskclf.deploy.request import ExportRequest

    chosen_views = views(tta)
    request = ExportRequest(run, out_dir, folds, opset,
                            None if chosen_views is None else tuple(chosen_views), data,
                            int8=int8, max_f1_drop=max_f1_drop, force=force)
    request.check()  # before torch and onnxruntime load
    from maskclf.deploy.export import export_run

    manifest = export_run(request)
    verified = manifest["verified"]
    show.print(
        f"exported {render.plural(len(manifest['networks']), 'network')} to {out_dir}; "
        "onnxruntime vs torch "
        f"on {verified['images']} images: max |difference| {verified['max_abs_difference']:.2e}")
    if int8:
        q = manifest["int8"]
        show.print(f"int8: validation macro F1 {q['fp32_macro_f1']:.4f} (fp32) -> "
                   f"{q['int8_macro_f1']:.4f} (int8) on {q['validation_images']} images, "
                   f"agreement {q['agreement']:.1%}, calibrated on "
                   f"{q['calibration_images']} training images"
                   + (" (kept by --force)" if q["forced"] else ""))
    return manifest


@command(json_output=False)
def serve(
    run: Annotated[Path, typer.Argument(help="Export (maskclf export) or finished run "
                                        "directory (exported on the fly).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_concurrent: Annotated[int | None, typer.Option(
        min=1, help="Requests read and answered at once; more wait in line (default: "
                    "serve.MAX_CONCURRENT, 4).")] = None,
    read_timeout: Annotated[float | None, typer.Option(
        min=0.1, help="Seconds a request body may stall before it is answered 408 "
                      "(default: serve.READ_TIMEOUT_S, 10).")] = None,
    *, show: Console,
) -> None:
    """Serve a web page and a JSON API (POST /predict) that answer photos, on onnxruntime."""
    from maskclf.deploy.serve import MAX_CONCURRENT, READ_TIMEOUT_S
    from maskclf.deploy.serve import serve as serve_model

    concurrent = max_concurrent or MAX_CONCURRENT
    timeout = read_timeout or READ_TIMEOUT_S
    stderr.print(f"maskclf: serving {run} on http://{host}:{port}/ (Ctrl+C stops; "
                 f"{concurrent} requests at once, {timeout:g} s read timeout)")
    serve_model(run, host, port, max_concurrent=concurrent, read_timeout_s=timeout)


@command()
def tune_decisions(
    run: Annotated[Path, typer.Argument(help="Run directory with oof.csv.")],
    oof_file: Annotated[str | None, typer.Option(
        help="OOF file inside the run (default: oof.csv).")] = None,
    per: Annotated[str, typer.Option(
        help="Free biases per attribute value (8, the default) or per class (18).")
    ] = "attribute",
    *, show: Console,
) -> dict:
    """Fit decision biases for macro F1 on OOF rows; kept only if they help on held-out
    persons beyond noise (cross-validated, paired interval), else argmax stays."""
    from maskclf.results.decisions import tune_run

    report = (tune_run(run, per=per) if oof_file is None
              else tune_run(run, oof_file, per=per))
    gain = report["gain"]
    show.print(f"OOF macro F1, cross-validated over persons: plain {report['plain_macro_f1']:.4f}"
               f" -> tuned {report['tuned_macro_f1']:.4f} ({report['n_splits']} splits, "
               f"biases per {per}); gain {gain['value']:+.4f}, 95% interval over persons "
               f"[{gain['low']:+.4f}, {gain['high']:+.4f}]")
    if report["applied"]:
        show.print(f"biases saved to {report['file']}; apply them with "
                   f"`maskclf predict {run} --tune-decisions`")
    else:
        show.print(f"tuning did not help held-out persons beyond noise: {report['file']} "
                   "keeps zero biases, so --tune-decisions predicts the plain argmax")
    return report


@command()
def pseudo_label(
    predictions: Annotated[Path, typer.Argument(help="predictions.csv of the eval set.")],
    data: DataOption = Path("data"),
    threshold: Annotated[float, typer.Option(help="Minimum top probability.")] = 0.9,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for extra.csv.")] = Path(
        "pseudo"),
    *, show: Console,
) -> dict:
    """Write confident eval predictions as an extra training table (use with data.extra)."""
    from maskclf.results.pseudo_labels import EXTRA_FILE
    from maskclf.results.pseudo_labels import pseudo_label as make

    extra = make(predictions, data, threshold, out_dir)
    show.print(f"{render.plural(len(extra), 'image')} at >= {threshold} written to "
               f"{out_dir}/{EXTRA_FILE}; "
               f"train with -o data.extra=[{out_dir}]", markup=False)
    return {"images": len(extra), "threshold": threshold, "extra": str(out_dir / EXTRA_FILE)}
