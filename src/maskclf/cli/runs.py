"""Commands over run directories and prediction files: the leaderboard, notes, reports,
suspect labels, scores, validation, ensembles and diffs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from maskclf.cli import render
from maskclf.cli.base import RunDataOption, command, stderr
from maskclf.errors import UsageError


@command()
def score(
    submission: Annotated[Path, typer.Argument(help="submission.csv (ImageID,ans).")],
    labels_file: Annotated[Path, typer.Option("--labels", help="Labels (ImageID,class).")],
    *, show: Console,
) -> dict:
    """Accuracy, macro F1, per-attribute and per-class F1 of a submission (with 95%
    intervals over persons when the labels name them)."""
    from maskclf.metrics import score_files

    scores = score_files(submission, labels_file)
    show.print(render.score_table(str(submission), scores))
    if scores["interval"] is None:
        show.print(f"no interval: {labels_file} names no persons (a person or person_id "
                   "column)", markup=False)
    show.print(render.class_table(scores))
    return scores


@command()
def compare(
    inputs: Annotated[list[Path], typer.Argument(
        help="Runs (their out-of-fold rows) or prediction files / submissions; each is "
             "compared with the first.")],
    labels_file: Annotated[Path | None, typer.Option(
        "--labels", help="Labels with persons (ImageID, class, person or person_id): needed "
                         "for prediction files, optional for runs.")] = None,
    draws: Annotated[int, typer.Option(help="Bootstrap draws of persons.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    plot: Annotated[Path | None, typer.Option(
        help="Write a forest plot of the differences (PNG).")] = None,
    *, show: Console,
) -> dict:
    """Paired comparison: every metric of each input against the first, on the same
    resampled persons, with its 95% interval and a verdict (better / worse / within noise)."""
    from maskclf.results.compare import compare as compare_inputs
    from maskclf.results.compare import differences_table

    result = compare_inputs(inputs, labels_file, draws, seed, plot)
    show.print(render.frame_table(
        f"{result['images']} images of {result['persons']} persons, {result['draws']} draws: "
        f"each input against {result['reference']}", differences_table(result),
        compact=True))
    for line in result["notes"]:
        show.print(f"note: {line}", markup=False)
    if plot is not None:
        show.print(f"forest plot: {plot}", markup=False)
    return result


@command()
def validate(
    submission: Annotated[Path, typer.Argument(help="submission.csv to check.")],
    info: Annotated[Path, typer.Option("--info", help="eval/info.csv", exists=True,
                                       dir_okay=False)],
    *, show: Console,
) -> dict:
    """Check a submission: same ImageIDs in info.csv's order, labels 0-17."""
    from maskclf.results.submission import read_submission, validate_submission
    from maskclf.tables import read_table

    table = read_submission(submission)
    validate_submission(table, read_table(info, ["ImageID"], "info file", dtype={"ImageID": str}),
                        str(submission))
    show.print(f"{submission} is a valid submission for {info}")
    return {"submission": str(submission), "info": str(info), "valid": True, "rows": len(table)}


@command()
def suspects(
    run: Annotated[Path, typer.Argument(help="Finished run with out-of-fold predictions.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for suspects.csv, suspects.png, corrections.yaml "
                      "(default: RUN/suspects).")] = None,
    top: Annotated[int, typer.Option(help="Suspects shown in the grid.")] = 30,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset root (default: the "
                                              "run's).")] = None,
    unknown: Annotated[bool, typer.Option(
        "--unknown", help="Propose every flagged label as unknown (it leaves training and "
                          "scoring for that attribute) instead of a flip.")] = False,
    *, show: Console,
) -> dict:
    """Labels the out-of-fold predictions disagree with most (cleanlab), to review and fix."""
    from maskclf.reports.suspects import write_suspects
    from maskclf.runs.directory import RunDir

    result = write_suspects(run, out_dir or RunDir(run).file(RunDir.SUSPECTS), top, data,
                            unknown)
    show.print(
        f"label issues (cleanlab): {result['issues']}; proposed corrections: "
        f"{result['proposed']}\nreview {result['grid']} and {result['suspects']}, edit "
        f"{result['corrections']}, then train with -o data.corrections={result['corrections']}")
    return result


@command(json_output=False)
def review(
    run: Annotated[Path, typer.Argument(help="Finished run with out-of-fold predictions.")],
    data: RunDataOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
    level: Annotated[str, typer.Option(
        help="Which suspects to queue: all, person (a person's gender or age doubted as a "
             "whole) or photo (a doubted photo).")] = "all",
    *, show: Console,
) -> None:
    """Decide the suspect labels in the browser: keep, change or not sure, saved at once to
    RUN/corrections.yaml (train with -o data.corrections=RUN/corrections.yaml)."""
    from maskclf.deploy.review_page import require_free_port
    from maskclf.deploy.review_page import review as serve_review
    from maskclf.reports.review import ReviewSession

    require_free_port(host, port)
    session = ReviewSession(run, data, level)
    which = "" if level == "all" else f" ({level}-level issues)"
    stderr.print(f"maskclf: {len(session.persons)} suspect persons{which} of {run} on "
                 f"http://{host}:{port}/ (Ctrl+C stops); decisions go to {session.file}")
    serve_review(session, host, port)


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


@command()
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
    *, show: Console,
) -> dict:
    """Soft voting over prediction files, or hard voting (--hard) over submissions."""
    from maskclf.results.ensemble import write_ensemble

    files, all_weights = _numbers_among(inputs, weights or [])
    written = write_ensemble(out_dir, files, hard, all_weights or None, per_attribute, info)
    show.print(f"{written['mode']} vote over {render.plural(len(files), 'file')}: wrote "
               f"{written['submission']}")
    if hard and len(files) == 2:
        show.print(f"two voters: wherever they disagree it is a tie, and ties go to the first "
                   f"listed ({files[0]}), so the result is that file's labels; vote over "
                   "three or more files, or average prediction files (soft voting)",
                   markup=False)
    return written


@command()
def diff(
    first: Annotated[Path, typer.Argument(help="Submission or prediction file A.")],
    second: Annotated[Path, typer.Argument(help="Submission or prediction file B.")],
    *, show: Console,
) -> dict:
    """How many labels differ between A and B, by attribute, and the top transitions."""
    from maskclf.results.ensemble import diff as diff_files

    result = diff_files(first, second)
    for line in render.diff_lines(result):
        show.print(line, highlight=False)
    return result


@command()
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
    *, show: Console,
) -> dict:
    """Leaderboard of runs (data, backbone, epochs, CV/OOF F1, public score, note), or
    --diff A B."""
    from maskclf.runs.leaderboard import choose_columns, config_diff, lb_correlation, leaderboard

    if diff is not None:
        table = config_diff(*diff)
        if table.empty:
            show.print(f"{diff[0]} and {diff[1]} have the same config")
        else:
            show.print(render.frame_table(f"config differences ({len(table)})", table, "{:g}"))
        return {"rows": json.loads(table.to_json(orient="records"))}
    chosen, board = choose_columns(columns), leaderboard(folder, sort, ascending)
    correlation = lb_correlation(board)
    show.print(render.frame_table(f"{render.plural(len(board), 'run')} in {folder}, by {sort}",
                                  board[chosen],
                                  "{:.3f}", compact=True))
    show.print(render.correlation_line(correlation))
    for name, problem in board.loc[board["status"] == "damaged", ["name", "note"]].itertuples(
            index=False):
        show.print(f"damaged: {name}: {problem}", markup=False)
    return {"rows": json.loads(board.to_json(orient="records")), "lb_correlation": correlation}


@command()
def note(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    text: Annotated[str | None, typer.Argument(help="A note (what you submitted, why).")
                    ] = None,
    lb: Annotated[float | None, typer.Option(
        "--lb", help="The public leaderboard macro F1 this run's submission scored.")] = None,
    *, show: Console,
) -> dict:
    """Record a public score and/or a note for a run; `maskclf runs` shows them beside CV."""
    from maskclf.runs.leaderboard import add_note

    notes = add_note(run, lb, text)
    show.print(render.note_line(run, notes), markup=False)
    return {"notes": notes}


@command()
def report(
    run: Annotated[Path, typer.Argument(help="Run directory made by `maskclf train`.")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root for the mistake images (default: the run's own).")] = None,
    maps: Annotated[bool, typer.Option(
        help="Compute the activation maps again (Grad-CAM of sampled out-of-fold images; "
             "--no-maps draws the maps the run has).")] = True,
    *, show: Console,
) -> dict:
    """(Re)draw a run's report: the recipe, findings with remedies, curves, confusion
    matrices, per-class F1, confident mistakes with where the network looked, and the mean
    activation maps (attention.png)."""
    from maskclf.reports.run_report import write_report
    from maskclf.runs.directory import RunDir

    RunDir.open(run).require_sound()  # a damaged run is refused before maps are computed
    if maps:
        from maskclf.explain.workflow import write_report_maps

        write_report_maps(run, data)
    written = write_report(run, data)
    show.print(f"report: {written['report']} ({render.plural(len(written['figures']), 'figure')})")
    for finding in written["findings"]:
        show.print(f"- {finding['what']} -> {finding['remedy']}", markup=False)
    return {k: v for k, v in written.items() if k != "confusion"}
