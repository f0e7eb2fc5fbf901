"""Commands that train: the demo, ``train`` (new, resume, continue, refit), recipes, tuning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from maskclf.cli import render
from maskclf.cli.base import ConfigOption, DataOption, OverrideOption, command
from maskclf.train.request import DistillRequest, LrFindRequest, TrainRequest, TuneRequest


@command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Work folder.")] = Path("maskclf-demo"),
    persons: Annotated[int, typer.Option(help="Synthetic training persons.")] = 150,
    eval_persons: Annotated[int, typer.Option(help="Synthetic eval persons.")] = 30,
    override: OverrideOption = None,
    *, show: Console,
) -> dict:
    """Run the main job on built-in synthetic data: generate, train, predict, score."""
    show.print(f"maskclf demo: making {persons} synthetic persons in {out_dir}/data, then "
               "training, predicting and scoring (about 2 minutes on 2 CPU cores)")
    from maskclf.cli.demo import run_demo

    result = run_demo(out_dir, persons=persons, eval_persons=eval_persons,
                      overrides=override or [])
    show.print(render.score_table("validation (held-out persons)", result["validation"]))
    show.print(render.score_table("eval set (submission scored)", result["eval"]))
    for key in ("data", "run", "predictions", "submission"):
        show.print(f"{key:12s} {result[key]}")
    show.print(f"validation macro F1 {result['validation']['macro_f1']:.4f} in "
               f"{result['seconds']:.0f}s")
    return result


@command()
def train(
    config: ConfigOption = None,
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
    *, show: Console,
) -> dict | None:
    """Check the dataset, split by person, train, and write a new run directory."""
    request = TrainRequest(config, tuple(override or ()), data, runs, name, fold, resume, refit)
    request.check()  # a bad flag, key, override or path is answered before torch loads
    from maskclf.train.distributed import is_rank_zero
    from maskclf.train.execute import train as run_training

    result = run_training(request)
    if not is_rank_zero():  # one rank of a multi-process run: rank 0 reports
        return None
    validation = result.summary["validation"]
    if validation is None:
        show.print("data.val_ratio is 0: trained on every person without validation; "
                   "the last checkpoint is kept.")
    else:
        show.print(render.fold_table(result.summary))
        show.print(render.score_table("out-of-fold predictions (best checkpoints)", validation))
    show.print(f"run directory: {result.run}")
    return result.summary


@command(name="lr-find")
def lr_find(
    config: ConfigOption = None,
    data: DataOption = Path("data"),
    override: OverrideOption = None,
    plot: Annotated[Path, typer.Option(
        "--plot", help="Where the loss-against-rate plot goes (an attribute network's gets "
                       "-mask, -gender, -age before .png).")] = Path("lr-find.png"),
    min_lr: Annotated[float, typer.Option(help="Lowest rate tried.")] = 1e-6,
    max_lr: Annotated[float, typer.Option(help="Highest rate tried.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Training batches, the rate growing "
                                            "exponentially between the two.")] = 100,
    *, show: Console,
) -> dict:
    """Find a learning rate: Lightning's range test of the config's model, data and
    augmentation on the first fold's training rows; prints the suggested rate (fastai's
    valley rule: inside the longest fall of the loss) and writes the plot.
    `optim.lr: auto` runs it before training."""
    request = LrFindRequest(config, tuple(override or ()), data, plot, min_lr, max_lr, steps)
    cfg = request.check()  # before torch loads
    from maskclf.train.lr_find import find_learning_rate

    found = find_learning_rate(cfg, data, plot, min_lr, max_lr, steps)
    for task, result in found["networks"].items():
        rate = result["suggested_lr"]
        show.print(f"{task} network: suggested optim.lr "
                   f"{'none (the loss never fell)' if rate is None else f'{rate:.3g}'} "
                   f"({result['steps_run']} steps, {min_lr:g} to {max_lr:g}); plot "
                   f"{result['plot']}", markup=False)
    return found


@command()
def distill(
    sources: Annotated[list[Path], typer.Argument(
        help="The teacher: a finished run, an export of one, or several (averaged).")],
    student: Annotated[str, typer.Option(help="The student's timm model name (packaged "
                                               "weights used when they exist).")],
    config: Annotated[Path | None, typer.Option(
        "--config", help="The student's config (default: the teacher's, as one network "
                         "validated on data.val_ratio of the persons).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root (default: the teacher run's own).")] = None,
    runs: Annotated[Path, typer.Option("--out", help="Folder of run directories.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        help="Run name (default: STUDENT-distilled).")] = None,
    unlabelled: Annotated[bool, typer.Option(
        help="Also train on the eval images, with the teacher's soft targets (their "
             "argmax as the hard label).")] = False,
    override: OverrideOption = None,
    *, show: Console,
) -> dict:
    """Distil a teacher into one student network: its out-of-fold probabilities as soft
    targets (distill.alpha, distill.temperature), mixed with the true labels."""
    request = DistillRequest(tuple(sources), student, config, tuple(override or ()), data,
                             runs, name, unlabelled)
    request.check()  # before torch loads
    from maskclf.train.distill import distill as distil

    result = distil(request)
    summary = result.summary
    if summary.get("validation") is not None:
        show.print(render.score_table("student, out-of-fold predictions", summary["validation"]))
    compared = summary.get("distillation")
    if compared is not None:
        show.print(f"on {compared['n']} validation images: teacher OOF macro F1 "
                   f"{compared['teacher_macro_f1']:.4f}, student "
                   f"{compared['student_macro_f1']:.4f}")
    show.print(f"run directory: {result.run}")
    return summary


@command()
def recipes(*, show: Console) -> dict:
    """The training recipes shipped with maskclf, for `maskclf train --config NAME`."""
    from maskclf.config import packaged_recipes

    found = packaged_recipes()
    show.print(render.recipes_table(found))
    return {"recipes": found}


@command()
def tune(
    study: Annotated[str, typer.Option(help="Study name; workers with the same name share it.")
                     ] = "study",
    config: ConfigOption = None,
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
    *, show: Console,
) -> dict:
    """Tune a config with Optuna: each trial is a run; many workers can share a study."""
    request = TuneRequest(study, config, tuple(override or ()), data, space, trials, storage,
                          out_dir, timeout, sampler_seed, startup_trials, warmup_epochs,
                          threads, report)
    request.check()  # before torch loads
    if report is not None:
        from maskclf.train.tune import study_report

        result = study_report(study, request.folder, storage, report)
        show.print(f"best trial {result['best']['number']}: validation macro F1 "
                   f"{result['best']['value']:.4f} {result['best']['params']}")
        show.print(f"config: {result['config']}  trials: {result['trials_table']}  "
                   f"figures: {', '.join(result['figures'].values())}")
        return result
    from maskclf.train.tune import tune_study

    result = tune_study(request)
    best = result["best"]
    show.print(f"study {study}: {result['trials']} trials {result['states']}; best: "
               + ("none yet" if best is None else
                  f"trial {best['number']} F1 {best['value']:.4f} {best['params']}"))
    return result


@command()
def ablate(
    config: ConfigOption = None,
    data: Annotated[Path, typer.Option("--data", help="Dataset root.")] = Path("data"),
    vary: Annotated[list[str] | None, typer.Option(
        help="KEY=V1,V2: a setting and the values to compare (the first is the reference); "
             "give several --vary for every combination. Without it: the seed noise of the "
             "config.")] = None,
    repeats: Annotated[int, typer.Option(help="Seeds per combination (seed, seed+1, ...).")
                       ] = 3,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Study folder: runs, effects (default: studies/STUDY).")] = None,
    study: Annotated[str, typer.Option(help="Study name; workers with the same name share it.")
                     ] = "ablation",
    storage: Annotated[str | None, typer.Option(
        help="Study storage URL (default: a SQLite file in --out), e.g. "
             "postgresql+psycopg://user:pass@host/db for many workers.")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Torch threads of this worker (workers on one machine split its cores).")
    ] = None,
    draws: Annotated[int, typer.Option(help="Bootstrap draws of persons and seeds.")] = 1000,
    override: OverrideOption = None,
    *, show: Console,
) -> dict:
    """Train every combination of --vary values with several seeds on the same validation
    persons, and show each setting's effect with its 95% interval (better / worse / within
    noise)."""
    from maskclf.train.request import AblateRequest

    request = AblateRequest(config, tuple(override or ()), data, tuple(vary or ()), repeats,
                            out_dir, study, storage, threads, draws)
    request.check()  # before torch loads
    from maskclf.train.ablate import ablate as run_ablation
    from maskclf.train.ablate import effects_frame

    result = run_ablation(request)
    show.print(render.frame_table(
        f"{result['runs']} runs, {result['persons']} validation persons: each value against "
        "its setting's first", effects_frame(result)))
    for combination, why in result["refused"].items():
        show.print(f"left out by the config's rules: {combination}: {why}", markup=False)
    if result["unfinished"]:
        show.print(f"not finished yet (other workers, or run again): "
                   f"{', '.join(result['unfinished'])}", markup=False)
    show.print(f"effects: {result['files']['markdown']}", markup=False)
    return result


@command()
def auto(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (train/ and eval/).")],
    budget: Annotated[str, typer.Option(help="Wall time for the whole command: 30m, 1.5h, "
                                              "900s.")],
    preset: Annotated[str, typer.Option(
        help="cpu, gpu, demo (configs/auto/) or your own preset YAML file.")] = "cpu",
    name: Annotated[str | None, typer.Option(
        help="Study name (default: the data folder's name); the same command continues it.")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="The study lives in OUT/NAME/.")
                       ] = Path("auto"),
    storage: Annotated[str | None, typer.Option(
        help="Study storage URL shared by workers on many machines (default: a SQLite file "
             "in the study folder), e.g. postgresql+psycopg://user:pass@host/db.")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Torch threads of this worker (workers on one machine split its cores).")
    ] = None,
    external: Annotated[list[Path] | None, typer.Option(
        "--external", help="An outside source (images/ and labels.csv: file, mask, gender, "
        "age) for the preset's candidates that train with outside data; repeatable.")
    ] = None,
    *, show: Console,
) -> dict:
    """Spend a time budget on the best submission: screen a portfolio, train the best,
    choose an ensemble, predict."""
    started = time.time()  # the budget counts from here, imports included
    from maskclf.auto.request import AutoRequest

    request = AutoRequest(data, budget, preset, out_dir, name, storage, threads,
                          tuple(external or ()))
    request.check()  # before torch loads
    from maskclf.auto.workflow import run_auto

    summary = run_auto(request, started)
    if summary.get("finished") is False:
        show.print(summary["note"])
        return summary
    show.print(render.auto_table(summary))
    interval = summary.get("ensemble_oof_interval")
    spread = ("" if interval is None else f" [{interval['macro_f1']['low']:.4f}, "
              f"{interval['macro_f1']['high']:.4f}]")
    show.print(f"ensemble OOF macro F1 {summary['ensemble_oof_f1']:.4f}{spread} (best member "
               f"{summary['best_member_oof_f1']:.4f}); budget {summary['budget_s']:.0f}s, "
               f"spent {summary['elapsed_s']:.0f}s")
    show.print(f"submission: {summary['submission']}  report: {summary['report']}")
    return summary
