"""Training runs end to end: scripts/train.py under accelerate launch on 1 and 2 processes, kill -9 and resume,
bad input, the Hub upload; ``wyckoff_hf.training.main`` in process for the property task (regression and
classification) and conditional generation. The modules' parts on their own: tests/test_training_*.py."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import TINY_MODEL
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from wyckoff_hf import WyckoffTokenizer, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.data import add_wyckoff_columns, load_crystal_csv_splits, load_wyckoff_dataset, write_parquet_splits
from wyckoff_hf.evaluation import evaluate
from wyckoff_hf.training import main
from wyckoff_hf.training.augmentation import SitePermutation

REPO = Path(__file__).resolve().parents[1]
TRAIN_ROWS, VALIDATION_ROWS = 48, 15  # 3 steps of 16 crystals; validation shards of 8 and 7 on 2 processes
LAUNCH = ["accelerate", "launch", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def prepared_dataset(tmp_path_factory, shared_data) -> Path:
    """A small prepared dataset (48 train / 15 validation / 17 test crystals of MP-20), written as parquet."""
    source = tmp_path_factory.mktemp("source")
    frame = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=80)
    cut = TRAIN_ROWS + VALIDATION_ROWS
    for name, rows in (("train", frame[:TRAIN_ROWS]), ("val", frame[TRAIN_ROWS:cut]), ("test", frame[cut:])):
        rows.to_csv(source / f"{name}.csv.gz", index=False)
    dataset, failures = add_wyckoff_columns(load_crystal_csv_splits(source, layout="cdvae"))
    assert failures.empty
    out = tmp_path_factory.mktemp("prepared")
    write_parquet_splits(dataset, out)
    return out


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """Without dropout, so that runs on 1 and on 2 processes draw no random numbers that could differ."""
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps({**TINY_MODEL, "hidden_dropout_prob": 0.0}))
    return path


def train_command(dataset: Path, output_dir: Path, config: Path, epochs: int, *extra: str) -> list[str]:
    return ["scripts/train.py", "--dataset", str(dataset), "--output-dir", str(output_dir), "--config", str(config),
            "--num-train-epochs", str(epochs), "--per-device-train-batch-size", "16",
            "--calibration-temperatures", "0.8,1.0", "--calibration-rows", "16", "--early-stopping-patience", "100",
            *extra]


def run(command: list[str], env: dict | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run((launcher or [sys.executable]) + command, cwd=REPO, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics_of(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained_run(prepared_dataset, tiny_config, tmp_path_factory) -> Path:
    """A 2-epoch run through ``accelerate launch`` on one CPU process."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(train_command(prepared_dataset, out, tiny_config, 2), launcher=[*LAUNCH, "--cpu", "--num_processes", "1"])
    return out


def test_accelerate_launch_two_epochs_gives_a_loadable_model_in_output_dir(trained_run):
    out = trained_run
    metrics = metrics_of(out)
    assert [(m["epoch"], m["step"]) for m in metrics] == [(0, 3), (1, 6)]
    assert metrics[1]["train/loss"] < metrics[0]["train/loss"]
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    model = WyckoffTransformerForCrystalGeneration.from_pretrained(out)
    tokenizer = WyckoffTokenizer.from_pretrained(out)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["global_step"] == 6
    assert summary["command"].startswith("accelerate launch ")
    assert summary["num_processes"] == 1 and summary["train_crystals_per_process"] == [TRAIN_ROWS]
    assert model.generation_config.temperature == summary["calibration"]["temperature"] in (0.8, 1.0)
    assert [p["temperature"] for p in summary["calibration"]["scan"]] == [0.8, 1.0]
    assert sum(model.generation_config.space_group_counts) == summary["train_rows"]  # the training split's prior
    assert model.generation_config.num_elements_range == [2, 3]  # the binary and ternary training rows' range
    assert len(model.generate(num_samples=4, seed=0, tokenizer=tokenizer)) == 4
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert f"{summary['best_validation']['validation/loss']:.4f}" in card.text
    assert "Not evaluated yet" in card.text and "## Stability\n\nNot measured yet" in card.text


def test_two_processes_shard_the_data_and_match_one_process(trained_run, prepared_dataset, tiny_config, tmp_path):
    """2 CPU processes (gloo) with 8 crystals each per step follow the 1-process run with 16 per step."""
    out = tmp_path / "run"
    launcher = [*LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    # a rank that dies leaves the other at a collective: --ddp-timeout ends the run there, well inside run()'s limit
    run(train_command(prepared_dataset, out, tiny_config, 2, "--per-device-train-batch-size", "8",
                      "--calibration-temperatures", "", "--ddp-timeout", "120"), launcher=launcher,
        env={"OMP_NUM_THREADS": "1"})
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["train_crystals_per_process"] == [TRAIN_ROWS // 2, TRAIN_ROWS // 2]
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
    one, two = metrics_of(trained_run), metrics_of(out)
    for single, double in zip(one, two, strict=True):
        for key in ("train/loss", "train/element_loss", "validation/loss", "validation/enumeration_loss"):
            assert double[key] == pytest.approx(single[key], rel=1e-5), key
    single, double = load_file(trained_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert single.keys() == double.keys()
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=0, atol=1e-5)


def process_group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # the process ended while being read
        if int(group) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_kill_9_of_the_launcher_leaves_no_orphan_and_resume_loses_no_epoch(prepared_dataset, tmp_path):
    config = tmp_path / "tiny-with-dropout.json"  # dropout: resuming must restore the random state too
    config.write_text(json.dumps(TINY_MODEL))
    epochs = 5
    reference = tmp_path / "uninterrupted"
    run(train_command(prepared_dataset, reference, config, epochs, "--calibration-temperatures", ""))

    interrupted = tmp_path / "interrupted"
    command = train_command(prepared_dataset, interrupted, config, epochs, "--calibration-temperatures", "",
                            "--dataloader-num-workers", "1")
    launcher = subprocess.Popen([*LAUNCH, "--cpu", "--num_processes", "1", *command], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first_checkpoint = interrupted / "checkpoint-3" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(process_group_members(launcher.pid)) >= 3  # launcher, training process, DataLoader workers
    launcher.send_signal(signal.SIGKILL)  # the launcher only, as `kill -9 PID` would
    launcher.wait()
    deadline = time.monotonic() + 30
    while process_group_members(launcher.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_group_members(launcher.pid) == [], "training processes outlived their launcher"
    done = len(metrics_of(interrupted))
    assert done < epochs, "the run finished before it could be killed"

    result = run([*command, "--resume-from-checkpoint", "latest"])
    assert "resumed from" in result.stdout + result.stderr
    assert [m["epoch"] for m in metrics_of(interrupted)] == list(range(epochs))  # each epoch once, none lost
    assert metrics_of(interrupted)[-1]["validation/loss"] == pytest.approx(metrics_of(reference)[-1]["validation/loss"],
                                                                          rel=1e-3)
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-15"]


@pytest.mark.parametrize(("options", "message"), [
    (["--num-train-epochs", "0"], "--num-train-epochs must be at least 1, got 0"),
    (["--per-device-train-batch-size", "-4"], "--per-device-train-batch-size must be at least 1, got -4"),
    (["--save-total-limit", "0"], "--save-total-limit must be at least 1, got 0"),
    (["--calibration-stop-rounds", "-1"], "--calibration-stop-rounds must be at least 0, got -1"),
    (["--push-to-hub"], "--push-to-hub needs --hub-model-id ORG/NAME"),
    (["--task", "property"], "--task property needs --target COLUMN[,COLUMN...]"),
    (["--classification-threshold", "0.0"], "--classification-threshold is for --task property"),
    (["--augment-labellings", "--dataloader-num-workers", "2"],
     "--augment-labellings needs --dataloader-num-workers 0 (it draws in the main process)"),
    (["--target", "band_gap"], "--target is for --task property (a generator is conditioned with --condition)"),
    (["--init-from", "runs/x"], "--init-from is for --task property or reward (a generator trains from scratch)"),
    (["--task", "property", "--target", "band_gap", "--condition", "band_gap"],
     "--condition is for --task generation: a property predictor takes no conditions"),
    (["--task", "property", "--target", "band_gap,e_above_hull", "--classification-threshold", "0"],
     "--classification-threshold classifies one --target, got 'band_gap,e_above_hull'"),
    (["--condition", "band_gap,,e_above_hull"], "--condition 'band_gap,,e_above_hull': give comma-separated column "
                                               "names, each once"),
    (["--max-train-minutes", "0"], "--max-train-minutes must be positive, got 0.0"),
])
def test_bad_options_fail_with_one_line(options, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(tmp_path / "run"), *options])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--task", "property", "--target", "formation_energy_per_atom,bandgap"],
     "--target bandgap: no such column in the dataset (numeric columns: source_index, formation_energy_per_atom, "
     "band_gap, e_above_hull, spacegroup.number, space_group)"),
    (["--condition", "pretty_formula"], "--condition pretty_formula: is not a numeric column in the dataset"),
    (["--config", "{config}"], "num_labels come from --task, --target or --condition and the training split, "
                               "not from the config"),
])
def test_bad_columns_fail_with_one_line_before_training(options, message, prepared_dataset, tmp_path,
                                                        capsys):
    config = tmp_path / "labels.json"
    config.write_text(json.dumps({**TINY_MODEL, "num_labels": 3}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(prepared_dataset), "--output-dir", str(tmp_path / "run"),
              *[option.format(config=config) for option in options]])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("bad", "message"), [
    ({"label_smoothing": 1.5}, "label_smoothing must be a number in [0, 1), got 1.5"),
    ({"element_descriptors": "yes"}, "Field 'element_descriptors' expected bool, got str (value: 'yes')"),
    ({"num_attention_heads": 7}, "is not a multiple of num_attention_heads 7"),
    ({"site_order": "random"}, "site_order must be one of ('canonical', 'any'), got 'random'"),
])
def test_a_config_value_the_model_refuses_fails_with_one_line(bad, message, prepared_dataset, tmp_path,
                                                              capsys):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({**TINY_MODEL, **bad}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(prepared_dataset), "--output-dir", str(tmp_path / "run"),
              "--config", str(config)])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert f"error: --config {config}: " in last and message in last
    assert not (tmp_path / "run").exists()


def test_time_limit_stops_after_the_epoch_that_passes_it_and_keeps_the_best_model(prepared_dataset, tiny_config,
                                                                                  tmp_path):
    out = tmp_path / "run"
    result = run(train_command(prepared_dataset, out, tiny_config, 5, "--max-train-minutes", "0.0001",
                               "--calibration-temperatures", ""))
    assert "stopping before epoch 1: past --max-train-minutes 0.0001" in result.stdout
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["stopped_by_time_limit"] and summary["best_epoch"] == 0
    assert [m["epoch"] for m in metrics_of(out)] == [0]
    WyckoffTransformerForCrystalGeneration.from_pretrained(out)


def test_resume_with_other_task_options_fails_before_training(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text(json.dumps({"task": {
        "task": "property", "target": "band_gap", "classification_threshold": None, "condition": None}}))
    with pytest.raises(SystemExit, match=r"checkpoint-3: trained with the task options \{'task': 'property', "
                                         r"'target': 'band_gap'\}, not \{'task': 'generation'\}$"):
        main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", "latest"])


def test_resume_with_nothing_to_resume_fails_instead_of_starting_afresh(tmp_path):
    with pytest.raises(SystemExit, match="holds no complete checkpoint-N folder to resume from"):
        main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", "latest"])
    (tmp_path / "checkpoint-3").mkdir()  # killed while saving: incomplete, not resumable
    with pytest.raises(SystemExit, match="holds no complete checkpoint-N folder"):
        main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", "latest"])
    with pytest.raises(SystemExit, match="checkpoint-3: not a complete checkpoint"):
        main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", str(tmp_path / "checkpoint-3")])
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"holds checkpoints of an earlier run \(checkpoint-3\); continue it"):
        main(["--output-dir", str(tmp_path)])


def test_push_to_hub_uploads_model_tokenizer_and_card(prepared_dataset, tiny_config, tmp_path, fake_hub):
    out = tmp_path / "run"
    run(train_command(prepared_dataset, out, tiny_config, 1, "--push-to-hub", "--hub-model-id", "wyckoff/test-model"),
        env=fake_hub.env)
    uploaded = fake_hub.files["wyckoff/test-model"]
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json",
                 "wyckoff_vocab.json", "README.md", "modeling_wyckoff_transformer.py",
                 "configuration_wyckoff_transformer.py", "training_summary.json"):
        assert name in uploaded, sorted(uploaded)
    assert not [path for path in uploaded if path.startswith("checkpoint-")]
    assert uploaded["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert b"library_name: transformers" in uploaded["README.md"]


def test_push_to_hub_without_a_token_fails_before_training(prepared_dataset, tmp_path, fake_hub,
                                                           monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_TOKEN", "")
    out = tmp_path / "run"
    try:
        with pytest.raises(SystemExit, match=r"^train.py: error: cannot create or access the Hub model repo "
                                             r"'wyckoff/m' at http.*401 Unauthorized"):
            main(["--dataset", str(prepared_dataset), "--output-dir", str(out), "--push-to-hub",
                  "--hub-model-id", "wyckoff/m"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # the Accelerator main() made in this process
    assert not out.exists() and "wyckoff/m" not in fake_hub.files


@pytest.mark.slow  # three script subprocesses (about 20 s); calibration itself is covered by test_calibration.py
def test_recalibration_and_card_with_evaluation_metrics(trained_run, prepared_dataset, tmp_path):
    model_dir, summary_path = trained_run, trained_run / "training_summary.json"
    run(["scripts/calibrate_temperature.py", str(model_dir), "--dataset", str(prepared_dataset), "--temperatures",
         "0.5,2.0", "--rows", "8", "--samples-per-row", "2", "--summary", str(summary_path)])
    summary = json.loads(summary_path.read_text())
    assert summary["calibration"]["samples_per_row"] == 2 and summary["calibration"]["rows"] == 8
    assert WyckoffTransformerForCrystalGeneration.from_pretrained(model_dir).generation_config.temperature in (0.5, 2.0)

    baseline = tmp_path / "baseline"
    run(["scripts/export_split_samples.py", "--dataset", str(prepared_dataset), "--split", "test", "--num", "6",
         "--out", str(baseline)])
    assert len((baseline / "samples.jsonl").read_text().splitlines()) == 6
    metrics = evaluate(baseline, prepared_dataset, tmp_path / "report", num_workers=1, structure_metrics=False)
    assert metrics["validity"]["wyckoff_valid"] == 1.0
    run(["scripts/render_model_card.py", str(model_dir), "--summary", str(summary_path), "--metrics",
         str(tmp_path / "report" / "metrics.json"), "--model-id", "org/name"])
    card = (model_dir / "README.md").read_text()
    assert "| Wyckoff validity | 100.0 % | samples |" in card
    assert 'pipeline("crystal-generation", model="org/name")' in card
    assert f"Sampling temperature **{summary['sampling_temperature']}**" in card


def test_render_model_card_names_a_missing_metrics_file(tmp_path):
    summary = REPO / "wyckoff_hf" / "pretrained" / "mp20-biternary" / "training_summary.json"
    result = subprocess.run([sys.executable, "scripts/render_model_card.py", str(tmp_path), "--summary", str(summary),
                             "--stability-metrics", str(tmp_path / "missing.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not (tmp_path / "README.md").exists()
    assert result.stderr.splitlines()[-1].endswith(f"--stability-metrics {tmp_path / 'missing.json'}: no such file")


# ------------------------------------------------------------------------------ property task, conditions

def train_in_process(dataset: Path, output_dir: Path, config: Path, epochs: int, *extra: str) -> dict:
    """``main`` in this process (no launcher start-up, a second or two for the tiny model); returns the summary."""
    try:
        return main(train_command(dataset, output_dir, config, epochs, *extra)[1:])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def validation_outputs(model_dir: Path, dataset: Path) -> tuple[torch.Tensor, pd.DataFrame]:
    """The saved model's logits on the whole validation split, and the split itself."""
    import wyckoff_hf  # noqa: F401  (registers the classes with the Auto factories)

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = WyckoffTokenizer.from_pretrained(model_dir)
    validation = load_wyckoff_dataset(dataset)["validation"]
    with torch.no_grad():
        logits = model(**tokenizer.pad(list(validation.select_columns(tokenizer.model_input_names)),
                                       return_tensors="pt")).logits
    return logits, validation.to_pandas()


REGRESSION_TARGETS = ["formation_energy_per_atom", "band_gap"]


@pytest.fixture(scope="module")
def property_run(prepared_dataset, tiny_config, tmp_path_factory) -> Path:
    """A 2-epoch regression of two targets."""
    out = tmp_path_factory.mktemp("property") / "run"
    train_in_process(prepared_dataset, out, tiny_config, 2, "--task", "property", "--target",
                     ",".join(REGRESSION_TARGETS))
    return out


def test_property_regression_saves_a_sequence_classification_model_with_exact_validation_mae(property_run,
                                                                                         prepared_dataset):
    out = property_run
    metrics = metrics_of(out)
    assert [(m["epoch"], m["step"]) for m in metrics] == [(0, 3), (1, 6)]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    logits, validation = validation_outputs(out, prepared_dataset)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model).__name__ == "WyckoffTransformerForPropertyPrediction"
    assert model.config.problem_type == "regression" and model.config.num_labels == 2
    assert model.config.id2label == dict(enumerate(REGRESSION_TARGETS))
    train = load_wyckoff_dataset(prepared_dataset)["train"].to_pandas()[REGRESSION_TARGETS]
    assert model.config.label_mean == pytest.approx(train.mean().tolist())
    assert model.config.label_std == pytest.approx(train.std(ddof=0).tolist())

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["task"] == "property" and "calibration" not in summary
    assert not (out / "generation_config.json").exists()
    best = summary["best_validation"]
    assert best.items() <= metrics[summary["best_epoch"]].items()  # the logged metrics of the best epoch
    labels = torch.tensor(validation[REGRESSION_TARGETS].to_numpy(), dtype=torch.float32)
    mae = (logits - labels).abs().mean(0)  # the saved (best) model, all validation rows at once
    for target, error in zip(REGRESSION_TARGETS, mae.tolist(), strict=True):
        assert best[f"validation/mae/{target}"] == pytest.approx(error, rel=1e-5)
        assert summary["baseline_validation"][f"validation/mae/{target}"] == pytest.approx(
            (validation[target] - train[target].mean()).abs().mean())
    # L1 on the standardised targets, averaged over both
    assert best["validation/loss"] == pytest.approx((mae / torch.tensor(model.config.label_std)).mean().item(),
                                                    rel=1e-5)
    card = ModelCard.load(out / "README.md")
    assert card.data.metrics == ["mae"] and "property-prediction" in card.data.tags
    assert f"| mae/band_gap | {best['validation/mae/band_gap']:.4f} | " in card.text
    assert 'AutoModelForSequenceClassification.from_pretrained("' + str(out) + '")' in card.text


@pytest.mark.slow  # two launcher subprocesses (about 20 s)
def test_property_task_on_two_processes_matches_one_process(property_run, prepared_dataset, tiny_config, tmp_path):
    """The property loss is a mean over crystals, weighted by crystals across processes: 2 × 8 follows 1 × 16."""
    out = tmp_path / "run"
    launcher = [*LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    run(train_command(prepared_dataset, out, tiny_config, 2, "--per-device-train-batch-size", "8", "--task",
                      "property", "--target", ",".join(REGRESSION_TARGETS)), launcher=launcher,
        env={"OMP_NUM_THREADS": "1"})
    for single, double in zip(metrics_of(property_run), metrics_of(out), strict=True):
        for key in ("train/loss", "validation/loss", "validation/mae/band_gap", "train/mae/formation_energy_per_atom"):
            assert double[key] == pytest.approx(single[key], rel=1e-5), key
    single, double = load_file(property_run / "model.safetensors"), load_file(out / "model.safetensors")
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=0, atol=1e-5)


def test_property_run_can_start_from_a_trained_generators_encoder(trained_run, prepared_dataset,
                                                                  tiny_config, tmp_path):
    out = tmp_path / "run"
    try:
        main(["--dataset", str(prepared_dataset), "--output-dir", str(out), "--num-train-epochs", "1",
              "--task", "property", "--target", "band_gap", "--init-from", str(trained_run),
              "--learning-rate", "1e-12"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    generator = WyckoffTransformerForCrystalGeneration.from_pretrained(trained_run)
    predictor = AutoModelForSequenceClassification.from_pretrained(out)
    assert predictor.config.num_hidden_layers == generator.config.num_hidden_layers  # its architecture
    for name, weight in generator.model.state_dict().items():  # the encoder barely moved at lr 1e-12
        torch.testing.assert_close(predictor.model.state_dict()[name], weight, rtol=0, atol=1e-6)
    with pytest.raises(SystemExit):  # its architecture: no --config beside it
        train_in_process(prepared_dataset, tmp_path / "other", tiny_config, 1, "--task", "property",
                         "--target", "band_gap", "--init-from", str(trained_run))


def test_property_regression_overfits_a_small_training_set(prepared_dataset, tiny_config, tmp_path):
    out = tmp_path / "run"
    train_in_process(prepared_dataset, out, tiny_config, 20, "--task", "property", "--target",
                     "formation_energy_per_atom", "--max-train-rows", "16", "--learning-rate", "1e-2",
                     "--warmup-ratio", "0", "--checkpoint-every-epochs", "20")
    losses = [m["train/loss"] for m in metrics_of(out)]
    assert losses[-1] < 0.6 * losses[0], losses
    assert sum(later < earlier for earlier, later in pairwise(losses)) >= 15, losses


def test_property_classification_reports_the_exact_validation_accuracy(prepared_dataset, tiny_config,
                                                                       tmp_path):
    out = tmp_path / "run"
    # the 15 validation crystals of the small dataset have no band gap, but both signs of this
    summary = train_in_process(prepared_dataset, out, tiny_config, 2, "--task", "property",
                               "--target", "formation_energy_per_atom", "--classification-threshold", "-0.6")
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.problem_type == "single_label_classification"
    assert model.config.id2label == {0: "formation_energy_per_atom <= -0.6", 1: "formation_energy_per_atom > -0.6"}
    assert model.config.label_mean is None
    logits, validation = validation_outputs(out, prepared_dataset)
    labels = torch.tensor((validation["formation_energy_per_atom"] > -0.6).to_numpy()).long()
    assert 0 < labels.sum() < len(labels)  # both classes occur
    best = summary["best_validation"]
    assert best["validation/accuracy"] == pytest.approx((logits.argmax(-1) == labels).double().mean().item())
    assert best["validation/loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    train_labels = load_wyckoff_dataset(prepared_dataset)["train"].to_pandas()["formation_energy_per_atom"] > -0.6
    majority = train_labels.mean() > 0.5
    baseline = (labels == majority).double().mean().item()
    assert summary["baseline_validation"] == {"validation/accuracy": pytest.approx(baseline)}
    assert [set(m) >= {"train/accuracy", "validation/accuracy"} for m in metrics_of(out)] == [True, True]
    assert "| accuracy | " in (out / "README.md").read_text()


def test_conditional_generator_saves_its_conditions_scale_and_generates(prepared_dataset, tiny_config,
                                                                        tmp_path):
    out = tmp_path / "run"
    summary = train_in_process(prepared_dataset, out, tiny_config, 1, "--condition",
                               "band_gap,e_above_hull")
    model = WyckoffTransformerForCrystalGeneration.from_pretrained(out)
    train = load_wyckoff_dataset(prepared_dataset)["train"].to_pandas()
    assert model.config.condition_names == ["band_gap", "e_above_hull"]
    assert model.config.condition_mean == pytest.approx(train[["band_gap", "e_above_hull"]].mean().tolist())
    assert model.config.condition_std == pytest.approx(train[["band_gap", "e_above_hull"]].std(ddof=0).tolist())
    assert summary["calibration"]["temperature"] == model.generation_config.temperature  # calibrated, as unconditioned
    assert sum(model.generation_config.space_group_counts) == TRAIN_ROWS
    assert {"validation/element_loss", "validation/loss"} <= set(summary["best_validation"])
    tokenizer = WyckoffTokenizer.from_pretrained(out)
    assert len(model.generate(num_samples=3, seed=0, tokenizer=tokenizer, condition={"band_gap": 1.5})) == 3


def test_a_model_of_any_site_order_trains_on_shuffled_sites_and_samples_any_order(prepared_dataset, tmp_path,
                                                                                  capsys, monkeypatch):
    config = tmp_path / "any.json"
    config.write_text(json.dumps({**TINY_MODEL, "site_order": "any"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(prepared_dataset), "--output-dir", str(tmp_path / "refused"),
              "--config", str(config), "--dataloader-num-workers", "2"])
    assert exit_info.value.code == 2
    assert "needs --dataloader-num-workers 0" in capsys.readouterr().err.splitlines()[-1]
    shuffled = []
    permute = SitePermutation.__call__
    monkeypatch.setattr(SitePermutation, "__call__",
                        lambda self, features: shuffled.append(len(features)) or permute(self, features))
    out = tmp_path / "run"
    train_in_process(prepared_dataset, out, config, 1, "--calibration-temperatures", "")
    assert sum(shuffled) == TRAIN_ROWS  # every training batch, and no validation one
    model = WyckoffTransformerForCrystalGeneration.from_pretrained(out)
    assert model.config.site_order == "any"
    out = model.generate(200, seed=0)
    rank = model.tables.element_rank[out.element_ids]
    sites = out.element_ids > WyckoffTokenizer.mask_token_id
    descending = (rank[:, 1:] < rank[:, :-1]) & sites[:, 1:]
    assert descending.any(1).float().mean() > 0.1  # a canonical-order model never writes a lower-ranked element next
