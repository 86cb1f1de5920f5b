"""What a run leaves on disk to survive being killed: ``checkpoint-N`` folders (which are complete, which to
resume, and whether the resumed one was trained with the same task), the best model saved without ever leaving a
half-written file, and the metrics log cut back to the resumed epoch."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator
from transformers import PreTrainedModel

from wyckoff_hf.tokenization import WyckoffTokenizer

from .arguments import TaskArguments

CHECKPOINT_PREFIX = "checkpoint-"
STAGING_DIR = ".best-model-staging"


def checkpoints(output_dir: Path) -> list[Path]:
    """The *complete* ``checkpoint-N`` folders, oldest first: ``trainer_state.json`` is written last, so a run
    killed while saving leaves a folder without it, which is skipped."""
    complete = [state.parent for state in output_dir.glob(f"{CHECKPOINT_PREFIX}*/trainer_state.json")
                if state.parent.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return sorted(complete, key=lambda folder: int(folder.name.removeprefix(CHECKPOINT_PREFIX)))


def checkpoint_to_resume(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    """The folder ``--resume-from-checkpoint`` names; exits with one line when there is nothing to resume,
    and refuses to start afresh over an earlier run's checkpoints."""
    found = checkpoints(output_dir)
    if resume_from_checkpoint is None:
        if found:
            sys.exit(f"train.py: error: {output_dir} holds checkpoints of an earlier run ({found[-1].name}); "
                     "continue it with --resume-from-checkpoint latest or choose another --output-dir")
        return None
    if resume_from_checkpoint == "latest":
        if not found:
            sys.exit(f"train.py: error: --resume-from-checkpoint latest: {output_dir} holds no complete "
                     f"{CHECKPOINT_PREFIX}N folder to resume from")
        return found[-1]
    folder = Path(resume_from_checkpoint)
    if not (folder / "trainer_state.json").is_file():
        sys.exit(f"train.py: error: --resume-from-checkpoint {folder}: not a complete checkpoint "
                 "(no trainer_state.json)")
    return folder


def run_to_resume(resume_from_checkpoint: str | None, output_dir: Path, task_args: TaskArguments) -> Path | None:
    """The checkpoint a run continues (``checkpoint_to_resume``), checked to be of the same task; ``None`` for a
    fresh run."""
    resume = checkpoint_to_resume(resume_from_checkpoint, output_dir)
    if resume:
        check_resumed_task(resume, task_args)
    return resume


def check_resumed_task(checkpoint: Path, task_args: TaskArguments) -> None:
    """Resume only with the task options the checkpoint was trained with: other labels or conditions would give
    a model of another shape (a checkpoint from before the task options is a plain generator's)."""
    defaults = asdict(TaskArguments())  # also for options a checkpoint predates
    trained = {**defaults, **json.loads((checkpoint / "trainer_state.json").read_text()).get("task", {})}
    given = asdict(task_args)
    if trained != given:
        trained, given = ({key: value for key, value in options.items() if key == "task" or value != defaults[key]}
                          for options in (trained, given))
        sys.exit(f"train.py: error: --resume-from-checkpoint {checkpoint}: trained with the task options {trained}, "
                 f"not {given}")


def save_best_model(model: PreTrainedModel, tokenizer: WyckoffTokenizer, output_dir: Path) -> None:
    """``save_pretrained`` into a staging folder, then move each file into OUTPUT_DIR: a run killed while
    saving never leaves a half-written file where the last good model was."""
    staging = output_dir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for path in staging.iterdir():
        os.replace(path, output_dir / path.name)
    staging.rmdir()


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, save_total_limit: int | None) -> None:
    """``save_state`` on every process, then (main process) the loop's own state, marking the folder complete;
    the oldest checkpoints beyond ``save_total_limit`` are removed."""
    folder = output_dir / f"{CHECKPOINT_PREFIX}{state['global_step']}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
        for old in checkpoints(output_dir)[:-save_total_limit] if save_total_limit else []:
            shutil.rmtree(old)


def restart_metrics_log(path: Path, last: int, key: str = "epoch") -> None:
    """Keep the logged epochs (or ``key``: reward steps) up to the resumed checkpoint's (a killed run's later ones
    are run again)."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    path.write_text("".join(line for line in lines if json.loads(line)[key] <= last))
