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

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluation.novelty import canonical
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
    rng = np.random.default_rng(0)
    variants, scale = [], []
    for crystal in crystals:
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


def predict_structures(composition: str | Mapping[str, float] | Any, model, tokenizer, n: int = 100,
                       space_group: int | None = None, max_atoms: int | None = None,
                       temperature: float | None = None, seed: int | None = 0,
                       batch_size: int | None = None,
                       field_temperatures: Mapping[str, float] | None = None) -> list[StructurePrediction]:
    """Sample ``n`` crystals of ``composition`` (a formula, pymatgen ``Composition`` or mapping; reduced to its
    formula unit) and return the distinct ones, likeliest first.

    ``space_group`` fixes the group (else groups come from the model's prior, restricted to those that can hold the
    composition); ``max_atoms`` bounds the atoms per conventional cell (default: the model's, see
    ``generate``); ``temperature`` and ``field_temperatures`` (per field) default to the model's calibrated ones.
    An impossible request (no allowed group can hold any Z ≥ 1 formula units) raises a ``ValueError`` before
    sampling.
    """
    out = model.generate(num_samples=n, composition=formula_unit(composition), space_group=space_group,
                         max_atoms=max_atoms, temperature=temperature, seed=seed, batch_size=batch_size,
                         field_temperatures=field_temperatures)
    counts = Counter(canonical(representation) for representation in tokenizer.decode(out))
    crystals = list(counts)
    scores = crystal_log_probabilities(model, tokenizer, crystals, with_prior=space_group is None)
    ranked = sorted(zip(crystals, scores, strict=True), key=lambda item: (-item[1], str(item[0])))
    return [StructurePrediction(crystal, score, counts[crystal]) for crystal, score in ranked]
