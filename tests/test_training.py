"""scripts/train.py: a short run through ``accelerate launch``, kill -9 and resume, and the Hub upload."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import ModelCard

from wyckoff_hf import WyckoffTokenizer, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.data import add_wyckoff_columns, load_crystal_csv_splits, write_parquet_splits
from wyckoff_hf.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
              "space_group_embedding_size": 8, "element_embedding_size": 8, "site_symmetry_embedding_size": 8,
              "enumeration_embedding_size": 4, "derived_feature_size": 4}


@pytest.fixture(scope="module")
def prepared_dataset(tmp_path_factory, shared_data) -> Path:
    """A small prepared dataset (48 train / 16 validation / 16 test crystals of MP-20), written as parquet."""
    source = tmp_path_factory.mktemp("source")
    frame = pd.read_csv(shared_data / "mp_20_biternary" / "val.csv.gz", nrows=80)
    for name, rows in (("train", frame[:48]), ("val", frame[48:64]), ("test", frame[64:])):
        rows.to_csv(source / f"{name}.csv.gz", index=False)
    dataset, failures = add_wyckoff_columns(load_crystal_csv_splits(source, layout="cdvae"))
    assert failures.empty
    out = tmp_path_factory.mktemp("prepared")
    write_parquet_splits(dataset, out)
    return out


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY_MODEL))
    return path


def train_command(dataset: Path, output_dir: Path, config: Path, epochs: int, *extra: str) -> list[str]:
    return ["scripts/train.py", "--dataset", str(dataset), "--output-dir", str(output_dir), "--config", str(config),
            "--num_epochs", str(epochs), "--batch_size", "16", "--calibration_temperatures", "0.8,1.0",
            "--calibration_rows", "16", "--early_stopping_patience", "100", *extra]


def run(command: list[str], env: dict | None = None, launcher: bool = False) -> subprocess.CompletedProcess:
    prefix = ["accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"] if launcher else [sys.executable]
    result = subprocess.run(prefix + command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_validation_loss(output_dir: Path) -> float:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["validation/loss"]


@pytest.fixture(scope="module")
def trained_run(prepared_dataset, tiny_config, tmp_path_factory) -> Path:
    """A 2-epoch run through ``accelerate launch`` on the CPU."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(train_command(prepared_dataset, out, tiny_config, 2), launcher=True)
    return out


def test_accelerate_launch_two_epochs_gives_a_loadable_checkpoint(trained_run):
    out = trained_run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert metrics[1]["train/loss"] < metrics[0]["train/loss"]
    best = out / "best"
    assert (best / "model.safetensors").is_file() and not list(best.glob("*.bin"))
    model = WyckoffTransformerForCrystalGeneration.from_pretrained(best)
    tokenizer = WyckoffTokenizer.from_pretrained(best)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["command"].startswith("accelerate launch ")
    assert model.config.sampling_temperature == summary["calibration"]["temperature"] in (0.8, 1.0)
    assert [p["temperature"] for p in summary["calibration"]["scan"]] == [0.8, 1.0]
    assert sum(model.config.space_group_counts) == summary["train_rows"]  # the training split's prior
    assert len(model.generate(num_samples=4, seed=0, tokenizer=tokenizer)) == 4
    card = ModelCard.load(best / "README.md")
    assert card.data.library_name == "transformers"
    assert f"{summary['best_validation']['validation/loss']:.4f}" in card.text
    assert "Not evaluated yet" in card.text


def test_recalibration_and_card_with_evaluation_metrics(trained_run, prepared_dataset, tmp_path):
    best, summary_path = trained_run / "best", trained_run / "training_summary.json"
    run(["scripts/calibrate_temperature.py", str(best), "--dataset", str(prepared_dataset), "--temperatures",
         "0.5,2.0", "--rows", "8", "--samples-per-row", "2", "--summary", str(summary_path)])
    summary = json.loads(summary_path.read_text())
    assert summary["calibration"]["samples_per_row"] == 2 and summary["calibration"]["rows"] == 8
    assert WyckoffTransformerForCrystalGeneration.from_pretrained(best).config.sampling_temperature in (0.5, 2.0)

    baseline = tmp_path / "baseline"
    run(["scripts/export_split_samples.py", "--dataset", str(prepared_dataset), "--split", "test", "--num", "6",
         "--out", str(baseline)])
    assert len((baseline / "samples.jsonl").read_text().splitlines()) == 6
    metrics = evaluate(baseline, prepared_dataset, tmp_path / "report", num_workers=1, structure_metrics=False)
    assert metrics["validity"]["wyckoff_valid"] == 1.0
    run(["scripts/render_model_card.py", str(best), "--summary", str(summary_path), "--metrics",
         str(tmp_path / "report" / "metrics.json"), "--model-id", "org/name"])
    card = (best / "README.md").read_text()
    assert "| Wyckoff validity | 100.0 % | samples |" in card
    assert 'pipeline("crystal-generation", model="org/name")' in card
    assert f"Sampling temperature **{summary['sampling_temperature']}**" in card


def test_kill_and_resume_loses_no_epoch(prepared_dataset, tiny_config, tmp_path):
    epochs = 5
    reference = tmp_path / "uninterrupted"
    run(train_command(prepared_dataset, reference, tiny_config, epochs, "--calibration_temperatures", ""))

    interrupted = tmp_path / "interrupted"
    command = train_command(prepared_dataset, interrupted, tiny_config, epochs, "--calibration_temperatures", "")
    process = subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first_checkpoint = interrupted / "checkpoints" / "epoch-0000" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len((interrupted / "metrics.jsonl").read_text().splitlines())
    assert done < epochs, "the run finished before it could be killed"

    result = run([*command, "--resume-from-checkpoint", "latest"])
    assert "resumed from" in result.stdout + result.stderr
    epochs_logged = [json.loads(line)["epoch"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(epochs_logged)) == list(range(epochs))  # every epoch ran; none was lost
    assert final_validation_loss(interrupted) == pytest.approx(final_validation_loss(reference), rel=1e-3)


def test_push_to_hub_uploads_model_tokenizer_and_card(prepared_dataset, tiny_config, tmp_path, fake_hub):
    out = tmp_path / "run"
    run(train_command(prepared_dataset, out, tiny_config, 1, "--push-to-hub", "wyckoff/test-model"),
        env={**fake_hub.env, "HF_HUB_OFFLINE": "0"})
    uploaded = fake_hub.files["wyckoff/test-model"]
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "wyckoff_vocab.json", "README.md",
                 "modeling_wyckoff_transformer.py", "configuration_wyckoff_transformer.py"):
        assert name in uploaded, sorted(uploaded)
    assert uploaded["model.safetensors"] == (out / "best" / "model.safetensors").read_bytes()
    assert b"library_name: transformers" in uploaded["README.md"]
