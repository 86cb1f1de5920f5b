"""The shipped checkpoints: the default generator loads offline through the Auto classes, the CLI and the pipeline;
the property predictors and the band-gap-conditional generator do what their cards say."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

import wyckoff_hf
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.generation.jobs import DEFAULT_MODEL, PRETRAINED
from wyckoff_hf.prediction import PropertyPredictor
from wyckoff_hf.tokenization import WyckoffRepresentation


def test_auto_classes_load_the_shipped_checkpoint():
    assert AutoConfig.from_pretrained(DEFAULT_MODEL).model_type == "wyckoff_transformer"
    model = AutoModelForPreTraining.from_pretrained(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    assert isinstance(model, wyckoff_hf.WyckoffTransformerForCrystalGeneration)
    assert isinstance(tokenizer, wyckoff_hf.WyckoffTokenizer)
    assert sum(model.generation_config.space_group_counts) == 6426  # the prior of the mp20-biternary-dev train split
    assert model.generation_config.temperature == 0.9  # calibrated on the validation split, with the range below
    assert model.config.hidden_size == 192 and model.config.num_hidden_layers == 4  # the training's RECIPE_CONFIG
    assert model.config.site_count_embedding
    assert model.generation_config.num_elements_range == [2, 3]  # binary and ternary training crystals
    crystals = model.generate(num_samples=50, space_group=225, allowed_elements=["Na", "Cl", "K", "Br"], seed=0,
                              constraint_sampling="masked", tokenizer=tokenizer)  # exact: acceptance < 0.01
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
    hot = generator(5, seed=3, field_temperatures={"site_symmetry": 3.0, "enumeration": 3.0})
    assert [c["text"] for c in hot] != [c["text"] for c in first]  # the keyword reaches generate


def test_pipeline_results_carry_their_log_probability_as_score():
    generator = pipeline("crystal-generation", model=str(DEFAULT_MODEL))
    generated = generator.model.generate(5, seed=3)
    results = generator(5, seed=3)
    assert [c["representation"] for c in results] == generator.wyckoff_tokenizer.batch_decode(generated)
    assert [c["score"] for c in results] == pytest.approx(generated.sequences_scores.tolist())
    assert all(c["score"] < 0 for c in results)
    prompt = WyckoffRepresentation.from_sites(225, [("Na", "a")])
    prompted = generator(3, prompt=prompt, seed=0)  # a representation prompt is encoded by the pipeline's tokenizer
    assert all(c["text"].startswith("Fm-3m (225): Na 4a") and c["score"] <= 0 for c in prompted)


def test_pipeline_task_defaults_to_the_shipped_model():
    assert pipeline("crystal-generation").model.name_or_path == str(DEFAULT_MODEL)


PREDICTORS = {"mp20-biternary-formation-energy": ("formation_energy_per_atom", 0.15),
              "mp20-biternary-band-gap": ("band_gap", 0.45)}


@pytest.fixture(scope="module")
def test_rows(shared_data):
    """200 test crystals of the shipped models' data, with their DFT values."""
    frame = pd.read_csv(shared_data / "mp_20_biternary" / "test.csv.gz", nrows=200)
    return [WyckoffRepresentation.from_structure(cif) for cif in frame["cif"]], frame


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_shipped_predictors_reproduce_their_test_error(name, test_rows):
    """Through the Auto classes, on 200 test rows: within the MAE the card reports (whole test split) plus slack for
    the smaller sample, and well below the error of the best constant (the median; band gaps are mostly 0)."""
    target, bound = PREDICTORS[name]
    model = AutoModelForSequenceClassification.from_pretrained(PRETRAINED / name).eval()
    tokenizer = AutoTokenizer.from_pretrained(PRETRAINED / name)
    assert model.config.id2label == {0: target} and model.config.problem_type == "regression"
    crystals, frame = test_rows
    with torch.no_grad():
        predicted = model(**tokenizer(crystals, return_tensors="pt")).logits[:, 0].numpy()
    errors = np.abs(predicted - frame[target].to_numpy())
    assert errors.mean() < bound
    assert errors.mean() < 0.7 * np.abs(frame[target] - frame[target].median()).mean()  # the best single number


def test_shipped_conditional_generator_follows_the_band_gap():
    generator = AutoModelForPreTraining.from_pretrained(PRETRAINED / "mp20-biternary-band-gap-conditional")
    assert generator.config.condition_names == ["band_gap"]
    predictor = PropertyPredictor.from_pretrained(PRETRAINED / "mp20-biternary-band-gap")
    tokenizer = AutoTokenizer.from_pretrained(PRETRAINED / "mp20-biternary-band-gap-conditional")
    medians = {}
    for gap in (0.0, 3.0):
        crystals = generator.generate(300, condition={"band_gap": gap}, guidance_scale=2.0, seed=0,
                                      tokenizer=tokenizer)
        medians[gap] = float(np.median([row["band_gap"] for row in predictor.predict(crystals)]))
    assert medians[0.0] < 0.5 < 2.0 < medians[3.0]
