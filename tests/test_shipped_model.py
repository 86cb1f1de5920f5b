"""The shipped default checkpoint: loads offline through the Auto classes, the CLI and the pipeline."""

import json
import os
import subprocess
import sys

from transformers import AutoConfig, AutoModelForPreTraining, AutoTokenizer, pipeline

import wyckoff_hf
from wyckoff_hf.generation.jobs import DEFAULT_MODEL
from wyckoff_hf.tokenization import WyckoffRepresentation


def test_auto_classes_load_the_shipped_checkpoint():
    assert AutoConfig.from_pretrained(DEFAULT_MODEL).model_type == "wyckoff_transformer"
    model = AutoModelForPreTraining.from_pretrained(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    assert isinstance(model, wyckoff_hf.WyckoffTransformerForCrystalGeneration)
    assert isinstance(tokenizer, wyckoff_hf.WyckoffTokenizer)
    assert sum(model.config.space_group_counts) == 6426  # the prior of the mp20-biternary-dev train split
    crystals = model.generate(num_samples=50, space_group=225, allowed_elements=["Na", "Cl", "K", "Br"], seed=0,
                              tokenizer=tokenizer)
    assert all(c.space_group == 225 and set(c.elements) <= {"Na", "Cl", "K", "Br"} for c in crystals)


def test_generate_cli_offline(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "wyckoff_hf.cli", "generate", "-n", "24", "--out", str(out), "--structures",
         "--workers", "1", "--seed", "0"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 24
    representations = [WyckoffRepresentation.from_dict(json.loads(line)) for line in lines]
    structures = sorted(p.name for p in (out / "structures").glob("*.cif"))
    failures = (out / "realisation_failures.csv").read_text().splitlines()[1:]
    assert len(structures) + len(failures) == 24 and len(structures) >= 12
    assert "realised" in result.stdout and str(representations[0]) in result.stdout


def test_pipeline_task():
    generator = pipeline("crystal-generation", model=str(DEFAULT_MODEL))
    first, again = generator(5, seed=3), generator(5, seed=3)
    assert [c["text"] for c in first] == [c["text"] for c in again]
    assert all(isinstance(c["representation"], WyckoffRepresentation) for c in first)
    assert generator({"num_samples": 2, "space_group": 221}, seed=0)[0]["space_group"] == 221
