"""Property prediction: the prediction API, ``wyckoff-hf predict``, ``generate --predict``, the
``crystal-property-prediction`` pipeline, the composition-family baseline and the two benchmark scripts, on tiny
randomly initialised models saved to temporary folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import test_benchmark_quality
import torch
from conftest import load_script
from pymatgen.core import Lattice, Structure
from transformers import pipeline

from wyckoff_hf.cli import main
from wyckoff_hf.evaluation import load_samples
from wyckoff_hf.generation import PRETRAINED
from wyckoff_hf.generation.output import write_samples
from wyckoff_hf.modeling import (
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
    WyckoffTransformerForPropertyPrediction,
)
from wyckoff_hf.prediction import CompositionFamilyBaseline, PropertyPredictor, predict_table
from wyckoff_hf.prediction.predict import rows_from_logits
from wyckoff_hf.tokenization import StructureParseError, WyckoffRepresentation, WyckoffTokenizer
from wyckoff_hf.utils.model_kind import GENERATOR, PREDICTOR, check_model_kind

TINY = test_benchmark_quality.TINY  # the tiny_dataset fixture (conftest) has at most TINY's max_sites sites
NACL = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
PNMA = WyckoffRepresentation.from_sites(62, [("Na", "c"), ("Cl", "c"), ("O", "d")])
CLASSES = ["band_gap <= 0", "band_gap > 0"]


def save(model, path: Path) -> Path:
    model.save_pretrained(path)
    WyckoffTokenizer().save_pretrained(path)
    return path


def property_config(tokenizer: WyckoffTokenizer, names: list[str], **kwargs) -> WyckoffTransformerConfig:
    return WyckoffTransformerConfig.from_tokenizer(tokenizer, num_labels=len(names), id2label=dict(enumerate(names)),
                                                   label2id={name: i for i, name in enumerate(names)},
                                                   **TINY, **kwargs)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory, tokenizer) -> Path:
    """A band gap regressor whose outputs are spread around 1.5 eV (label_mean 1.5, label_std 0.5)."""
    torch.manual_seed(0)
    config = property_config(tokenizer, ["band_gap"], problem_type="regression", label_mean=[1.5], label_std=[0.5])
    return save(WyckoffTransformerForPropertyPrediction(config), tmp_path_factory.mktemp("band_gap"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tokenizer) -> Path:
    """A metal / non-metal classifier as ``scripts/train.py --classification-threshold 0`` names its classes."""
    torch.manual_seed(1)
    config = property_config(tokenizer, CLASSES, problem_type="single_label_classification")
    return save(WyckoffTransformerForPropertyPrediction(config), tmp_path_factory.mktemp("metal"))


@pytest.fixture(scope="module")
def generator(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(2)
    model = WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY))
    return save(model, tmp_path_factory.mktemp("generator"))


def forward_band_gap(model_dir: Path, representation: WyckoffRepresentation) -> float:
    """The model's output for one crystal, straight from ``forward`` (what every entry point must report)."""
    model = WyckoffTransformerForPropertyPrediction.from_pretrained(model_dir).eval()
    tokenizer = WyckoffTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return float(model(**tokenizer.pad([tokenizer.encode(representation)], return_tensors="pt")).logits[0, 0])


def nacl_structure() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# ------------------------------------------------------------------------------------------ prediction API


def test_regression_outputs_are_forward_in_label_units(regressor):
    predictor = PropertyPredictor.from_pretrained(regressor)
    assert predictor.columns == ["band_gap"] and predictor.problem_type == "regression"
    predictions = predictor.predict([NACL, PNMA, NACL], batch_size=2)  # a batch boundary inside the list
    assert predictions[0] == predictions[2] != predictions[1]
    assert predictions[0]["band_gap"] == pytest.approx(forward_band_gap(regressor, NACL), abs=1e-6)
    assert predictions[1]["band_gap"] == pytest.approx(forward_band_gap(regressor, PNMA), abs=1e-6)
    assert 0.5 < predictions[0]["band_gap"] < 2.5  # destandardised around label_mean, not around 0


# crystals the shipped band-gap model put below 0 before predictions were clamped (-0.0041, -0.0016, -0.0010 eV)
NEGATIVE_GAP_CRYSTALS = [
    WyckoffRepresentation.from_sites(5, [("V", "c"), ("V", "c"), ("V", "c"), ("O", "a"), ("O", "c")], canonical=False),
    WyckoffRepresentation.from_sites(71, [("V", "a"), ("V", "f"), ("V", "l"), ("O", "c"), ("O", "e")], canonical=False),
    WyckoffRepresentation.from_sites(113, [("Co", "c"), ("Ag", "a"), ("Se", "e")], canonical=False),
]


def test_the_shipped_band_gap_model_predicts_no_negative_gap():
    predictor = PropertyPredictor.from_pretrained(PRETRAINED / "mp20-biternary-band-gap")
    raw = predictor.model(**predictor.tokenizer(NEGATIVE_GAP_CRYSTALS, return_tensors="pt")).logits[:, 0]
    assert (raw < 0).all()  # the unbounded head still says below 0 ...
    assert [row["band_gap"] for row in predictor.predict(NEGATIVE_GAP_CRYSTALS)] == [0.0, 0.0, 0.0]  # ... reported as 0
    ranked = pipeline("crystal-property-prediction", model=str(PRETRAINED / "mp20-biternary-band-gap"))
    assert [row["band_gap"] for row in ranked(NEGATIVE_GAP_CRYSTALS)] == [0.0, 0.0, 0.0]


def test_a_config_names_its_non_negative_labels_or_turns_clamping_off(tokenizer):
    names = ["band_gap", "formation_energy_per_atom"]
    logits = torch.tensor([[-0.5, -0.5]])
    default = property_config(tokenizer, names, problem_type="regression")
    assert rows_from_logits(logits, default) == [{"band_gap": 0.0, "formation_energy_per_atom": -0.5}]
    assert logits.tolist() == [[-0.5, -0.5]]  # the logits themselves are left alone
    off = property_config(tokenizer, names, problem_type="regression", non_negative_labels=[])
    assert rows_from_logits(logits, off) == [{"band_gap": -0.5, "formation_energy_per_atom": -0.5}]
    bad = property_config(tokenizer, names, problem_type="regression", non_negative_labels=["volume"])
    with pytest.raises(ValueError, match="'volume'"):
        rows_from_logits(logits, bad)


def test_classifier_gives_class_probabilities_and_the_likeliest_label(classifier):
    predictor = PropertyPredictor.from_pretrained(classifier)
    assert predictor.columns == ["p_band_gap <= 0", "p_band_gap > 0", "label"]
    for prediction in predictor.predict([NACL, PNMA]):
        probabilities = [prediction[f"p_{name}"] for name in CLASSES]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-6)
        assert prediction["label"] == CLASSES[probabilities.index(max(probabilities))]


def test_columns_two_models_share_are_qualified_and_one_model_twice_is_refused(regressor, tmp_path):
    copy = save(WyckoffTransformerForPropertyPrediction.from_pretrained(regressor), tmp_path / "copy")
    first, second = PropertyPredictor.from_pretrained(regressor), PropertyPredictor.from_pretrained(copy)
    frame, problems = predict_table([first, second], [NACL, PNMA])
    assert list(frame.columns) == [f"band_gap [{regressor}]", f"band_gap [{copy}]"] and problems == []
    assert frame.iloc[:, 0].tolist() == frame.iloc[:, 1].tolist()  # the same weights
    with pytest.raises(ValueError, match="is one model given twice"):
        predict_table([first, first], [NACL])


def test_a_crystal_a_model_cannot_read_keeps_its_row_with_empty_cells(regressor):
    loaded = PropertyPredictor.from_pretrained(regressor)
    two_sites_at_most = PropertyPredictor(loaded.model, WyckoffTokenizer(max_sites=2), "small")
    frame, problems = predict_table([two_sites_at_most], [NACL, PNMA, NACL])
    assert frame["band_gap"].isna().tolist() == [False, True, False]
    assert [(p.row, p.model) for p in problems] == [(1, "small")]
    assert "3 sites, more than max_sites=2" in problems[0].reason


# ------------------------------------------------------------------------------------------ wyckoff-hf predict


def test_predict_command_predicts_nacl_and_reports_a_broken_cif(regressor, tmp_path, capsys):
    good, bad, output = tmp_path / "nacl.cif", tmp_path / "broken.cif", tmp_path / "out.csv"
    nacl_structure().to(filename=str(good))
    bad.write_text("data_broken\n_cell_length_a 5.64\nnot a cif\n")
    assert main(["predict", str(good), str(bad), "--model", str(regressor), "--output", str(output)]) == 0
    out, err = capsys.readouterr()
    assert f"{bad}: ERROR StructureParseError: unparseable CIF" in err and "nacl" not in err
    assert "nacl Fm-3m (225): Na 4a, Cl 4b" in " ".join(out.split())
    assert "predicted 1 crystal(s) with 1 model(s); 1 input(s) skipped" in out
    table = pd.read_csv(output)
    assert table[["input", "name", "representation"]].values.tolist() == [[str(good), "nacl",
                                                                             "Fm-3m (225): Na 4a, Cl 4b"]]
    assert table["band_gap"][0] == pytest.approx(forward_band_gap(regressor, NACL), abs=1e-6)


def test_predict_command_exits_1_when_nothing_can_be_read(regressor, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.cif"), "--model", str(regressor)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing.cif'}: ERROR FileNotFoundError: no such file or folder" in err


def test_predict_refuses_a_generator_in_one_line(generator, tmp_path, capsys):
    nacl_structure().to(filename=str(tmp_path / "nacl.cif"))
    assert main(["predict", str(tmp_path / "nacl.cif"), "--model", str(generator)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"wyckoff-hf predict: error: {generator} is a generator (WyckoffTransformerForCrystalGeneration), "
                     f"not a property predictor: use `wyckoff-hf generate --model {generator}`"]


def test_generate_refuses_the_shipped_predictor_in_one_line_before_loading_it(tmp_path, capsys, monkeypatch):
    import wyckoff_hf.generation.jobs as jobs

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(jobs, "load_checkpoint", no_loading)
    predictor = PRETRAINED / "mp20-biternary-band-gap"
    assert main(["generate", "-n", "2", "--model", str(predictor), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"wyckoff-hf generate: error: {predictor} is a property predictor (WyckoffTransformerForPropertyPrediction), "
        f"not a generator: use `wyckoff-hf predict --model {predictor}`"]
    assert not (tmp_path / "out").exists()


def test_model_kind_is_read_from_config_json_and_unknown_kinds_pass(tmp_path):
    check_model_kind(PRETRAINED / "mp20-biternary", GENERATOR)
    check_model_kind(PRETRAINED / "mp20-biternary-band-gap", PREDICTOR)
    (tmp_path / "config.json").write_text('{"model_type": "wyckoff_transformer"}')  # no architectures: let through
    check_model_kind(tmp_path, GENERATOR)
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(ValueError, match=r"is not a generator \(WyckoffTransformerForCrystalGeneration\): its config"):
        check_model_kind(tmp_path, GENERATOR)


@pytest.mark.parametrize("give", ["folder", "samples.jsonl"])
def test_generated_samples_get_predictions_csv_beside_them(regressor, classifier, tmp_path, capsys, give):
    folder = write_samples(tmp_path / "generated", [NACL, PNMA])
    with open(folder / "samples.jsonl", "a") as f:
        f.write('{"space_group": 225, "sites": [["Na", "a"], ["Cl", "a"]]}\n')  # 4a twice: not a crystal
    argument = folder if give == "folder" else folder / "samples.jsonl"
    assert main(["predict", str(argument), "--model", str(regressor), "--model", str(classifier)]) == 0
    assert "samples.jsonl line 3: Fm-3m (225): fixed Wyckoff position(s) a" in capsys.readouterr().err
    table = pd.read_csv(folder / "predictions.csv")
    assert list(table.columns) == ["index", "representation", "band_gap", *(f"p_{c}" for c in CLASSES), "label"]
    assert table["index"].tolist() == [0, 1]
    assert table["representation"].tolist() == [str(NACL), str(PNMA)]
    assert table["band_gap"][1] == pytest.approx(forward_band_gap(regressor, PNMA), abs=1e-6)


def test_cdvae_csv_rows_are_named_by_material_id(regressor, tmp_path, capsys):
    source = tmp_path / "test.csv"
    pd.DataFrame({"material_id": ["mp-22862", "mp-broken"],
                  "cif": [nacl_structure().to(fmt="cif"), "data_x\nnot a cif\n"]}).to_csv(source)
    output = tmp_path / "predictions.csv"
    assert main(["predict", str(source), "--model", str(regressor), "--output", str(output)]) == 0
    assert f"{source}: mp-broken: ERROR StructureParseError" in capsys.readouterr().err
    table = pd.read_csv(output)
    assert table[["name", "representation"]].values.tolist() == [["mp-22862", str(NACL)]]


# ------------------------------------------------------------------------------------------ generate --predict


def test_generate_predict_writes_a_row_per_sample(generator, regressor, classifier, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "-n", "5", "--model", str(generator), "--predict", str(regressor), "--predict",
                 str(classifier), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    samples = load_samples(out).valid
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["index", "representation", "band_gap", *(f"p_{c}" for c in CLASSES), "label"]
    assert table["index"].tolist() == list(range(5))
    assert table["representation"].tolist() == [str(rep) for rep in samples]
    expected = PropertyPredictor.from_pretrained(regressor).predict(samples)
    assert table["band_gap"].tolist() == pytest.approx([row["band_gap"] for row in expected], abs=1e-6)
    assert f"median band_gap {table['band_gap'].median():.3f} eV" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generation"]["predict"] == [str(regressor), str(classifier)]


def test_generate_predict_with_a_bad_model_fails_before_writing(generator, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "-n", "5", "--model", str(generator), "--predict", str(tmp_path / "nope"),
                 "--output-dir", str(out)]) == 2
    assert "no model folder at" in capsys.readouterr().err
    assert not (out / "samples.jsonl").exists()


# ------------------------------------------------------------------------------------------ pipeline


def test_pipeline_takes_representations_structures_cifs_and_paths(regressor, tmp_path):
    predictor = pipeline("crystal-property-prediction", model=str(regressor))
    path = tmp_path / "nacl.cif"
    nacl_structure().to(filename=str(path))
    expected = forward_band_gap(regressor, NACL)
    for crystal in (NACL, nacl_structure(), path.read_text(), str(path)):
        result = predictor(crystal)
        assert result["text"] == "Fm-3m (225): Na 4a, Cl 4b" and result["representation"] == NACL
        assert result["band_gap"] == pytest.approx(expected, abs=1e-6)
    results = predictor([PNMA, NACL], batch_size=1)
    assert [r["representation"] for r in results] == [PNMA, NACL]
    assert results[1]["band_gap"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(StructureParseError, match="item 1: unparseable CIF"):
        predictor([NACL, "data_x\nnot a cif\n"])


# ------------------------------------------------------------------------------------------ baseline


def test_baseline_uses_formula_then_chemical_system_then_global_mean():
    baseline = CompositionFamilyBaseline.fit(["NaCl", "Na2Cl2", "NaCl3", "KBr", "LiF"],
                                             [1.0, 3.0, 6.0, 10.0, math.nan])
    values, levels = baseline.predict(["NaCl", "Na3Cl", "LiF", "KBr"])
    assert values.tolist() == [2.0, pytest.approx(10 / 3), 5.0, 10.0]
    assert levels == ["formula", "chemical_system", "global", "formula"]


# ------------------------------------------------------------------------------------------ benchmark scripts


def test_benchmark_property_scores_model_and_baseline_on_the_same_rows(regressor, classifier, tiny_dataset,
                                                                      capsys):
    from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row

    benchmark = load_script("benchmarks/benchmark_property")
    results = benchmark.main(["--model", str(regressor), "--model", str(classifier), "--dataset", str(tiny_dataset)])
    printed = capsys.readouterr().out
    test = load_wyckoff_dataset(tiny_dataset)["test"]
    truth = [row["band_gap"] for row in test]
    predicted = PropertyPredictor.from_pretrained(regressor).predict([representation_from_row(r) for r in test])
    regression, classification = results
    assert regression["rows"] == classification["rows"] == len(test)
    assert regression["mae"] == pytest.approx(sum(abs(p["band_gap"] - t) for p, t in zip(predicted, truth,
                                                                                          strict=True)) / len(test))
    assert sum(regression["levels"].values()) == len(test)
    assert 0 <= classification["accuracy"] <= 1 and 0 <= classification["baseline_accuracy"] <= 1
    assert f"{1000 * regression['mae']:.1f} | {1000 * regression['baseline_mae']:.1f} | 247 |" in printed


def test_benchmark_conditional_has_every_row(tiny_dataset, regressor, tmp_path, tokenizer, capsys):
    torch.manual_seed(3)
    config = WyckoffTransformerConfig.from_tokenizer(tokenizer, condition_names=["band_gap"], condition_mean=[0.5],
                                                     condition_std=[1.0], condition_embedding_size=4, **TINY)
    conditional = save(WyckoffTransformerForCrystalGeneration(config), tmp_path / "conditional")
    benchmark = load_script("benchmarks/benchmark_conditional")
    rows = benchmark.main(["--model", str(conditional), "--predictor", str(regressor), "--dataset", str(tiny_dataset),
                           "--targets", "0,2", "--num-samples", "16", "--guidance-scale", "1", "2"])
    assert list(rows) == ["train (true values)", "train (predicted)", "unconditional", "band_gap = 0, g = 1",
                          "band_gap = 2, g = 1", "band_gap = 0, g = 2", "band_gap = 2, g = 2"]
    for name in list(rows)[2:]:
        assert rows[name]["samples"] == 16 and rows[name]["q25"] <= rows[name]["median"] <= rows[name]["q75"]
        assert 0 < rows[name]["wyckoff_unique"] <= 1 and rows[name]["mean_nll"] > 0
    assert "| band_gap = 2, g = 2 | 16 |" in capsys.readouterr().out



def test_predict_merges_its_columns_into_a_generated_folders_predictions(generator, regressor, classifier, tmp_path,
                                                                          capsys):
    """``predict FOLDER`` beside ``generate --predict``'s file: the earlier columns stay, the manifest lists both
    models' columns, and the output says it merged; a file that is not such a table is refused, untouched."""
    out = tmp_path / "out"
    assert main(["generate", "-n", "5", "--model", str(generator), "--predict", str(regressor), "--output-dir",
                 str(out)]) == 0
    before = pd.read_csv(out / "predictions.csv")
    capsys.readouterr()
    assert main(["predict", str(out), "--model", str(classifier)]) == 0
    assert f"merged into {out / 'predictions.csv'}, keeping its other columns ['band_gap']" in capsys.readouterr().out
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["index", "representation", "band_gap", *(f"p_{c}" for c in CLASSES), "label"]
    assert table["band_gap"].tolist() == pytest.approx(before["band_gap"].tolist())
    models = json.loads((out / "manifest.json").read_text())["predictions"]["models"]
    assert models == {str(regressor): ["band_gap"], str(classifier): [*(f"p_{c}" for c in CLASSES), "label"]}
    assert main(["predict", str(out), "--model", str(regressor)]) == 0  # the same model again: its column replaced
    assert list(pd.read_csv(out / "predictions.csv").columns) == list(table.columns)
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n1,2\n")
    assert main(["predict", str(out), "--model", str(regressor), "--output", str(notes)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"wyckoff-hf predict: error: {notes} exists and is not a predictions table with columns ['index', "
        "'representation']: pass another --output")
    assert notes.read_text() == "my,own\n1,2\n"


def test_an_empty_samples_file_is_an_error_naming_it_in_predict(regressor, tmp_path, capsys):
    empty = tmp_path / "samples.jsonl"
    empty.write_text("")
    assert main(["predict", str(empty), "--model", str(regressor)]) == 1
    assert f"{empty}: ERROR EmptySamplesError: {empty} holds no samples" in capsys.readouterr().err
