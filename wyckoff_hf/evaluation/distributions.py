"""Distribution matching: how far the generated per-crystal counts are from the test set's.

The Wasserstein-1 (earth mover's) distance between the empirical distributions is in the units of the
quantity (e.g. "0.3 atoms"), and 0 exactly when the two distributions are equal. CDVAE reports it for
the number of elements (and density); for Wyckoff-level samples the number of sites and of atoms
(conventional cell) are the natural additions, as they are known without a 3D structure.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import wasserstein_distance

from ..tokenization import WyckoffRepresentation
from .statistics import COUNTED_PROPERTIES


def wasserstein_distances(generated: Sequence[WyckoffRepresentation],
                          reference: Sequence[WyckoffRepresentation]) -> dict[str, float | None]:
    """``wasserstein_<name>`` for each of ``statistics.COUNTED_PROPERTIES`` (#elements, #sites, #atoms).

    ``None`` when either set is empty.
    """
    return {
        f"wasserstein_{name}": (
            float(wasserstein_distance([quantity(r) for r in generated], [quantity(r) for r in reference]))
            if generated and reference else None
        )
        for name, quantity in COUNTED_PROPERTIES.items()
    }
