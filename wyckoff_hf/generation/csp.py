"""Crystal structure prediction: the likeliest Wyckoff representations of a given composition.

    predictions = predict_structures("SrTiO3", model, tokenizer, n=100)  # optionally space_group=221
    predictions[0].representation, predictions[0].log_probability

Sampling is ``model.generate(composition=...)``: masks keep the composition reachable at every step, so every
sample holds exactly Z formula units of it (Z ≥ 1, at most ``max_atoms`` atoms per conventional cell). Those masks
renormalise each step, so the sampler's scores are not the model's probabilities, and one crystal can be sampled in
several labellings (the affine normalizer's equivalent choices of letters, each a different sequence). The
samples are therefore deduplicated by canonical form and each distinct crystal is scored by the model itself:
log p(S) + log Σ p(labelling | S) over its distinct labellings (teacher-forced ``forward``, temperature 1; estimated
from 16 of them where there are more), its probability as a crystal, which orders crystals as the model's
conditional p(crystal | composition) does (the two differ by a constant). With a given space group the constant
log p(S) is left out (the prior may never have seen that group).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tokenization import WyckoffRepresentation, space_group_table
from ..tokenization.representation import electronegativity_key

SCORING_BATCH = 64  # crystals per teacher-forced forward pass, of similar sizes
MAX_SCORED_LABELLINGS = 16


@dataclass(frozen=True)
class StructurePrediction:
    """One predicted crystal: its canonical representation, the model's log-probability of the crystal (all its
    labellings, see the module docstring) and how many of the samples were this crystal (for
    ``search.search_structures``: how many of its labellings the search reached)."""

    representation: WyckoffRepresentation
    log_probability: float
    count: int


def formula_unit(composition: str | Mapping[str, float] | Any) -> dict[str, int]:
    """The reduced formula unit as integer counts: ``"Sr2Ti2O6"`` → ``{"Sr": 1, "Ti": 1, "O": 3}``.

    Accepts a formula, a pymatgen ``Composition`` or a mapping; fractional amounts (a disordered composition) and
    unparseable formulas raise a ``ValueError`` naming the input."""
    from pymatgen.core import Composition, Element

    try:
        reduced = Composition(composition).reduced_composition
    except Exception as err:  # pymatgen raises ValueError, KeyError, TypeError... for what it cannot parse
        raise ValueError(f"composition {composition!r} is not a chemical formula ({err})") from None
    counts = {getattr(element, "symbol", str(element)): amount for element, amount in reduced.items()}
    unknown = [symbol for symbol in counts if not Element.is_valid_symbol(symbol)]
    if unknown:
        raise ValueError(f"composition {composition!r} is not a chemical formula (unknown elements {unknown})")
    if not counts or any(amount <= 0 or abs(amount - round(amount)) > 1e-6 for amount in counts.values()):
        raise ValueError(f"composition {composition!r} must have whole, positive numbers of atoms per formula unit, "
                         f"got {counts}")
    return {element: round(amount) for element, amount in counts.items()}


def labellings(representation: WyckoffRepresentation) -> list[WyckoffRepresentation]:
    """The distinct labellings of one crystal (its relabellings by the affine normalizer), each with its sites in
    canonical order: the different sequences the model can produce for that crystal."""
    table = space_group_table(representation.space_group)
    letters = np.array([table.letter_index(site.letter) for site in representation.sites])
    elements = [site.element for site in representation.sites]
    distinct = {tuple(sorted(zip(elements, row.tolist(), strict=True),
                             key=lambda site: (*electronegativity_key(site[0]), site[1])))
                for row in np.unique(table.relabelling_indices[:, letters], axis=0)}
    return [WyckoffRepresentation.from_sites(representation.space_group,
                                             [(element, table.positions[index].letter) for element, index in sites],
                                             canonical=False) for sites in sorted(distinct)]


def sequence_log_probabilities(model, tokenizer, representations: Sequence[WyckoffRepresentation],
                               with_prior: bool) -> list[float]:
    """Teacher-forced log p(sites | S) of each representation as given (one labelling), plus log p(S) under the
    model's space-group prior when ``with_prior``."""
    import torch

    prior = model.space_group_prior()
    log_prior = (prior / prior.sum()).log()
    # forward costs (sites + 1)² tokens per crystal at the batch's longest: batch crystals of similar sizes
    order = sorted(range(len(representations)), key=lambda i: len(representations[i].sites))
    scores = [0.0] * len(representations)
    for start in range(0, len(order), SCORING_BATCH):
        indices = order[start:start + SCORING_BATCH]
        batch = tokenizer([representations[i] for i in indices], return_tensors="pt").to(model.device)
        with torch.no_grad():
            log_likelihood = model(**batch, return_loss=False).log_likelihood
        if with_prior:
            log_likelihood = log_likelihood + log_prior[batch["space_group_ids"][:, 0]].to(log_likelihood.dtype)
        for index, value in zip(indices, log_likelihood.tolist(), strict=True):
            scores[index] = value
    return scores


def crystal_log_probabilities(model, tokenizer, crystals: Sequence[WyckoffRepresentation],
                              with_prior: bool) -> list[float]:
    """The model's log-probability of each crystal: log-sum-exp over its distinct labellings.

    A crystal with more than ``MAX_SCORED_LABELLINGS`` labellings (low-symmetry groups with many equivalent 0-dof
    positions: P-1 can have hundreds) gets the unbiased estimate from a fixed random subset of them
    (log of count × mean probability), which bounds the scoring cost per crystal."""
    variants, scale = [], []
    for crystal in crystals:
        rng = np.random.default_rng(0)  # per crystal: its score does not depend on the others scored with it
        options = labellings(crystal)
        if len(options) > MAX_SCORED_LABELLINGS:
            chosen = rng.choice(len(options), MAX_SCORED_LABELLINGS, replace=False)
            scale.append(np.log(len(options) / MAX_SCORED_LABELLINGS))
            options = [options[i] for i in sorted(chosen)]
        else:
            scale.append(0.0)
        variants.append(options)
    scores = iter(sequence_log_probabilities(model, tokenizer, [v for group in variants for v in group], with_prior))
    return [float(np.logaddexp.reduce([next(scores) for _ in group]) + extra)
            for group, extra in zip(variants, scale, strict=True)]


class DistinctCrystals:
    """The distinct crystals of a sampling run, each with its score and count, at most ``capacity`` of them (``None``:
    all), so that any number of samples takes bounded memory.

    When more turn up, the least likely are dropped and the best dropped score becomes a floor that a new crystal
    must beat. The floor only rises and a crystal's score is fixed, so a dropped crystal never comes back and a
    crystal kept at the end was kept since it was first sampled: its count is exact."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity, self.drawn, self.dropped, self.floor = capacity, 0, 0, -math.inf
        self._scores: dict[WyckoffRepresentation, float] = {}
        self._counts: Counter[WyckoffRepresentation] = Counter()

    def __len__(self) -> int:
        return len(self._scores)

    def add(self, crystals: Sequence[WyckoffRepresentation],
            score: Callable[[list[WyckoffRepresentation]], list[float]]) -> None:
        """Count a chunk of canonical crystals; ``score`` gives the log-probabilities of the ones not yet kept. An
        interrupted ``score`` leaves the store as it was (``drawn`` counts only the chunks taken in)."""
        chunk = Counter(crystals)
        new = [crystal for crystal in chunk if crystal not in self._scores]
        values = score(new)
        self.drawn += len(crystals)
        for crystal, value in zip(new, values, strict=True):
            if value > self.floor:
                self._scores[crystal] = value
        for crystal, count in chunk.items():
            if crystal in self._scores:
                self._counts[crystal] += count
        if self.capacity is not None and len(self._scores) > self.capacity:
            ranked = self._ranked()
            self.floor = max(self.floor, ranked[self.capacity][1])
            for crystal, _ in ranked[self.capacity:]:
                del self._scores[crystal], self._counts[crystal]
                self.dropped += 1

    def _ranked(self) -> list[tuple[WyckoffRepresentation, float]]:
        return sorted(self._scores.items(), key=lambda item: (-item[1], str(item[0])))

    def predictions(self) -> list[StructurePrediction]:
        """The kept crystals, likeliest first."""
        return [StructurePrediction(crystal, value, self._counts[crystal]) for crystal, value in self._ranked()]


def predict_structures(composition: str | Mapping[str, float] | Any, model, tokenizer, n: int = 100,
                       space_group: int | None = None, max_atoms: int | None = None,
                       temperature: float | None = None, seed: int | None = 0,
                       batch_size: int | None = None,
                       field_temperatures: Mapping[str, float] | None = None,
                       found: DistinctCrystals | None = None, progress: bool = False) -> list[StructurePrediction]:
    """Sample ``n`` crystals of ``composition`` (a formula, pymatgen ``Composition`` or mapping; reduced to its
    formula unit) and return the distinct ones, likeliest first.

    ``space_group`` fixes the group (else groups come from the model's prior, restricted to those that can hold the
    composition); ``max_atoms`` bounds the atoms per conventional cell (default: the model's, see
    ``generate``); ``temperature`` and ``field_temperatures`` (per field) default to the model's calibrated ones.
    Samples are drawn in chunks of ``batch_size`` (``sample_chunks``), each scored as it comes into ``found`` (by
    default one that keeps every distinct crystal; pass a bounded ``DistinctCrystals`` to keep the likeliest ones
    in bounded memory, and to read what was found if sampling is interrupted).
    An impossible request (no allowed group can hold any Z ≥ 1 formula units) raises a ``ValueError`` before
    sampling.
    """
    from .jobs import sample_chunks

    found = DistinctCrystals() if found is None else found
    chunks = sample_chunks(model, tokenizer, n, space_group, seed, batch_size, progress,
                           composition=formula_unit(composition), max_atoms=max_atoms, temperature=temperature,
                           field_temperatures=field_temperatures)
    for representations, _ in chunks:
        found.add([representation.canonical() for representation in representations],
                  lambda crystals: crystal_log_probabilities(model, tokenizer, crystals,
                                                             with_prior=space_group is None))
    return found.predictions()
