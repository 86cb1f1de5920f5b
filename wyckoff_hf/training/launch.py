"""How the run was started and on what: the launcher (``accelerate launch``, ``torchrun`` or plain ``python``),
dying with it, and the ``Accelerator`` that splits global batches across the processes."""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

from wyckoff_hf.utils.parallel import die_with_parent

from .arguments import TrainArguments


def die_with_launcher(*_: object) -> None:
    """SIGTERM this process when its parent exits. A launcher killed with SIGKILL (``accelerate launch``,
    ``torchrun``) cannot stop its workers, which would train on as orphans; DataLoader workers (this is their
    ``worker_init_fn``) would notice only seconds later."""
    die_with_parent(os.getppid(), signal.SIGTERM)


def launched() -> bool:
    """Started by ``accelerate launch`` (which exports ACCELERATE_* settings) or ``torchrun`` (LOCAL_RANK)."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or "LOCAL_RANK" in os.environ


def make_accelerator(args: TrainArguments) -> Accelerator:
    """The run's ``Accelerator``: global batches split across processes, trackers logging to OUTPUT_DIR/runs.

    ``cpu=True`` without a GPU (or other accelerator): accelerate sets up a (gloo) process group for CPU
    workers only when told so, else each worker of ``torchrun`` / ``accelerate launch --multi_gpu`` trains alone.
    """
    mixed_precision = args.mixed_precision
    if mixed_precision is None and torch.cuda.is_available():
        mixed_precision = "bf16"
    try:
        import tensorboard  # noqa: F401

        log_with = "tensorboard"
    except ImportError:
        log_with = None
    project = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "runs"))
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=args.ddp_timeout))
    return Accelerator(cpu=not torch.accelerator.is_available(), mixed_precision=mixed_precision,
                       gradient_accumulation_steps=args.gradient_accumulation_steps,
                       dataloader_config=DataLoaderConfiguration(split_batches=True), log_with=log_with,
                       project_config=project, kwargs_handlers=[timeout])


def launch_command() -> str:
    """The command line of this run (the launcher's own options are not visible to the script)."""
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        launcher = "accelerate launch "
    else:
        launcher = "torchrun " if "TORCHELASTIC_RUN_ID" in os.environ else "python "
    return launcher + " ".join(sys.argv)
