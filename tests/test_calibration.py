"""Temperature calibration picks the temperature whose samples match the validation statistics best."""

import pytest

from wyckoff_hf.generation.calibration import calibrate_temperature, distribution_distance
from wyckoff_hf.tokenization import WyckoffRepresentation

ONE_SITE = WyckoffRepresentation.from_sites(225, [("Na", "a")])
TWO_SITES = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b")])
THREE_SITES = WyckoffRepresentation.from_sites(225, [("Na", "a"), ("Cl", "b"), ("K", "c")])


class TemperatureStub:
    """Samples more sites the hotter it runs: 1 site below T = 0.75, 2 up to T = 1.25, 3 above."""

    def __init__(self):
        self.calls = []

    def generate(self, num_samples, space_group, temperature, seed, tokenizer):
        self.calls.append((num_samples, list(space_group), temperature, seed))
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
    assert stub.calls[0] == (6, [225] * 6, 0.5, 7)


def test_ties_go_to_the_temperature_closest_to_one():
    best, _ = calibrate_temperature(TemperatureStub(), None, [TWO_SITES], [0.9, 1.0, 1.1])
    assert best == 1.0
    with pytest.raises(ValueError, match="at least one validation crystal"):
        calibrate_temperature(TemperatureStub(), None, [], [1.0])
