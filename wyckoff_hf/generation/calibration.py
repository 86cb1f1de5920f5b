"""Sampling-temperature calibration on the validation split (the seed paper calibrates T on val).

Criterion: for each candidate temperature, sample ``samples_per_row`` crystals per validation row *in that
row's space group* (so the space-group mix is the validation one and only the model's conditionals are
judged; several per row to lower the sampling noise of the distances), then
measure how far the generated distributions of the number of Wyckoff sites and of distinct elements lie
from the validation ones (sum of the two 1-D Wasserstein distances). The temperature with the smallest
distance wins; ties go to the temperature closest to 1.

``SAMPLES_PER_ROW`` is 16 because 4 was too few on the 714 validation crystals of the binary + ternary set: the
scan's steps (0.03-0.05 between neighbouring temperatures) were within its noise. On the site-count model,
4 per row picked T = 0.8, 16 per row picked 0.9, and 10,000 unconditional samples against the test split agree
with 0.9 (``model_cards/experiments.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..evaluation.distributions import wasserstein_distances
from ..tokenization import WyckoffRepresentation, WyckoffTokenizer

SAMPLES_PER_ROW = 16


@dataclass(frozen=True)
class CalibrationPoint:
    temperature: float
    sites_distance: float
    elements_distance: float

    @property
    def distance(self) -> float:
        return self.sites_distance + self.elements_distance


def distribution_distance(generated: Sequence[WyckoffRepresentation],
                          reference: Sequence[WyckoffRepresentation]) -> tuple[float, float]:
    """Wasserstein distances of (#Wyckoff sites, #distinct elements) between two sets of crystals, as
    ``wyckoff-hf evaluate`` measures them."""
    distances = wasserstein_distances(generated, reference)
    return distances["wasserstein_num_sites"], distances["wasserstein_num_elements"]


def calibrate_temperature(model, tokenizer: WyckoffTokenizer, validation: Sequence[WyckoffRepresentation],
                          temperatures: Sequence[float], seed: int = 0,
                          samples_per_row: int = SAMPLES_PER_ROW) -> tuple[float, list[CalibrationPoint]]:
    """The best temperature for ``model`` on ``validation`` and the whole scan (see the module docstring)."""
    if not validation:
        raise ValueError("temperature calibration needs at least one validation crystal")
    space_groups = [rep.space_group for rep in validation for _ in range(samples_per_row)]
    scan = []
    for temperature in temperatures:
        generated = model.generate(num_samples=len(space_groups), space_group=space_groups,
                                   temperature=temperature, seed=seed, tokenizer=tokenizer)
        scan.append(CalibrationPoint(float(temperature), *distribution_distance(generated, validation)))
    best = min(scan, key=lambda point: (point.distance, abs(point.temperature - 1.0)))
    return best.temperature, scan


def calibrate_checkpoint(model, tokenizer: WyckoffTokenizer, validation_split, temperatures: Sequence[float],
                         rows: int, samples_per_row: int = SAMPLES_PER_ROW, seed: int = 0) -> dict[str, Any]:
    """Calibrate on the first ``rows`` rows of a prepared validation split and set
    ``model.generation_config.temperature``; returns the settings and the scan, JSON-safe (saving is the
    caller's)."""
    from ..data import representation_from_row

    subset = validation_split.select(range(min(rows, len(validation_split))))
    validation = [representation_from_row(row) for row in subset]
    model.generation_config.temperature, points = calibrate_temperature(model, tokenizer, validation, temperatures,
                                                                      seed, samples_per_row)
    return {"temperature": model.generation_config.temperature, "rows": len(validation),
            "samples_per_row": samples_per_row, "seed": seed,
            "scan": [{**asdict(point), "distance": point.distance} for point in points]}
