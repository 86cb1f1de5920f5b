"""The end of a run, on the main process: the task's last step on the best model, then
``training_summary.json``, the model card and, if asked, the upload to the Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset

from wyckoff_hf.cards import write_model_card
from wyckoff_hf.cards.model_card import CONFIG_NOT_SHOWN

from .arguments import TrainArguments
from .checkpoints import CHECKPOINT_PREFIX, STAGING_DIR
from .launch import launch_command
from .tasks import Task

PUSH_IGNORE = [f"{CHECKPOINT_PREFIX}*/*", "runs/*", f"{STAGING_DIR}/*"]


def finish(output_dir: Path, task: Task, state: dict, train_split: Dataset, validation_split: Dataset,
           args: TrainArguments, hyperparameters: dict[str, Any], **facts: Any) -> dict:
    """The task's last step on the best model (a generator's temperature calibration), then the summary and
    card; push if asked."""
    model, task_summary = task.finish(output_dir, args, train_split, validation_split)
    summary = {
        "command": launch_command(), "task": hyperparameters["task"], **facts,
        "epochs_run": state["epoch"] + 1, "stopped_by_time_limit": state.get("stopped_by_time_limit", False),
        "global_step": state["global_step"], "best_epoch": state["best_epoch"],
        "best_validation": state["best_validation"], **task_summary, "num_parameters": model.num_parameters(),
        "train_crystals_per_process": state["train_crystals_per_process"], "hyperparameters": hyperparameters,
        "model_config": {k: v for k, v in model.config.to_diff_dict().items() if k not in CONFIG_NOT_SHOWN},
    }
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_model_card(output_dir, summary, model_id=args.hub_model_id or str(output_dir))
    shown = ("best_epoch", "best_validation", "baseline_validation", "sampling_temperature")
    print(json.dumps({key: summary[key] for key in shown if key in summary}, indent=2))
    print(f"model saved to {output_dir} ({task.usage.format(output_dir=str(output_dir))})")
    if args.push_to_hub:
        push_output(output_dir, args)
    return summary


def push_output(output_dir: Path, args: TrainArguments) -> None:
    """Upload the final model, tokenizer and card of OUTPUT_DIR (not its checkpoints or logs) to ``hub_model_id``."""
    from huggingface_hub import HfApi

    commit = HfApi().upload_folder(repo_id=args.hub_model_id, folder_path=str(output_dir),
                                   ignore_patterns=PUSH_IGNORE, commit_message="Upload WyckoffTransformer")
    print(f"pushed to {commit.repo_url}")
