"""The shipped default checkpoint: loads offline through the Auto classes, the CLI and the pipeline."""

import json
import os
import subprocess
import sys

from transformers import AutoConfig, AutoModelForPreTraining, AutoTokenizer, pipeline

import wyckoff_hf
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.generation.jobs import DEFAULT_MODEL
from wyckoff_hf.tokenization import WyckoffRepresentation


def test_auto_classes_load_the_shipped_checkpoint():
    assert AutoConfig.from_pretrained(DEFAULT_MODEL).model_type == "wyckoff_transformer"
    model = AutoModelForPreTraining.from_pretrained(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    assert isinstance(model, wyckoff_hf.WyckoffTransformerForCrystalGeneration)
    assert isinstance(tokenizer, wyckoff_hf.WyckoffTokenizer)
    assert sum(model.generation_config.space_group_counts) == 6426  # the prior of the mp20-biternary-dev train split
    assert model.generation_config.temperature == 0.6  # calibrated on the validation split
    crystals = model.generate(num_samples=50, space_group=225, allowed_elements=["Na", "Cl", "K", "Br"], seed=0,
                              tokenizer=tokenizer)
    assert all(c.space_group == 225 and set(c.elements) <= {"Na", "Cl", "K", "Br"} for c in crystals)


def test_generate_cli_offline(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "wyckoff_hf.cli", "generate", "-n", "24", "--output-dir", str(out), "--structures",
         "--num-workers", "1", "--seed", "0"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 24
    representations = [WyckoffRepresentation.from_dict(json.loads(line)) for line in lines]
    samples = load_samples(out)  # checks every CIF against its line of samples.jsonl
    assert samples.representations == representations
    assert len(samples.structures) + len(samples.structure_errors) == 24 and len(samples.structures) >= 12
    assert "realised" in result.stdout and str(representations[0]) in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["realisation"] == {"seed": 0, "max_attempts": 10, "timeout": 60.0, "format": "cif"}


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_import_registers_the_auto_classes_whenever_transformers_comes():
    load = f"print(type(AutoConfig.from_pretrained({str(DEFAULT_MODEL)!r})).__name__)"
    expected = "WyckoffTransformerConfig"
    # the package first (it imports nothing heavy), transformers later
    assert run_python(f"import wyckoff_hf\nfrom transformers import AutoConfig\n{load}") == expected
    # one of our modules first: it imports transformers itself, half-way through its own import
    assert run_python(f"import wyckoff_hf.modeling\nfrom transformers import AutoConfig\n{load}") == expected
    # (transformers first, then wyckoff_hf: this module's own imports)


def test_pipeline_task():
    generator = pipeline("crystal-generation", model=str(DEFAULT_MODEL))
    first, again = generator(5, seed=3), generator(5, seed=3)
    assert [c["text"] for c in first] == [c["text"] for c in again]
    assert all(isinstance(c["representation"], WyckoffRepresentation) for c in first)
    assert generator({"num_samples": 2, "space_group": 221}, seed=0)[0]["space_group"] == 221


def test_pipeline_task_defaults_to_the_shipped_model():
    assert pipeline("crystal-generation").model.name_or_path == str(DEFAULT_MODEL)
