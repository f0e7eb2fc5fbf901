"""What every command shares: the app, the consoles, common options, and ``command``, the
decorator that owns the command-line rules.

The rules, in one place: a :class:`~maskclf.errors.MaskclfError` becomes one red
``error:`` line and exit status 2 (``RunInterrupted``: 128 + the signal); Ctrl+C outside
training exits 130; maskclf's log lines go to stderr while a command runs; and ``--json``:
a command returns its payload, which is printed as exactly one JSON document on stdout,
while its human output (the ``show`` console it is handed) goes to stderr.
"""

from __future__ import annotations

import inspect
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from maskclf.errors import MaskclfError, RunInterrupted

JOBS = {
    "Start and data": ["demo", "check-data", "eda", "faces", "cache", "make-synthetic",
                       "synth-masks", "weights"],
    "Train": ["train", "recipes", "lr-find", "distill"],
    "Predict and submit": ["predict", "validate", "score", "ensemble", "diff", "pseudo-label",
                           "tune-decisions", "oof"],
    "Runs and reports": ["runs", "report", "compare", "note", "suspects", "review", "explain"],
    "Tune and auto": ["auto", "tune", "ablate"],
    "Deploy": ["export", "serve"],
}
"""``maskclf --help``'s panels, in order, each with its everyday commands first."""


class GroupedByJob(TyperGroup):
    """Click's plain command list, one section per job (each command's
    ``rich_help_panel``, set by :func:`group_by_job`) in ``JOBS`` order."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        shown = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, cmd) for name, cmd in shown if cmd is not None and not cmd.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        for job in JOBS:
            rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in shown
                    if getattr(cmd, "rich_help_panel", None) == job]
            if rows:
                with formatter.section(job):
                    formatter.write_dl(rows)


app = typer.Typer(
    cls=GroupedByJob,
    help="Toolkit for the face mask-status competition (18 classes, macro F1).\n\n"
         "Start with `maskclf demo`; train with `maskclf train --config configs/cpu.yaml "
         "--data DATA`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wrapped, never cut off, readable in a pipe
)
weights_app = typer.Typer(help="Pretrained weights without a network.", no_args_is_help=True,
                          rich_markup_mode=None)
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
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="YAML config, or the name of a packaged recipe (`maskclf recipes`).")]


def views(tta: str | None) -> list[str] | None:
    """``--tta hflip,scale`` as a list; None when not given (the run's own views)."""
    return None if tta is None else [v.strip() for v in tta.split(",") if v.strip()]


@contextmanager
def _logs_on_stderr() -> Iterator[None]:
    """During a command, maskclf's log lines (cache built, corrections, resume hints) go
    to stderr as plain lines; the logger is left as it was afterwards."""
    from maskclf.train.distributed import is_rank_zero

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


def _typer_signature(func: Callable, wrapper: Callable, json_output: bool) -> None:
    """Give ``wrapper`` the signature typer reads: ``func``'s parameters less ``show``,
    plus ``--json`` when the command has one."""
    signature = inspect.signature(func, eval_str=True)
    parameters = [p for name, p in signature.parameters.items() if name != "show"]
    if json_output:
        parameters.append(inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY,
                                            default=False, annotation=JsonOption))
    wrapper.__signature__ = signature.replace(parameters=parameters, return_annotation=None)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}


def group_by_job(typer_app: typer.Typer) -> None:
    """Put every registered command (and command group) in its ``JOBS`` panel, in the
    panels' order; a command missing from ``JOBS`` is a bug, found here at import."""
    order = [name for names in JOBS.values() for name in names]
    panel = {name: job for job, names in JOBS.items() for name in names}

    def name_of(info) -> str:
        return info.name or info.callback.__name__.replace("_", "-")

    entries = [*typer_app.registered_commands, *typer_app.registered_groups]
    missing = [name_of(info) for info in entries if name_of(info) not in panel]
    if missing:
        raise RuntimeError(f"commands without a --help panel (cli.base.JOBS): {missing}")
    for info in entries:
        info.rich_help_panel = panel[name_of(info)]
    typer_app.registered_commands.sort(key=lambda info: order.index(name_of(info)))


def _first_paragraph(func: Callable) -> str:
    """The docstring's first paragraph, whole: the command list wraps it instead of cutting
    it at 45 characters as click's default short help does."""
    return " ".join(inspect.getdoc(func).split("\n\n")[0].split()).removesuffix(".")


def command(group: typer.Typer = app, name: str | None = None, json_output: bool = True
            ) -> Callable[[Callable], Callable]:
    """Register a command. It is called with ``show`` (where human output goes) and returns
    its JSON payload (or None); with ``json_output`` it gets the ``--json`` option."""

    def register(func: Callable) -> Callable:
        @wraps(func)
        def wrapper(*args, as_json: bool = False, **kwargs):
            try:
                with _logs_on_stderr():
                    payload = func(*args, show=stderr if as_json else stdout, **kwargs)
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
            if as_json and payload is not None:
                print(json.dumps(payload, default=str))

        _typer_signature(func, wrapper, json_output)
        return group.command(name, short_help=_first_paragraph(func))(wrapper)

    return register
