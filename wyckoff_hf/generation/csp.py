"""Crystal structure prediction: the likeliest Wyckoff representations of a given composition.

    predictions = predict_structures("SrTiO3", model, tokenizer, n=100)  # optionally space_group=221
    predictions[0].representation, predictions[0].log_probability

Sampling is ``model.generate(composition=...)``: masks keep the composition reachable at every step, so every
sample holds exactly Z formula units of it (Z ≥ 1, at most ``max_atoms`` atoms per conventional cell). Those masks
renormalise each step, so the sampler's scores are not the model's probabilities. Each distinct crystal is therefore
ranked by the model itself: log p(S) + log p(sites | S), teacher-forced (``forward``, temperature 1), which orders
crystals as the model's conditional p(crystal | composition) does (the two differ by a constant). With a given
space group the constant log p(S) is left out (the group may be one the prior never saw). Samples are deduplicated
by canonical form (relabellings of one crystal are one prediction), each keeping its best-scored labelling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluation.novelty import canonical
from ..tokenization import WyckoffRepresentation

SCORING_BATCH = 512  # crystals per teacher-forced forward pass


@dataclass(frozen=True)
class StructurePrediction:
    """One predicted crystal: its canonical representation, the model's log-probability of it (see the module
    docstring) and how many of the samples were this crystal."""

    representation: WyckoffRepresentation
    log_probability: float
    count: int


def formula_unit(composition: str | Mapping[str, float] | Any) -> dict[str, int]:
    """The reduced formula unit as integer counts: ``"Sr2Ti2O6"`` → ``{"Sr": 1, "Ti": 1, "O": 3}``.

    Accepts a formula, a pymatgen ``Composition`` or a mapping; fractional amounts (a disordered composition) and
    unparseable formulas raise a ``ValueError`` naming the input."""
    from pymatgen.core import Composition

    try:
        reduced = Composition(composition).reduced_composition
    except Exception as err:  # pymatgen raises ValueError, KeyError, TypeError... for what it cannot parse
        raise ValueError(f"composition {composition!r} is not a chemical formula ({err})") from None
    counts = {str(element): amount for element, amount in reduced.items()}
    if not counts or any(amount <= 0 or abs(amount - round(amount)) > 1e-6 for amount in counts.values()):
        raise ValueError(f"composition {composition!r} must have whole, positive numbers of atoms per formula unit, "
                         f"got {counts}")
    return {element: round(amount) for element, amount in counts.items()}


def model_log_probabilities(model, tokenizer, representations: Sequence[WyckoffRepresentation],
                            with_prior: bool) -> list[float]:
    """Teacher-forced log p(sites | S) of each representation (as given, in its own labelling), plus log p(S)
    under the model's space-group prior when ``with_prior``."""
    import torch

    prior = model.space_group_prior()
    log_prior = (prior / prior.sum()).log()
    scores: list[float] = []
    for start in range(0, len(representations), SCORING_BATCH):
        chunk = representations[start:start + SCORING_BATCH]
        batch = tokenizer(list(chunk), return_tensors="pt").to(model.device)
        with torch.no_grad():
            log_likelihood = model(**batch, return_loss=False).log_likelihood
        if with_prior:
            log_likelihood = log_likelihood + log_prior[batch["space_group_ids"][:, 0]].to(log_likelihood.dtype)
        scores += log_likelihood.tolist()
    return scores


def rank_predictions(representations: Sequence[WyckoffRepresentation],
                     scores: Sequence[float]) -> list[StructurePrediction]:
    """Distinct crystals (canonical forms) by decreasing score, each with its best sample's score and its count."""
    best: dict[WyckoffRepresentation, list] = {}
    for representation, score in zip(representations, scores, strict=True):
        key = canonical(representation)
        entry = best.setdefault(key, [-math.inf, 0])
        entry[0], entry[1] = max(entry[0], score), entry[1] + 1
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], str(item[0])))
    return [StructurePrediction(rep, float(score), count) for rep, (score, count) in ranked]


def predict_structures(composition: str | Mapping[str, float] | Any, model, tokenizer, n: int = 100,
                       space_group: int | None = None, max_atoms: int | None = None,
                       temperature: float | None = None, seed: int | None = 0,
                       batch_size: int | None = None) -> list[StructurePrediction]:
    """Sample ``n`` crystals of ``composition`` (a formula, pymatgen ``Composition`` or mapping; reduced to its
    formula unit) and return the distinct ones, likeliest first.

    ``space_group`` fixes the group (else groups come from the model's prior, restricted to those that can hold the
    composition); ``max_atoms`` bounds the atoms per conventional cell (default: the model's, see
    ``generate``); ``temperature`` defaults to the model's calibrated one. An impossible request (no allowed group
    can hold any Z ≥ 1 formula units) raises a ``ValueError`` before sampling.
    """
    out = model.generate(num_samples=n, composition=formula_unit(composition), space_group=space_group,
                         max_atoms=max_atoms, temperature=temperature, seed=seed, batch_size=batch_size)
    representations = tokenizer.decode(out)
    return rank_predictions(representations,
                            model_log_probabilities(model, tokenizer, representations, space_group is None))
