"""Requests outside what a model was trained on get a one-line warning: conditions beyond the training range,
compositions with too few or too many elements or with elements no training crystal holds."""

from __future__ import annotations

import json

import pytest

from wyckoff_hf.cli import main
from wyckoff_hf.generation import PRETRAINED
from wyckoff_hf.generation.jobs import load_generator
from wyckoff_hf.generation.support import check_composition_support, check_condition_support

CONDITIONAL = PRETRAINED / "mp20-biternary-band-gap-conditional"


@pytest.fixture(scope="module")
def generator():
    return load_generator()[0]


@pytest.fixture(scope="module")
def conditional():
    return load_generator(CONDITIONAL)[0]


@pytest.mark.parametrize(("value", "warning"), [
    (-5.0, "--condition band_gap=-5: band_gap cannot be negative; the model never saw such a crystal"),
    (1000.0, "--condition band_gap=1000 is outside the training range [0, 7.94] (training_summary.json): the samples "
             "extrapolate"),
    (3.0, None), (0.0, None), (7.94, None),
])
def test_a_condition_outside_the_training_range_is_named(conditional, value, warning):
    assert check_condition_support(conditional, {"band_gap": value}) == ([] if warning is None else [warning])


def test_without_a_recorded_range_the_bound_is_four_standard_deviations(conditional, tmp_path):
    """A checkpoint whose summary records no range (one trained before the record) is judged by its config."""
    conditional.save_pretrained(tmp_path)
    reloaded = type(conditional).from_pretrained(tmp_path)
    assert not (tmp_path / "training_summary.json").exists()
    assert check_condition_support(reloaded, {"band_gap": 5.0}) == []  # mean 0.62 + 4 × 1.30 = 5.83
    assert check_condition_support(reloaded, {"band_gap": 6.0}) == [
        "--condition band_gap=6 is more than 4 standard deviations from the training mean 0.623 (std 1.3, config.json; "
        "no training range recorded): the samples extrapolate"]


@pytest.mark.parametrize(("composition", "warning"), [
    ("O2", "O2 has 1 element(s); the model was trained on crystals of 2-3 (generation_config.num_elements_range)"),
    ("(NH4)2SO4", "(NH4)2SO4 has 4 element(s); the model was trained on crystals of 2-3 "
                  "(generation_config.num_elements_range)"),
    ("He2O", "He2O: no training crystal of the model holds He (training_summary.json element_counts)"),
    ("Pu2O3", None),  # Pu is in 31 of the 6,426 training crystals
    ("SrTiO3", None),
])
def test_a_composition_outside_the_training_data_is_named(generator, composition, warning):
    assert check_composition_support(generator, composition) == ([] if warning is None else [warning])


def test_the_recorded_elements_are_those_of_the_training_split():
    summary = json.loads((PRETRAINED / "mp20-biternary" / "training_summary.json").read_text())
    counts = summary["element_counts"]
    assert len(counts) == 85 and counts["Pu"] == 31 and counts["Xe"] == 1
    assert not {"He", "Ne", "Ar", "Kr", "Rn"} & set(counts)


def test_csp_and_generate_print_the_warning_and_go_on(tmp_path, capsys):
    assert main(["csp", "He2O", "-n", "4", "--output-dir", str(tmp_path / "csp")]) == 0
    assert ("wyckoff-hf csp: warning: He2O: no training crystal of the model holds He (training_summary.json "
            "element_counts)") in capsys.readouterr().err.splitlines()
    assert main(["generate", "-n", "2", "--model", str(CONDITIONAL), "--condition", "band_gap=1000",
                 "--output-dir", str(tmp_path / "generated")]) == 0
    assert ("wyckoff-hf generate: warning: --condition band_gap=1000 is outside the training range [0, 7.94] "
            "(training_summary.json): the samples extrapolate") in capsys.readouterr().err.splitlines()
