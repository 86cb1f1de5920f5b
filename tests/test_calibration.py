"""Calibration: the temperature whose samples match the validation statistics best, then the STOP shifts."""

from types import SimpleNamespace

import pytest
import torch

from wyckoff_hf.modeling import WyckoffTransformerConfig, WyckoffTransformerForCrystalGeneration
from wyckoff_hf.tokenization import WyckoffRepresentation
from wyckoff_hf.training.calibration import (
    calibrate_stop_bias,
    calibrate_temperature,
    distribution_distance,
    stop_hazards,
)

ONE_SITE = WyckoffRepresentation.from_sites(225, [("Na", "a")])
TWO_SITES = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
THREE_SITES = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b"), ("K", "c")])


class TemperatureStub:
    """Samples more sites the hotter it runs: 1 site below T = 0.75, 2 up to T = 1.25, 3 above."""

    def __init__(self, field_temperatures=None):
        self.calls = []
        self.generation_config = SimpleNamespace(field_temperatures=field_temperatures)

    def generate(self, num_samples, space_group, temperature, seed, tokenizer, field_temperatures):
        self.calls.append((num_samples, list(space_group), temperature, seed, field_temperatures))
        rep = ONE_SITE if temperature < 0.75 else TWO_SITES if temperature <= 1.25 else THREE_SITES
        return [rep] * num_samples


def test_distribution_distance():
    assert distribution_distance([TWO_SITES] * 3, [TWO_SITES] * 5) == (0.0, 0.0)
    assert distribution_distance([ONE_SITE], [THREE_SITES]) == (2.0, 2.0)


def test_calibration_picks_the_matching_temperature_in_the_validation_groups():
    stub = TemperatureStub()
    best, scan = calibrate_temperature(stub, None, [TWO_SITES, TWO_SITES], [0.5, 1.0, 1.5], seed=7,
                                       samples_per_row=3)
    assert best == 1.0
    assert [point.distance for point in scan] == [2.0, 0.0, 2.0]
    assert stub.calls[0] == (6, [225] * 6, 0.5, 7, None)


def test_calibration_keeps_the_checkpoint_field_temperatures():
    """A checkpoint that tempers the structural fields on its own keeps them while the common temperature is
    scanned (an explicit ``temperature`` alone would override them in ``generate``)."""
    stub = TemperatureStub({"site_symmetry": 2.0})
    calibrate_temperature(stub, None, [TWO_SITES], [0.8, 1.0])
    assert [call[2:] for call in stub.calls] == [(0.8, 0, {"site_symmetry": 2.0}), (1.0, 0, {"site_symmetry": 2.0})]


def test_ties_go_to_the_temperature_closest_to_one():
    best, _ = calibrate_temperature(TemperatureStub(), None, [TWO_SITES], [0.9, 1.0, 1.1])
    assert best == 1.0
    with pytest.raises(ValueError, match="at least one validation crystal"):
        calibrate_temperature(TemperatureStub(), None, [], [1.0])


# ------------------------------------------------------------------------------------------ STOP shifts

TINY = {"space_group_embedding_size": 8, "element_embedding_size": 16, "site_symmetry_embedding_size": 8,
        "enumeration_embedding_size": 4, "derived_feature_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "hidden_dropout_prob": 0.0, "max_sites": 8}


@pytest.fixture(scope="module")
def untrained(tokenizer):
    torch.manual_seed(0)
    return WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(tokenizer, **TINY)).eval()


def test_stop_hazards_count_the_crystals_that_reach_each_position():
    hazards, reached = stop_hazards([2, 2, 3, 5], positions=6, prior_weight=0.0)
    assert reached.tolist() == [4, 4, 4, 2, 1, 1]
    assert hazards[2:].tolist() == [0.5, 0.5, 0.0, 1.0]
    smoothed, _ = stop_hazards([2, 2, 3, 5], positions=6, prior_weight=1.0)
    assert smoothed[2] == pytest.approx(2.5 / 5) and smoothed[4] == pytest.approx(0.5 / 2)


def test_stop_logit_bias_decides_where_samples_stop(untrained, tokenizer):
    """A large shift at position 2 stops every sample after two sites; a large negative one everywhere runs every
    sample to max_sites. The shift comes from generation_config when not given, and bad values are refused."""
    after_two = untrained.generate(num_samples=40, space_group=225, seed=0, tokenizer=tokenizer,
                                   stop_logit_bias=[0.0, -40.0, 40.0, 0.0])
    assert {len(c.sites) for c in after_two} == {2}
    untrained.generation_config.stop_logit_bias = [-40.0]
    try:
        never = untrained.generate(num_samples=40, space_group=221, seed=0, tokenizer=tokenizer, max_sites=6,
                                   constraint_sampling="masked")  # the cap as a mask: STOP is forced there
    finally:
        untrained.generation_config.stop_logit_bias = None
    assert {len(c.sites) for c in never} == {6}
    for bad in ([], [0.0, float("nan")]):
        with pytest.raises(ValueError, match="stop_logit_bias must be a non-empty list of finite numbers"):
            untrained.generate(num_samples=2, seed=0, stop_logit_bias=bad)


def test_stop_calibration_moves_the_sampled_number_of_sites_toward_validation(untrained, tokenizer):
    validation = [TWO_SITES, THREE_SITES] * 30  # positions reached by 50 crystals or more get their own shift
    bias, rounds = calibrate_stop_bias(untrained, tokenizer, validation, temperature=1.0, samples_per_row=8,
                                       rounds=3)
    assert [entry["round"] for entry in rounds] == [0, 1, 2, 3]
    assert len(bias) == untrained.config.max_sites + 1 and bias[2] > 0  # the untrained model rarely stops at 2
    best = min(entry["sites_distance"] for entry in rounds)
    assert best < 0.5 * rounds[0]["sites_distance"]
    shifted = untrained.generate(num_samples=160, space_group=225, seed=0, tokenizer=tokenizer, stop_logit_bias=bias)
    assert distribution_distance(shifted, validation)[0] < rounds[0]["sites_distance"]


def test_stop_calibration_samples_with_the_checkpoint_field_temperatures(untrained, tokenizer, monkeypatch):
    validation = [TWO_SITES, THREE_SITES] * 30
    plain, _ = calibrate_stop_bias(untrained, tokenizer, validation, temperature=1.0, samples_per_row=2, rounds=1)
    monkeypatch.setattr(untrained.generation_config, "field_temperatures", {"site_symmetry": 0.05})
    seen = []
    generate = untrained.generate

    def spy(*args, **kwargs):
        seen.append(untrained.sampling_temperatures(kwargs["temperature"], kwargs["field_temperatures"]))
        return generate(*args, **kwargs)

    monkeypatch.setattr(untrained, "generate", spy)
    cold, _ = calibrate_stop_bias(untrained, tokenizer, validation, temperature=1.0, samples_per_row=2, rounds=1)
    assert seen == [{"element": 1.0, "site_symmetry": 0.05, "enumeration": 1.0}] * 2
    assert len(cold) == len(plain) == untrained.config.max_sites + 1


def test_a_negative_number_of_stop_rounds_is_refused(untrained, tokenizer):
    from wyckoff_hf.training.calibration import calibrate_checkpoint

    with pytest.raises(ValueError, match=r"stop_rounds must be 0 \(no STOP shifts\) or more, got -1"):
        calibrate_checkpoint(untrained, tokenizer, None, [1.0], rows=1, stop_rounds=-1)
