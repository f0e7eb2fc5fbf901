"""Which process of a multi-process (DDP) run this is, and the one run directory they share.

maskclf runs its whole pipeline on every rank (SPMD): every rank reads the data, builds
the split and enters each fold's ``Trainer.fit``, where Lightning joins them. Ranks are
started in one of three ways:

- **Lightning's launcher** (``maskclf train -o train.devices=2``): rank 0 starts, creates
  the run directory, and at its first ``fit`` re-runs the command line once per extra
  device; the path is handed down in ``MASKCLF_RUN_DIR``.
- **torchrun** / **srun**: all ranks start at once, so each derives the same directory from
  ``--name`` and the launcher's job id; rank 0 creates it.

Only global rank 0 writes run files, fold results, OOF, summaries and reports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maskclf.errors import UsageError
from maskclf.runs.directory import RunDir

RUN_DIR_ENV = "MASKCLF_RUN_DIR"
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def is_rank_zero() -> bool:
    """True in the process that writes: global rank 0, or a run of one process.

    Before the process group exists the launchers' environment variables decide. (A process
    that never imported ``torch.distributed`` has no process group: no import is forced.)
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def launcher_job_id() -> str | None:
    """The id shared by ranks that a launcher started all at once (torchrun, srun), or None
    when this process was started alone (or by Lightning's launcher)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        if run_id != "none":
            return f"torchrun-{run_id[:8]}"
        if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
            raise UsageError("torchrun on several nodes needs --rdzv-id (a job id shared by "
                             "every node), so all ranks find the same run directory")
        return f"torchrun-{os.getppid()}"  # one node: the agent is every rank's parent
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return None


def shared_run_dir(runs: Path | str, name: str | None) -> RunDir:
    """The run directory of this training, the same on every rank; created by rank 0."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return RunDir(inherited)
    job = launcher_job_id()
    if job is None:
        return RunDir.create(runs, name)
    run = RunDir(Path(runs) / f"{name or 'run'}-{job}")
    if is_rank_zero():
        try:
            run.path.mkdir(parents=True)
        except FileExistsError:
            raise UsageError(f"{run.path} already exists; a launcher's job makes one run "
                             f"directory (resume it with {run.resume_command()})") from None
    return run


@contextmanager
def handed_down(run: RunDir) -> Iterator[None]:
    """While training, ranks that Lightning's launcher starts find ``run`` in their
    environment; afterwards the variable is gone, so a later run in this process is new."""
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
