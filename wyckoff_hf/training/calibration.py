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

A temperature scales every decision at once; the number of sites is decided by STOP alone. After the
temperature, ``calibrate_stop_bias`` fits one shift of the STOP logit per position (the number of sites placed
so far) so that the sampled number of sites follows the validation split: the validation hazard
h_k = P(n = k | n ≥ k) against the sampled one, corrected in log-odds for a few rounds of sampling.

Fields the checkpoint tempers on its own (``generation_config.field_temperatures``) keep their temperatures in both
calibrations, which then tune the common temperature of the other fields, and the STOP shifts of that sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..evaluation.distributions import wasserstein_distances
from ..tokenization import WyckoffRepresentation, WyckoffTokenizer

SAMPLES_PER_ROW = 16
STOP_BIAS_ROUNDS = 6
STOP_BIAS_SAMPLES_PER_ROW = 8
STOP_BIAS_MIN_CRYSTALS = 50  # positions reached by fewer validation crystals share the last fitted shift
STOP_BIAS_LIMIT = 3.0  # a shift of the STOP log-odds never exceeds this (a factor of 20 in the odds)


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


def checkpoint_field_temperatures(model) -> dict[str, float] | None:
    """The fields ``model``'s checkpoint samples at their own temperatures (``generate`` would let an explicit
    ``temperature`` override them: calibration passes them back, so that it tunes the sampler the checkpoint uses)."""
    return getattr(model.generation_config, "field_temperatures", None)


def calibrate_temperature(model, tokenizer: WyckoffTokenizer, validation: Sequence[WyckoffRepresentation],
                          temperatures: Sequence[float], seed: int = 0,
                          samples_per_row: int = SAMPLES_PER_ROW) -> tuple[float, list[CalibrationPoint]]:
    """The best temperature for ``model`` on ``validation`` and the whole scan (see the module docstring)."""
    if not validation:
        raise ValueError("temperature calibration needs at least one validation crystal")
    space_groups = [rep.space_group for rep in validation for _ in range(samples_per_row)]
    fixed = checkpoint_field_temperatures(model)
    scan = []
    for temperature in temperatures:
        generated = model.generate(num_samples=len(space_groups), space_group=space_groups,
                                   temperature=temperature, seed=seed, tokenizer=tokenizer, field_temperatures=fixed)
        scan.append(CalibrationPoint(float(temperature), *distribution_distance(generated, validation)))
    best = min(scan, key=lambda point: (point.distance, abs(point.temperature - 1.0)))
    return best.temperature, scan


def calibrate_checkpoint(model, tokenizer: WyckoffTokenizer, validation_split, temperatures: Sequence[float],
                         rows: int, samples_per_row: int = SAMPLES_PER_ROW, seed: int = 0,
                         stop_rounds: int = STOP_BIAS_ROUNDS) -> dict[str, Any]:
    """Calibrate on the first ``rows`` rows of a prepared validation split: set
    ``model.generation_config.temperature`` and, with ``stop_rounds`` > 0, ``stop_logit_bias`` at that temperature;
    returns the settings and the scans, JSON-safe (saving is the caller's)."""
    from ..data import representation_from_row

    if stop_rounds < 0:
        raise ValueError(f"stop_rounds must be 0 (no STOP shifts) or more, got {stop_rounds}")
    subset = validation_split.select(range(min(rows, len(validation_split))))
    validation = [representation_from_row(row) for row in subset]
    model.generation_config.stop_logit_bias = None  # the temperature is chosen without shifts
    model.generation_config.temperature, points = calibrate_temperature(model, tokenizer, validation, temperatures,
                                                                      seed, samples_per_row)
    calibration = {"temperature": model.generation_config.temperature, "rows": len(validation),
                   "samples_per_row": samples_per_row, "seed": seed,
                   "scan": [{**asdict(point), "distance": point.distance} for point in points]}
    if stop_rounds > 0:
        bias, rounds = calibrate_stop_bias(model, tokenizer, validation, model.generation_config.temperature, seed,
                                           rounds=stop_rounds)
        model.generation_config.stop_logit_bias = bias
        calibration["stop"] = {"stop_logit_bias": bias, "samples_per_row": STOP_BIAS_SAMPLES_PER_ROW,
                               "rounds": rounds}
    return calibration


def stop_hazards(site_counts: Sequence[int], positions: int, prior_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """P(STOP after k sites | k sites placed) for k < ``positions``, and the number of crystals reaching each k.

    Smoothed toward 1/2 with ``prior_weight`` pseudo-crystals, so that no hazard is 0 or 1; two sets compared in
    log-odds get weights in proportion to their sizes, so that positions neither set stops at compare equal."""
    counts = np.bincount(np.asarray(site_counts, dtype=int), minlength=positions + 1)
    reached = counts[::-1].cumsum()[::-1][:positions]
    return (counts[:positions] + prior_weight / 2) / (reached + prior_weight), reached


def calibrate_stop_bias(model, tokenizer: WyckoffTokenizer, validation: Sequence[WyckoffRepresentation],
                        temperature: float, seed: int = 0, samples_per_row: int = STOP_BIAS_SAMPLES_PER_ROW,
                        rounds: int = STOP_BIAS_ROUNDS) -> tuple[list[float], list[dict[str, float]]]:
    """STOP-logit shifts per position that make the sampled #sites follow ``validation`` (module docstring).

    Samples are drawn in the validation crystals' space groups at ``temperature``, as for the temperature. Each
    round adds logit(h_val) − logit(h_sampled) to the shift of every position that at least
    ``STOP_BIAS_MIN_CRYSTALS`` validation crystals reach; later positions take the last such shift. Returns the
    shifts of the round with the smallest W1 #sites to validation (``generation_config.stop_logit_bias``; all 0
    when no round beat sampling without shifts) and the W1 #sites of every round, round 0 without shifts.
    """
    if not validation:
        raise ValueError("STOP calibration needs at least one validation crystal")
    positions = model.config.max_sites + 1
    target, reached = stop_hazards([len(rep.sites) for rep in validation], positions, 1.0)
    fitted = max(1, int((reached >= STOP_BIAS_MIN_CRYSTALS).sum()))
    space_groups = [rep.space_group for rep in validation for _ in range(samples_per_row)]
    bias = np.zeros(positions)
    fixed = checkpoint_field_temperatures(model)
    history, tried = [], []
    for round_ in range(rounds + 1):
        generated = model.generate(num_samples=len(space_groups), space_group=space_groups, temperature=temperature,
                                   seed=seed, tokenizer=tokenizer, stop_logit_bias=bias.tolist(),
                                   field_temperatures=fixed)
        history.append({"round": round_, "sites_distance": distribution_distance(generated, validation)[0]})
        tried.append([round(float(value), 4) for value in bias])
        if round_ == rounds:
            break
        sampled, _ = stop_hazards([len(rep.sites) for rep in generated], positions, samples_per_row)
        step = np.log(target / (1 - target)) - np.log(sampled / (1 - sampled))
        bias[:fitted] = np.clip(bias[:fitted] + step[:fitted], -STOP_BIAS_LIMIT, STOP_BIAS_LIMIT)
        bias[fitted:] = bias[fitted - 1]
    best = min(range(len(history)), key=lambda i: history[i]["sites_distance"])  # a round may overshoot
    return tried[best], history
