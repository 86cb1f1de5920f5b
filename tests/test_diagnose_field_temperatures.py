"""scripts/diagnostics/diagnose_field_temperatures.py: each head's held-out cross-entropy at each temperature."""

import numpy as np
import pytest
import torch
from conftest import TINY_DATASET_MAX_SITES, load_script

from wyckoff_hf.data import load_wyckoff_dataset, representation_from_row
from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration

TINY = {"space_group_embedding_size": 8, "element_embedding_size": 16, "site_symmetry_embedding_size": 8,
        "enumeration_embedding_size": 4, "derived_feature_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "hidden_dropout_prob": 0.0,
        "max_sites": TINY_DATASET_MAX_SITES}


@pytest.fixture(scope="module")
def diagnose():
    return load_script("diagnostics/diagnose_field_temperatures")


@pytest.fixture(scope="module")
def model(tokenizer) -> WyckoffTransformerForCrystalGeneration:
    torch.manual_seed(0)
    return WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY)).eval()


@pytest.fixture(scope="module")
def crystals(tiny_dataset) -> list:
    return [representation_from_row(row) for row in load_wyckoff_dataset(str(tiny_dataset))["train"]]


def test_temperature_one_gives_the_per_field_losses_of_forward(diagnose, model, tokenizer, crystals):
    scores = diagnose.field_cross_entropies(model, tokenizer, crystals, [0.5, 1.0])
    with torch.no_grad():
        output = model(**tokenizer(crystals, return_tensors="pt"))
    for field in ("element", "site_symmetry", "enumeration"):
        assert scores[field][1] == pytest.approx(float(output[f"{field}_loss"]), abs=1e-5), field
        assert scores[field][0] != pytest.approx(scores[field][1], abs=1e-3)


def test_a_head_twice_as_sharp_scores_at_twice_the_temperature(diagnose, model, tokenizer, crystals):
    """Dividing the logits by T is the whole of the tempering: a head with weights and bias doubled scores at T = 2
    what the original scores at T = 1, and only that head's scores change."""
    sharp = WyckoffTransformerForCrystalGeneration(model.config).eval()
    sharp.load_state_dict(model.state_dict())
    with torch.no_grad():
        for parameter in sharp.heads["site_symmetry"].parameters():
            parameter.mul_(2.0)
    original = diagnose.field_cross_entropies(model, tokenizer, crystals, [1.0, 2.0])
    doubled = diagnose.field_cross_entropies(sharp, tokenizer, crystals, [1.0, 2.0])
    assert doubled["site_symmetry"][1] == pytest.approx(original["site_symmetry"][0], abs=1e-5)
    np.testing.assert_allclose(doubled["element"], original["element"], atol=1e-6)


def test_the_table_names_the_lowest_temperature_and_scores_the_sampling_ones(diagnose, model, tokenizer,
                                                                              tiny_dataset, tmp_path, capsys):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    scores = diagnose.main(["--model", str(tmp_path), "--dataset", str(tiny_dataset), "--temperatures", "0.5,1,2",
                            "--field-temperature", "site_symmetry=2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "| field | T = 0.5 | T = 1 | T = 2 | lowest at |"
    row = next(line for line in lines if line.startswith("| element |"))
    assert row.endswith(f"| T = {[0.5, 1, 2][int(np.argmin(scores['element'][:3]))]:g} |")
    assert lines[-1] == (f"at the sampling temperatures: element {scores['element'][1]:.4f} (T = 1), "
                         f"site_symmetry {scores['site_symmetry'][2]:.4f} (T = 2), "
                         f"enumeration {scores['enumeration'][1]:.4f} (T = 1)")


@pytest.mark.parametrize(("value", "message"), [("0.5,hot", "comma-separated numbers"),
                                                ("0,1", "must be positive and finite")])
def test_bad_temperatures_are_refused(diagnose, value, message, capsys):
    with pytest.raises(SystemExit):
        diagnose.parse_args(["--model", "m", "--dataset", "d", "--temperatures", value])
    assert message in capsys.readouterr().err


def test_a_missing_split_is_named(diagnose, model, tokenizer, tiny_dataset, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has no 'holdout' split; it has \['test', 'train', 'validation'\]"):
        diagnose.main(["--model", str(tmp_path), "--dataset", str(tiny_dataset), "--split", "holdout"])
