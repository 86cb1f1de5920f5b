"""Validity metrics: Wyckoff-level, realisation, structural and compositional (SMACT).

Structural and compositional validity follow CDVAE (Xie et al., ICLR 2022, arXiv:2110.06197,
``scripts/eval_utils.py`` of github.com/txie-93/cdvae), the definitions later papers (DiffCSP,
FlowMM, MatterGen's "validity" column) report under the same names.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Structure
from smact.screening import smact_validity

from .samples import GeneratedSamples

MIN_DISTANCE = 0.5  # Å, CDVAE's structure_validity cutoff
MIN_VOLUME = 0.1  # Å³, CDVAE's "unrealistically small lattice" cutoff
SMACT_OXIDATION_STATES = "smact14"  # the set SMACT shipped as default when CDVAE defined the metric


def structure_validity(structure: Structure, min_distance: float = MIN_DISTANCE,
                       min_volume: float = MIN_VOLUME) -> bool:
    """CDVAE's structural validity: every interatomic distance ≥ ``min_distance`` and volume ≥ ``min_volume``.

    Distances are pymatgen's periodic (minimum-image) distance matrix, so an atom too close to a
    periodic image of another one also fails. A one-atom cell has no pair and passes on volume alone.
    """
    if structure.volume < min_volume:
        return False
    if len(structure) < 2:
        return True
    distances = structure.distance_matrix
    return bool(distances[~np.eye(len(structure), dtype=bool)].min() >= min_distance)


@lru_cache(maxsize=65536)
def _smact_valid_formula(reduced_formula: str) -> bool:
    return bool(smact_validity(Composition(reduced_formula), use_pauling_test=True, include_alloys=True,
                               oxidation_states_set=SMACT_OXIDATION_STATES))


def composition_validity(composition: Composition | str) -> bool:
    """CDVAE's compositional validity (``smact_validity``), computed with SMACT's own implementation.

    Valid when the composition has one element, or only metals (an alloy), or some assignment of one
    SMACT oxidation state per element makes the reduced integer stoichiometry charge-neutral and passes
    the Pauling electronegativity test (cations less electronegative than anions). Oxidation states are
    SMACT's ``smact14`` set, the default when CDVAE defined the metric (SMACT ≥ 3 defaults to ICSD24).
    Cached by reduced formula, since generated sets repeat compositions.
    """
    composition = Composition(composition) if isinstance(composition, str) else composition
    return _smact_valid_formula(composition.reduced_formula)


def fraction(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``; ``None`` for a fraction of nothing, which is undefined, not 0 or 1."""
    return numerator / denominator if denominator else None


def validity_metrics(samples: GeneratedSamples, structure_metrics: bool = True) -> dict[str, float | int | None]:
    """Fractions with explicit denominators (a fraction of nothing is ``None``, never 0 or 1).

    - ``wyckoff_valid``: samples that parse into a ``WyckoffRepresentation`` (every site exists in its
      group, no 0-dof position reused) / all samples;
    - ``realised``: Wyckoff-valid samples with a 3D structure / Wyckoff-valid samples;
    - ``structural_valid``: realised structures passing ``structure_validity`` / realised structures;
    - ``compositional_valid``: Wyckoff-valid samples passing ``composition_validity`` / Wyckoff-valid;
    - ``valid``: realised structures both structurally and compositionally valid / realised structures
      (CDVAE's "valid").

    With ``structure_metrics=False`` only the first and the fourth are computed.
    """
    valid = samples.valid
    compositional = [composition_validity(rep.composition) for rep in valid]
    metrics: dict[str, float | int | None] = {
        "num_samples": len(samples),
        "num_wyckoff_valid": len(valid),
        "wyckoff_valid": fraction(len(valid), len(samples)),
        "compositional_valid": fraction(sum(compositional), len(valid)),
    }
    if not structure_metrics:
        return metrics
    realised = samples.realised
    structural = [structure_validity(s) for s in realised]
    both = sum(flag and composition_validity(s.composition) for s, flag in zip(realised, structural, strict=True))
    metrics.update({
        "num_realised": len(realised),
        "realised": fraction(len(realised), len(valid)),
        "structural_valid": fraction(sum(structural), len(realised)),
        "valid": fraction(both, len(realised)),
    })
    return metrics
