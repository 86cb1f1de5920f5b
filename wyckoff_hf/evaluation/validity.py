"""Validity metrics: Wyckoff-level, realisation, structural and compositional (SMACT).

Structural and compositional validity follow CDVAE (Xie et al., ICLR 2022, arXiv:2110.06197,
``scripts/eval_utils.py`` of github.com/txie-93/cdvae), the definitions later papers (DiffCSP,
FlowMM, MatterGen's "validity" column) report under the same names.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Composition, Structure
from smact.screening import smact_validity

from ..tokenization.time_limit import TimeLimitExceeded, time_limit
from .samples import GeneratedSamples

MIN_DISTANCE = 0.5  # Å, CDVAE's structure_validity cutoff
MIN_VOLUME = 0.1  # Å³, CDVAE's "unrealistically small lattice" cutoff
SMACT_OXIDATION_STATES = "smact14"  # the set SMACT shipped as default when CDVAE defined the metric
SMACT_TIMEOUT = 10.0  # seconds per formula: SMACT enumerates oxidation states (55 s for one 10-element sample)


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


_smact_cache: dict[tuple[str, float | None], bool | None] = {}


def composition_validity(composition: Composition | str, timeout: float | None = SMACT_TIMEOUT) -> bool | None:
    """CDVAE's compositional validity (``smact_validity``), computed with SMACT's own implementation.

    Valid when the composition has one element, or only metals (an alloy), or some assignment of one
    SMACT oxidation state per element makes the reduced integer stoichiometry charge-neutral and passes
    the Pauling electronegativity test (cations less electronegative than anions). Oxidation states are
    SMACT's ``smact14`` set, the default when CDVAE defined the metric (SMACT ≥ 3 defaults to ICSD24).
    An element SMACT has no data for (Lv, Og...) has no oxidation state, so its compositions are invalid.
    SMACT's search grows exponentially with the number of elements, so it gets ``timeout`` seconds:
    ``None`` means it did not finish (unknown, reported as such). Cached by reduced formula, since generated
    sets repeat compositions.
    """
    formula = Composition(composition).reduced_formula
    key = (formula, timeout)
    if key not in _smact_cache:
        try:
            with time_limit(timeout):
                _smact_cache[key] = bool(smact_validity(Composition(formula), use_pauling_test=True,
                                                        include_alloys=True,
                                                        oxidation_states_set=SMACT_OXIDATION_STATES))
        except TimeLimitExceeded:
            _smact_cache[key] = None
        except (KeyError, NameError):  # SMACT has no data for an element such as Lv or Db (SMACT 4 raises a
            _smact_cache[key] = False   # KeyError, SMACT 3 a NameError): it has no oxidation state, never balanced
    return _smact_cache[key]


def fraction(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``; ``None`` for a fraction of nothing, which is undefined, not 0 or 1."""
    return numerator / denominator if denominator else None


def validity_metrics(samples: GeneratedSamples, structure_metrics: bool = True,
                     smact_timeout: float | None = SMACT_TIMEOUT) -> dict[str, float | int | None]:
    """Fractions with explicit denominators (a fraction of nothing is ``None``, never 0 or 1).

    - ``wyckoff_valid``: samples that parse into a ``WyckoffRepresentation`` (every site exists in its
      group, no 0-dof position reused) / all samples;
    - ``realised``: Wyckoff-valid samples with a 3D structure / Wyckoff-valid samples (``None`` when the
      samples were never realised: not measured is not 0 %);
    - ``structural_valid``: realised structures passing ``structure_validity`` / realised structures;
    - ``compositional_valid``: Wyckoff-valid samples passing ``composition_validity`` / Wyckoff-valid
      samples SMACT decided within ``smact_timeout`` (the others are counted in
      ``num_compositional_timeouts``);
    - ``valid``: realised structures both structurally and compositionally valid / realised structures
      whose composition SMACT decided (CDVAE's "valid");
    - ``symmetry_failed``: Wyckoff-valid samples without a structure because every realisation read back as
      another crystal (a supergroup, other sites) / Wyckoff-valid samples (``None`` when never realised).

    With ``structure_metrics=False`` only the first and the fourth are computed.
    """
    valid = samples.valid
    compositional = [composition_validity(rep.composition, smact_timeout) for rep in valid]
    decided = [flag for flag in compositional if flag is not None]
    metrics: dict[str, float | int | None] = {
        "num_samples": len(samples),
        "num_wyckoff_valid": len(valid),
        "wyckoff_valid": fraction(len(valid), len(samples)),
        "compositional_valid": fraction(sum(decided), len(decided)),
        "num_compositional_timeouts": len(compositional) - len(decided),
    }
    if not structure_metrics:
        return metrics
    realised = samples.realised
    symmetry_failed = [i for i in samples.symmetry_failures if samples.representations[i] is not None]
    structural = [structure_validity(s) for s in realised]
    both = [flag and composition_validity(s.composition, smact_timeout) for s, flag in zip(realised, structural,
                                                                                          strict=True)]
    metrics.update({
        "num_realised": len(realised),
        "realised": fraction(len(realised), len(valid)) if samples.has_structures else None,
        "structural_valid": fraction(sum(structural), len(realised)),
        "valid": fraction(sum(flag is True for flag in both), sum(flag is not None for flag in both)),
        "num_symmetry_failed": len(symmetry_failed),
        "symmetry_failed": fraction(len(symmetry_failed), len(valid)) if samples.has_structures else None,
    })
    return metrics
