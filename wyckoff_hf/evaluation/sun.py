"""S.U.N. and S.S.U.N.: the fractions of samples that are stable, unique and novel (and symmetric).

As MatterGen (Zeni et al., Nature 2025) and the WyckoffTransformer authors (Kazeev et al., ICML 2025)
define them: of the samples that have an energy, the fraction within ``threshold`` eV/atom of the hull
(0.08 by default) whose relaxed structure is unique in the set (the first of its group of mutual
``StructureMatcher`` matches) and novel (no match among the known structures). S.S.U.N. additionally asks
that the relaxed structure is not P1: generating symmetric crystals is the point of a Wyckoff model.
Every fraction comes with a 95 % Wilson score interval (scipy), since sample sets of 10²–10³ leave
percent-level uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

STABLE = 0.0  # eV/atom above hull
METASTABLE = 0.08  # eV/atom, the S.U.N. threshold of the WyckoffTransformer paper


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> list[float] | None:
    """The Wilson score interval of a binomial fraction, or ``None`` for an empty set."""
    if total == 0:
        return None
    interval = binomtest(successes, total).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(interval.low), float(interval.high)]


def fraction_with_interval(flags: Sequence[bool]) -> dict[str, float | list[float] | int | None]:
    """``{"value", "interval", "count", "total"}`` of a list of per-sample flags."""
    count, total = int(sum(flags)), len(flags)
    return {"value": count / total if total else None, "interval": wilson_interval(count, total),
            "count": count, "total": total}


def sun_flags(e_above_hull: Sequence[float], unique: Sequence[bool], novel: Sequence[bool],
              threshold: float = METASTABLE) -> list[bool]:
    """Per sample: stable (within ``threshold`` of the hull), unique and novel."""
    return [bool(e <= threshold and u and n) for e, u, n in zip(e_above_hull, unique, novel, strict=True)]


def sun_metrics(e_above_hull: Sequence[float], unique: Sequence[bool], novel: Sequence[bool],
                space_groups: Sequence[int | None], threshold: float = METASTABLE) -> dict[str, object]:
    """Stability fractions, S.U.N. and S.S.U.N. over samples that have an energy (all inputs aligned).

    ``space_groups`` are the groups after relaxation (``None`` where spglib found none: counted as P1).
    """
    above = np.asarray(e_above_hull, dtype=float)
    sun = sun_flags(e_above_hull, unique, novel, threshold)
    return {
        "stable": fraction_with_interval(list(above <= STABLE)),
        "metastable": fraction_with_interval(list(above <= threshold)),
        "unique": fraction_with_interval(unique),
        "novel": fraction_with_interval(novel),
        "sun": fraction_with_interval(sun),
        "ssun": fraction_with_interval([s and (g or 1) > 1 for s, g in zip(sun, space_groups, strict=True)]),
        "threshold_ev_per_atom": threshold,
    }
