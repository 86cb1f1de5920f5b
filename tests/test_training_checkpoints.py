"""wyckoff_hf.training.checkpoints on its own: which checkpoint folders are complete and which one resumes, the
task check of a resumed run, the metrics log cut back, and the best model replaced file by file."""

import json

import pytest

from wyckoff_hf.training.arguments import TaskArguments
from wyckoff_hf.training.checkpoints import (
    STAGING_DIR,
    check_resumed_task,
    checkpoint_to_resume,
    checkpoints,
    restart_metrics_log,
    save_best_model,
)


def checkpoint(output_dir, name: str, state: dict | None = None):
    """A checkpoint folder; complete (with ``trainer_state.json``) when ``state`` is given."""
    folder = output_dir / name
    folder.mkdir()
    if state is not None:
        (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_only_complete_numbered_checkpoints_count_oldest_first(tmp_path):
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-100"):
        checkpoint(tmp_path, name, {})
    checkpoint(tmp_path, "checkpoint-200")  # killed while saving
    checkpoint(tmp_path, "checkpoint-best", {})  # not a step number
    assert [folder.name for folder in checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert checkpoints(tmp_path / "missing") == []


def test_the_checkpoint_to_resume(tmp_path):
    assert checkpoint_to_resume(None, tmp_path) is None  # a fresh run in an empty folder
    older, newest = checkpoint(tmp_path, "checkpoint-3", {}), checkpoint(tmp_path, "checkpoint-12", {})
    checkpoint(tmp_path, "checkpoint-15")
    assert checkpoint_to_resume("latest", tmp_path) == newest
    assert checkpoint_to_resume(str(older), tmp_path) == older
    with pytest.raises(SystemExit, match=r"checkpoint-15: not a complete checkpoint \(no trainer_state.json\)$"):
        checkpoint_to_resume(str(tmp_path / "checkpoint-15"), tmp_path)
    with pytest.raises(SystemExit, match=r"holds checkpoints of an earlier run \(checkpoint-12\)"):
        checkpoint_to_resume(None, tmp_path)


def test_a_resumed_run_keeps_its_task_options(tmp_path):
    property_task = TaskArguments(task="property", target="band_gap")
    folder = checkpoint(tmp_path, "checkpoint-3", {"task": {"task": "property", "target": "band_gap"}})
    check_resumed_task(folder, property_task)  # options the checkpoint predates take their defaults
    with pytest.raises(SystemExit, match=r"trained with the task options \{'task': 'property', 'target': "
                                         r"'band_gap'\}, not \{'task': 'property', 'target': 'e_above_hull'\}$"):
        check_resumed_task(folder, TaskArguments(task="property", target="e_above_hull"))
    plain = checkpoint(tmp_path, "checkpoint-6", {})  # from before the task options: a plain generator's
    check_resumed_task(plain, TaskArguments())
    with pytest.raises(SystemExit, match=r"not \{'task': 'generation', 'augment_labellings': True\}$"):
        check_resumed_task(plain, TaskArguments(augment_labellings=True))


def test_the_metrics_log_keeps_the_epochs_up_to_the_resumed_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    restart_metrics_log(log, -1)  # a fresh run: an empty log
    assert log.read_text() == ""
    log.write_text("".join(json.dumps({"epoch": epoch, "train/loss": 5.0 - epoch}) + "\n" for epoch in range(4)))
    restart_metrics_log(log, 1)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [0, 1]


class Saved:
    """A model or tokenizer stand-in that writes one file named after itself."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def save_pretrained(self, folder) -> None:
        folder.mkdir(exist_ok=True)
        (folder / self.name).write_text(self.text)


def test_the_best_model_replaces_the_last_one_file_by_file(tmp_path):
    (tmp_path / "model.safetensors").write_text("epoch 0")
    (tmp_path / "metrics.jsonl").write_text("kept")
    save_best_model(Saved("model.safetensors", "epoch 3"), Saved("tokenizer_config.json", "{}"), tmp_path)
    assert (tmp_path / "model.safetensors").read_text() == "epoch 3"
    assert (tmp_path / "tokenizer_config.json").read_text() == "{}"
    assert (tmp_path / "metrics.jsonl").read_text() == "kept" and not (tmp_path / STAGING_DIR).exists()
