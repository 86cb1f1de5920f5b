"""scripts/train.py: accelerate launch on 1 and 2 processes, kill -9 and resume, bad input, the Hub upload."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from accelerate.state import AcceleratorState
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file

from wyckoff_hf import WyckoffTokenizer, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.data import add_wyckoff_columns, load_crystal_csv_splits, write_parquet_splits
from wyckoff_hf.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
              "space_group_embedding_size": 8, "element_embedding_size": 8, "site_symmetry_embedding_size": 8,
              "enumeration_embedding_size": 4, "derived_feature_size": 4}
TRAIN_ROWS, VALIDATION_ROWS = 48, 15  # 3 steps of 16 crystals; validation shards of 8 and 7 on 2 processes
LAUNCH = ["accelerate", "launch", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def train_script():
    """scripts/train.py as a module, for the checks that run before any training."""
    spec = importlib.util.spec_from_file_location("train_script", REPO / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


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
    assert len(model.generate(num_samples=4, seed=0, tokenizer=tokenizer)) == 4
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert f"{summary['best_validation']['validation/loss']:.4f}" in card.text
    assert "Not evaluated yet" in card.text


def test_two_processes_shard_the_data_and_match_one_process(trained_run, prepared_dataset, tiny_config, tmp_path):
    """2 CPU processes (gloo) with 8 crystals each per step follow the 1-process run with 16 per step."""
    out = tmp_path / "run"
    launcher = [*LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    run(train_command(prepared_dataset, out, tiny_config, 2, "--per-device-train-batch-size", "8",
                      "--calibration-temperatures", ""), launcher=launcher, env={"OMP_NUM_THREADS": "1"})
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
    (["--push-to-hub"], "--push-to-hub needs --hub-model-id ORG/NAME"),
])
def test_bad_options_fail_with_one_line(options, message, train_script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--output-dir", str(tmp_path / "run"), *options])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
    assert not (tmp_path / "run").exists()


def test_resume_with_nothing_to_resume_fails_instead_of_starting_afresh(train_script, tmp_path):
    with pytest.raises(SystemExit, match="holds no complete checkpoint-N folder to resume from"):
        train_script.main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", "latest"])
    (tmp_path / "checkpoint-3").mkdir()  # killed while saving: incomplete, not resumable
    with pytest.raises(SystemExit, match="holds no complete checkpoint-N folder"):
        train_script.main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", "latest"])
    with pytest.raises(SystemExit, match="checkpoint-3: not a complete checkpoint"):
        train_script.main(["--output-dir", str(tmp_path), "--resume-from-checkpoint", str(tmp_path / "checkpoint-3")])
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"holds checkpoints of an earlier run \(checkpoint-3\); continue it"):
        train_script.main(["--output-dir", str(tmp_path)])


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


def test_push_to_hub_without_a_token_fails_before_training(train_script, prepared_dataset, tmp_path, fake_hub,
                                                           monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_TOKEN", "")
    out = tmp_path / "run"
    try:
        with pytest.raises(SystemExit, match=r"^train.py: error: cannot create or access the Hub model repo "
                                             r"'wyckoff/m' at http.*401 Unauthorized"):
            train_script.main(["--dataset", str(prepared_dataset), "--output-dir", str(out), "--push-to-hub",
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
